"""The `fwrepo` command, a package by job.

- ``runtime``: the server runtime (serve, ftps, db upgrade);
- ``admin``: local administration on the data directory (clients, keys, signers, storage, audit, verify);
- ``remote``: commands on a running fwrepo, through repo_service.client (upload, list, publish, yank, campaigns);
- ``terminal``: what is printed for a person (tables, progress bars, human values);
- ``arguments``: the grammar they share (settings as flags, unknown options named).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sqlalchemy.exc import OperationalError

from repo_service import __version__, client
from repo_service.cli import admin, remote, runtime
from repo_service.cli.arguments import Parser
from repo_service.errors import FwrepoError, SettingsError


def build_parser() -> Parser:
    parser = Parser(prog="fwrepo", description="Secure firmware repository for EV charging networks.")
    parser.add_argument("--version", action="version", version=f"fwrepo {__version__}")
    commands = parser.add_commands(dest="command", required=True, metavar="COMMAND")
    runtime.register(commands)
    admin.register(commands)
    remote.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.handler(arguments) or 0
    except SettingsError as error:
        print(f"fwrepo: bad setting {error}", file=sys.stderr)
        return 2
    except (FwrepoError, client.FwrepoError) as error:  # the command's own refusal, or the server's
        print(f"fwrepo: {error}", file=sys.stderr)
        return 1
    except OperationalError as error:
        # An unreachable or refusing database is the operator's to fix: one line, not a traceback.
        cause = str(error.orig or error).strip().splitlines()[0]
        print(f"fwrepo: cannot use the database (FWREPO_DATABASE_URL): {cause}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
