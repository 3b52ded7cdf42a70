"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["BigId", "JSONType", "Snowflake", "UTCDateTime", "utcnow"]

#: JSON that is JSONB on PostgreSQL (indexable, compact) and JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: Discord ids are 64-bit "snowflakes".
Snowflake = BigInteger

#: Surrogate keys of tables that grow without bound (rating events). SQLite only
#: autoincrements a column declared exactly INTEGER (which is 64-bit there).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    SQLite stores datetimes as naive text; without this, values read back would
    be naive on SQLite and aware on PostgreSQL, and comparing them would raise.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; dreamrate stores aware UTC datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
