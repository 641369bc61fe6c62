"""Firmware version strings as chargers' vendors write them, in one total order.

Accepted, case-insensitively: an optional prefix of 1-3 letters (``V1.2.3``,
``R4.10``, ``FW2.1``), a release of dot-separated non-negative integers, an
optional pre-release after ``-`` or starting directly with letters
(``1.2.3-rc1``, ``1.2.3rc1``), and optional build metadata after ``+``.

The order follows SemVer 2.0.0 precedence with these deliberate departures:

* The prefix is a vendor's habit, not part of the version: ``V1.2.3 == 1.2.3``.
* Releases may have any number of parts; trailing zeros do not count, so
  ``1.2 == 1.2.0``, and numbers are compared as numbers, so ``1.02 == 1.2``.
* An identifier that is letters followed by digits compares as the pair, so
  ``rc2 < rc10`` where SemVer's plain text comparison says otherwise.
* Letters compare case-insensitively; vendors are not consistent about case.
* SemVer ignores build metadata, but a repository must tell two builds apart,
  so it breaks ties last: ``2.0.0 < 2.0.0+build5 < 2.0.0+build6 < 2.0.1-rc1``.
  Its identifiers compare like pre-release ones.

``Version.canonical`` spells a version one way (no prefix, lower case, at least
three release parts, no redundant zeros, ``-`` before a pre-release), so equal
versions have equal canonical spellings and vice versa. A version whose
canonical spelling would exceed the length limit is rejected, so that every
accepted version's canonical spelling can itself be parsed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import NoReturn, TypeAlias

from repo_service.errors import InvalidInput

MAX_LENGTH = 64
MAX_PREFIX_LETTERS = 3
# Three parts make the canonical spelling look like SemVer, which most tools
# and people expect.
CANONICAL_RELEASE_PARTS = 3

# Kind tags put numeric identifiers before alphanumeric ones (SemVer §11.4.3)
# and keep an int from ever being compared with a str.
NUMERIC = 0
ALPHANUMERIC = 1

IdentifierKey: TypeAlias = tuple[int, int] | tuple[int, str] | tuple[int, str, int]
PreReleaseKey: TypeAlias = tuple[int, tuple[IdentifierKey, ...]]
VersionKey: TypeAlias = tuple[tuple[int, ...], PreReleaseKey, tuple[IdentifierKey, ...]]

# A pre-release sorts before its release, so "has a pre-release" gets the
# smaller tag.
WITH_PRE_RELEASE = 0
WITHOUT_PRE_RELEASE = 1

IDENTIFIER_CHARACTERS = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"
)
LETTERS_THEN_DIGITS = re.compile(r"([a-z]+)([0-9]+)")


@dataclasses.dataclass(frozen=True, order=False, eq=False)
class Version:
    """A parsed firmware version; make one with ``parse_version``.

    Comparison and hashing use ``key`` alone, so spellings of the same version
    (``V1.2`` and ``1.2.0``) are equal while ``text`` keeps what was written.
    """

    text: str
    key: VersionKey = dataclasses.field(repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key < other.key

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key <= other.key

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key > other.key

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key >= other.key

    @property
    def canonical(self) -> str:
        return _canonical_spelling(self.key)


def parse_version(text: str, field: str = "version") -> Version:
    """Parse a vendor's version string, or raise ``InvalidInput`` naming ``field``."""
    # Values arrive from JSON and forms, where a number or null is easy to send.
    if not isinstance(text, str):
        raise InvalidInput(field, "must be a string")
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(field, "must not be empty")
    if len(stripped) > MAX_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_LENGTH} characters")

    def fail(reason: str) -> NoReturn:
        raise InvalidInput(field, f"{stripped!r} is not a version: {reason}")

    _check_characters(stripped, fail)
    key = _parse_key(stripped, fail)
    canonical = _canonical_spelling(key)
    # Padding the release and adding "-" can lengthen a spelling; refusing
    # here keeps parse_version(v.canonical) == v true for every version.
    if len(canonical) > MAX_LENGTH:
        raise InvalidInput(
            field,
            f"must be at most {MAX_LENGTH} characters once normalized to {canonical!r}",
        )
    return Version(text=stripped, key=key)


def _check_characters(text: str, fail: Callable[[str], NoReturn]) -> None:
    for position, character in enumerate(text):
        if character == " ":
            fail(f"contains a space at position {position}")
        # isprintable() alone would let through letters from other scripts,
        # which would make isdigit() and isalpha() below accept them too.
        if not (character.isascii() and character.isprintable()):
            fail(f"{character!r} at position {position} is not printable ASCII")


def _run_end(text: str, start: int, belongs: Callable[[str], bool]) -> int:
    end = start
    while end < len(text) and belongs(text[end]):
        end += 1
    return end


def _parse_key(text: str, fail: Callable[[str], NoReturn]) -> VersionKey:
    prefix_end = _run_end(text, 0, str.isalpha)
    prefix = text[:prefix_end]
    if len(prefix) > MAX_PREFIX_LETTERS:
        fail(f"a prefix has at most {MAX_PREFIX_LETTERS} letters, found {prefix!r}")
    if prefix_end == len(text):
        fail(f"no release number after the prefix {prefix!r}")
    if not text[prefix_end].isdigit():
        fail(
            f"expected a release number such as 1.2.3 at position {prefix_end}, "
            f"found {text[prefix_end]!r}"
        )

    release, position = _parse_release(text, prefix_end, fail)

    pre_release: tuple[IdentifierKey, ...] | None = None
    if position < len(text) and (text[position] == "-" or text[position].isalpha()):
        # "1.2.3rc1" has no "-"; the pre-release then starts at the letter.
        start = position + 1 if text[position] == "-" else position
        end = text.find("+", start)
        end = len(text) if end < 0 else end
        if start == end:
            fail("empty pre-release after '-'")
        pre_release = _parse_identifiers(text[start:end], "pre-release", fail)
        position = end

    build: tuple[IdentifierKey, ...] = ()
    if position < len(text) and text[position] == "+":
        if position + 1 == len(text):
            fail("empty build metadata after '+'")
        build = _parse_identifiers(text[position + 1 :], "build metadata", fail)
        position = len(text)

    if position < len(text):
        fail(f"unexpected {text[position]!r} at position {position}")

    if pre_release is None:
        pre_release_key: PreReleaseKey = (WITHOUT_PRE_RELEASE, ())
    else:
        pre_release_key = (WITH_PRE_RELEASE, pre_release)
    return (release, pre_release_key, build)


def _parse_release(
    text: str, start: int, fail: Callable[[str], NoReturn]
) -> tuple[tuple[int, ...], int]:
    numbers: list[int] = []
    position = start
    while True:
        end = _run_end(text, position, str.isdigit)
        numbers.append(int(text[position:end]))
        position = end
        if position == len(text) or text[position] != ".":
            break
        following = position + 1
        if following == len(text):
            fail("ends with a dot")
        if text[following] == ".":
            fail("empty number between dots")
        if not text[following].isdigit():
            fail(
                f"expected a number after the dot at position {position}, "
                f"found {text[following]!r}"
            )
        position = following
    # Trailing zeros are dropped so that 1.2 and 1.2.0 have one key.
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers), position


def _parse_identifiers(
    text: str, part: str, fail: Callable[[str], NoReturn]
) -> tuple[IdentifierKey, ...]:
    keys: list[IdentifierKey] = []
    for identifier in text.split("."):
        if not identifier:
            fail(f"empty identifier in the {part} {text!r}")
        for character in identifier:
            if character not in IDENTIFIER_CHARACTERS:
                fail(
                    f"the {part} may contain only letters, digits, '-' and '.', "
                    f"found {character!r}"
                )
        keys.append(_identifier_key(identifier))
    return tuple(keys)


def _identifier_key(identifier: str) -> IdentifierKey:
    if identifier.isdigit():
        return (NUMERIC, int(identifier))
    lowered = identifier.lower()
    letters_then_digits = LETTERS_THEN_DIGITS.fullmatch(lowered)
    if letters_then_digits:
        # ("rc", 10) after ("rc", 2); and ("rc",) before both, as SemVer
        # puts "rc" before "rc2", because a shorter tuple sorts first.
        return (ALPHANUMERIC, letters_then_digits[1], int(letters_then_digits[2]))
    return (ALPHANUMERIC, lowered)


def _identifier_spelling(key: IdentifierKey) -> str:
    return "".join(str(part) for part in key[1:])


def _canonical_spelling(key: VersionKey) -> str:
    release, (pre_release_tag, pre_release), build = key
    numbers = list(release)
    numbers.extend([0] * (CANONICAL_RELEASE_PARTS - len(numbers)))
    spelling = ".".join(str(number) for number in numbers)
    if pre_release_tag == WITH_PRE_RELEASE:
        spelling += "-" + ".".join(_identifier_spelling(part) for part in pre_release)
    if build:
        spelling += "+" + ".".join(_identifier_spelling(part) for part in build)
    return spelling
