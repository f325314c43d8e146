"""The PostgreSQL connections each process opens at most, the formula the README gives for all of
them, and what a server has left for one more process."""

from __future__ import annotations

from pathlib import Path

from calls.stores import (
    API_LOOKUP_CONNECTIONS,
    SCHEDULER_CONNECTIONS,
    WORKER_CONNECTIONS,
    pools_of,
)
from core.settings import Settings
from db.connections import Headroom

README = Path(__file__).resolve().parents[3] / "README.md"


def test_each_process_opens_its_pools_at_most_and_the_readme_formula_says_so() -> None:
    settings = Settings(_env_file=None)  # DB_POOL_MAX 20
    assert pools_of("api", settings).total == 20 + 12 == settings.db_pool_max + 12
    assert pools_of("worker", settings).total == 8
    assert pools_of("scheduler", settings).total == 4
    small = Settings(_env_file=None, db_pool_max=3)
    assert [pools_of(p, small).total for p in ("api", "worker", "scheduler")] == [15, 3, 3]

    readme = README.read_text()
    formula = (
        f"APIs × (DB_POOL_MAX + {API_LOOKUP_CONNECTIONS}) + workers × min(DB_POOL_MAX,"
        f" {WORKER_CONNECTIONS}) + schedulers × min(DB_POOL_MAX, {SCHEDULER_CONNECTIONS})"
    )
    assert formula in readme
    # Issue 20's layout at the defaults: 2 × 32 + 3 × 8 + 2 × 4.
    assert "2 API processes, 3 workers and 2 schedulers open up to 96" in readme


def test_the_room_left_is_the_servers_less_its_reserve_and_what_is_open() -> None:
    server = Headroom(
        max_connections=100, reserved=3, in_use=60, database_in_use=40, database_limit=None
    )
    assert server.left == 37

    limited = Headroom(
        max_connections=100, reserved=3, in_use=60, database_in_use=40, database_limit=50
    )
    assert limited.left == 10
    assert "this database's CONNECTION LIMIT 50" in limited.describe()

    full = Headroom(
        max_connections=100, reserved=3, in_use=99, database_in_use=0, database_limit=None
    )
    assert full.left == 0
