"""The command line's grammar: a parser that names unknown options, and settings as flags, each command its own."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from repo_service.errors import FwrepoError
from repo_service.settings import BOOLEAN, BY_FIELD, SETTINGS, Settings, load_settings

# The settings each kind of local command uses; every other setting still comes from its FWREPO_* variable.
DATABASE = ("data_dir", "database_url")
SIGNING_KEYS = (*DATABASE, "env", "keys_dir", "key_passphrase", "signing_algorithm", "audit_key")
STORAGE = (*DATABASE, "keys_dir", "key_passphrase", "storage", "storage_dir", *(
    setting.field for setting in SETTINGS if setting.field.startswith("s3_")))
EVERY_SETTING = tuple(setting.field for setting in SETTINGS)
_SETTING_DEST = "setting_"
# What argparse itself takes for a negative number or a value with spaces rather than for an option.
_NOT_AN_OPTION = re.compile(r"^-\d+$|^-\d*\.\d+$|.*\s")


class Parser(argparse.ArgumentParser):
    """argparse, except that an unknown option is named (with the closest known one) before anything else.

    Plain argparse checks required options first, so `--vendr ACME` was reported
    as "--vendor is required", which hides the typo that caused it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, Parser] = {}

    def add_commands(self, **kwargs: Any) -> Any:
        action = self.add_subparsers(**kwargs)
        self.commands = action.choices
        return action

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        arguments = list(args) if args is not None else sys.argv[1:]
        self._refuse_unknown_options(arguments)
        return super().parse_args(arguments, namespace)

    def _refuse_unknown_options(self, arguments: list[str]) -> None:
        parser: Parser = self
        for token in arguments:
            if token == "--":
                return
            if parser.commands:
                if token in parser.commands:
                    parser = parser.commands[token]
                continue
            # A leaf command: everything after it is its own, so an option it does not know is a mistake.
            if token.startswith("-") and token != "-" and not _NOT_AN_OPTION.match(token):
                parser._check_option(token.split("=", 1)[0])

    def _check_option(self, option: str) -> None:
        known = list(self._option_string_actions)  # every option string of this parser, its groups included
        if option in known or (self.allow_abbrev and sum(name.startswith(option) for name in known) == 1):
            return
        closest = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
        self.error(f"unknown option {option}" + (f"; did you mean {closest[0]}?" if closest else ""))


def add_settings(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    """The settings a command uses, as flags: each with its help, variable and real default."""
    group = parser.add_argument_group("settings (each also read from its FWREPO_* variable; see docs/settings.md)")
    for field in fields:
        setting = BY_FIELD[field]
        text = f"{setting.help} [{setting.env}; default {setting.default_text}]".replace("%", "%%")
        if setting.kind is BOOLEAN:
            group.add_argument(setting.flag, dest=_SETTING_DEST + field, action=argparse.BooleanOptionalAction,
                               default=None, help=text)
        else:
            group.add_argument(setting.flag, dest=_SETTING_DEST + field, metavar=field.upper(), help=text)


def settings_from(arguments: argparse.Namespace) -> Settings:
    """The settings: the command's flags over the FWREPO_* environment."""
    flags = {
        name[len(_SETTING_DEST):]: value
        for name, value in vars(arguments).items()
        if name.startswith(_SETTING_DEST) and value is not None
    }
    return load_settings(flags=flags)


def read(path: Path) -> bytes:
    """A file named on the command line, or one line saying why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise FwrepoError(f"{path}: {error.strerror}") from None
