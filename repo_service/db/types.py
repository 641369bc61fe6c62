"""Column types shared by the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, cast, extract, func
from sqlalchemy.types import DateTime, TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on SQLite (which drops zones) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def epoch_microseconds(column: Any, dialect: str) -> ColumnElement[int]:
    """A UtcDateTime column's instant as integer microseconds since 1970, computed by the database.

    For reads of many rows: the driver hands over plain integers instead of a datetime made (and, on SQLite,
    parsed from text) per value. Exact, so a difference of two divided by 10**6 is what
    timedelta.total_seconds() gives for the same two datetimes.
    """
    if dialect == "sqlite":
        # SQLAlchemy stores it as UTC text, "YYYY-MM-DD HH:MM:SS.ffffff" with all six digits.
        return cast(func.strftime("%s", column), Integer) * 1_000_000 + cast(func.substr(column, 21, 6), Integer)
    return cast(extract("epoch", column) * 1_000_000, BigInteger)
