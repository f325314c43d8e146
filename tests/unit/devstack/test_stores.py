"""The store finder's record of what it started (.run/started), read back as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import stores
from devstack.ports import free_port, port_is_free


@pytest.fixture
def started_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "started"
    monkeypatch.setattr(stores, "STARTED", path)
    return path


def test_what_was_started_is_read_back_and_forgotten_when_nothing_is_left(
    started_file: Path,
) -> None:
    stores.record_started("postgres", pid=10, port=5433, data=Path("/x/postgres"))
    stores.record_started("redis", pid=11, port=6380)

    assert stores.read_started() == {
        "postgres": {"pid": "10", "port": "5433", "data": "/x/postgres"},
        "redis": {"pid": "11", "port": "6380"},
    }
    stores.write_started({})
    assert not started_file.exists()


def test_urls_are_named_without_their_password() -> None:
    assert stores.redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert stores.where("redis://h:6380/0") == "h:6380"
    assert stores.url_path("postgresql://h/mock%20db") == "mock db"


def test_a_preferred_port_is_kept_while_it_is_free() -> None:
    port = free_port()

    assert port_is_free(port)
    assert free_port(preferred=port) == port
