"""Values as a person reads them, the same on the command line and in the console: times in UTC to the second,
sizes in binary units, durations, shares."""

from __future__ import annotations

from datetime import UTC, datetime


def moment(value: datetime | str | None) -> str:
    """A time in UTC to the second: 2026-12-02 05:46:01 UTC."""
    if value is None:
        return "-"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def size(count: int) -> str:
    """Bytes in the largest binary unit that keeps a number of at least 1: 1.5 MiB."""
    amount, unit = float(count), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, larger
    return f"{count} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"


def duration(seconds: float | None) -> str:
    """Seconds as a person says them: 0.4 s, 12 s, 3 min 5 s, 2 h 10 min; "-" for none."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def percent(fraction: float | None, digits: int = 0) -> str:
    return "-" if fraction is None else f"{fraction:.{digits}%}"
