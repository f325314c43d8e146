"""DSNs pointed at another database keep everything else they say."""

from __future__ import annotations

import pytest

from db.pool import with_database


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql://postgres@127.0.0.1:5432/mc_x",
        ),
        ("postgresql://u:p@db/app?sslmode=require", "postgresql://u:p@db/mc_x?sslmode=require"),
        # A socket directory in the query: its slashes are not the database's.
        (
            "postgresql://postgres@/postgres?host=/var/run/postgresql",
            "postgresql://postgres@/mc_x?host=/var/run/postgresql",
        ),
        ("postgresql://postgres@localhost", "postgresql://postgres@localhost/mc_x"),
    ],
)
def test_with_database_replaces_only_the_database(dsn: str, expected: str) -> None:
    assert with_database(dsn, "mc_x") == expected
