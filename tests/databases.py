"""Which databases a test runs on.

Every test that takes the ``database_url`` fixture runs on SQLite and on PostgreSQL. One
whose behaviour does not depend on the database (a bot's flow whose rules, queries and
races have their own tests on both) runs on SQLite only: ``@sqlite_only``. What reads or
writes rows the two databases treat differently, and every race, restart and outage, runs
on both.
"""

from __future__ import annotations

import pytest

__all__ = ["sqlite_only"]

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
