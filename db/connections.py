"""What PostgreSQL has left for a process's connections, checked as the process starts."""

from __future__ import annotations

from dataclasses import dataclass

from db.pool import connect


@dataclass(frozen=True, slots=True)
class Headroom:
    """The server's connections as one process found them at its start (its own probe left
    out)."""

    max_connections: int
    # Kept for superusers (superuser_reserved_connections, and reserved_connections from
    # PostgreSQL 16): an ordinary role never gets them.
    reserved: int
    # Client connections open, on the whole server and on this database.
    in_use: int
    database_in_use: int
    # The database's own CONNECTION LIMIT; None when it has none.
    database_limit: int | None

    @property
    def left(self) -> int:
        """How many more connections the server would take from this process."""
        left = self.max_connections - self.reserved - self.in_use
        if self.database_limit is not None:
            left = min(left, self.database_limit - self.database_in_use)
        return max(0, left)

    def describe(self) -> str:
        text = (
            f"max_connections {self.max_connections}, {self.reserved} reserved for superusers,"
            f" {self.in_use} open"
        )
        if self.database_limit is not None:
            text += f"; this database's CONNECTION LIMIT {self.database_limit}"
            text += f", {self.database_in_use} open on it"
        return text


async def fetch_headroom(dsn: str) -> Headroom:
    """Ask the server, on a connection of its own that is closed again."""
    conn = await connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT current_setting('max_connections')::int AS max_connections,
                   current_setting('superuser_reserved_connections')::int
                     + coalesce(current_setting('reserved_connections', true)::int, 0)
                     AS reserved,
                   (SELECT count(*) FROM pg_stat_activity
                     WHERE backend_type = 'client backend') - 1 AS in_use,
                   (SELECT count(*) FROM pg_stat_activity
                     WHERE backend_type = 'client backend'
                       AND datname = current_database()) - 1 AS database_in_use,
                   (SELECT nullif(datconnlimit, -1) FROM pg_database
                     WHERE datname = current_database()) AS database_limit
            """
        )
    finally:
        await conn.close()
    return Headroom(**dict(row))
