"""HTTP Range (RFC 9110 §14): chargers on cellular links resume where they dropped."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
        suffix = int(last)
        if suffix == 0:
            raise UnsatisfiableRange()
        start = max(size - suffix, 0)
        return ByteRange(start, size - start)
    start = int(first)
    if start >= size:
        raise UnsatisfiableRange()
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return ByteRange(start, end - start + 1)
