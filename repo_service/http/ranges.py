"""HTTP Range (RFC 9110 §14): chargers on cellular links resume where they dropped."""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 9110 §14.1.1 positions are ASCII DIGITs (RFC 5234); Python's \d also takes other scripts' digits.
_SINGLE_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
# Past every image this repository can hold; positions beyond it are all "past the end".
_BEYOND_ANY_SIZE = 2**63


class UnsatisfiableRange(Exception):
    """The range lies outside the representation: answered with 416."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    length: int

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.start + self.length - 1}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range asked for, or None for the whole representation.

    Multiple ranges are answered with the whole body, which RFC 9110 allows;
    no charger asks for them and multipart/byteranges would only add risk.
    """
    if not header:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = _position(last)
        if suffix == 0:
            raise UnsatisfiableRange()
        start = max(size - suffix, 0)
        return ByteRange(start, size - start)
    start = _position(first)
    if start >= size:
        raise UnsatisfiableRange()
    end = min(_position(last), size - 1) if last else size - 1
    if end < start:
        return None
    return ByteRange(start, end - start + 1)


def _position(digits: str) -> int:
    # A client may send any number of digits (leading zeros included); int()
    # refuses more than 4300 of them, so anything that long is simply too far.
    significant = digits.lstrip("0")
    if len(significant) > len(str(_BEYOND_ANY_SIZE)):
        return _BEYOND_ANY_SIZE
    return int(significant or "0")
