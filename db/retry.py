"""Retrying a unit of work when the database dropped its connection mid-way.

``pool_pre_ping`` replaces connections that died while idle; a connection killed during a
statement (a PostgreSQL restart, ``pg_terminate_backend``, a failover) raises instead, and
its transaction was rolled back, so running the unit of work again is safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

__all__ = ["retry_on_disconnect"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


async def retry_on_disconnect(
    step: Callable[[], Awaitable[T]], *, attempts: int = 4, delay: float = 0.25
) -> T:
    """``await step()``, again (with a growing pause) while the connection was lost."""
    for attempt in range(1, attempts + 1):
        try:
            return await step()
        except DBAPIError as exc:
            if not exc.connection_invalidated or attempt == attempts:
                raise
            logger.warning("database connection lost; retrying (%d/%d)", attempt, attempts - 1)
            await asyncio.sleep(delay * attempt)
    raise AssertionError("unreachable")
