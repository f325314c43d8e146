"""The bare ceiling of the benchmark: an aiohttp app doing the platform's store round trips and
nothing else, so each figure can be read as a share of what this machine allows.

    .venv/bin/python -m bench.bare        # DATABASE_URL, REDIS_URL, BARE_PORT

POST (any path) reads the body, does one Redis INCR and one PostgreSQL INSERT, and answers 201.
GET /calls/{id} does one Redis HGETALL of `bare:call:<id>` and answers its fields as JSON. The
same uvloop, aiohttp, pool sizes and Redis client (core/redis_mux.py) as the API; no auth,
validation, logging or middleware.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import asyncpg
import orjson
import uvloop
from aiohttp import web

from core.redis_mux import MultiplexedRedis
from core.settings import Settings

TABLE = "bench_bare_inserts"
# Made in the benchmark's database beside the platform's tables (bench/system.py).
CREATE_TABLE = (
    f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, n bigint, body text,"
    " created_at timestamptz DEFAULT now())"
)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", MultiplexedRedis)


async def post(request: web.Request) -> web.Response:
    body = await request.read()
    n = await request.app[REDIS].incr("bare:counter")
    await request.app[POOL].execute(
        f"INSERT INTO {TABLE} (n, body) VALUES ($1, $2)", n, body.decode()
    )
    return web.Response(body=orjson.dumps({"n": n}), status=201, content_type="application/json")


async def get(request: web.Request) -> web.Response:
    # The reply comes raw: field, value, field, value, ...
    flat = await request.app[REDIS].hgetall("bare:call:" + request.match_info["call_id"])
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    if not fields:
        return web.Response(
            status=404, body=b'{"error":"Not Found"}', content_type="application/json"
        )
    body = orjson.dumps({k.decode(): v.decode() for k, v in fields.items()})
    return web.Response(body=body, content_type="application/json")


async def stores(app: web.Application) -> AsyncIterator[None]:
    settings = Settings()  # the same pool sizes as the API's, from the same environment
    app[POOL] = await asyncpg.create_pool(
        os.environ["DATABASE_URL"],
        min_size=min(settings.db_pool_min, settings.db_pool_max),
        max_size=settings.db_pool_max,
    )
    app[REDIS] = MultiplexedRedis.from_url(os.environ["REDIS_URL"])
    yield
    await app[REDIS].aclose()
    await app[POOL].close()


def main() -> int:
    app = web.Application()
    app.cleanup_ctx.append(stores)
    app.router.add_get("/calls/{call_id}", get)
    app.router.add_post("/{tail:.*}", post)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(os.environ["BARE_PORT"]),
        loop=uvloop.new_event_loop(),
        access_log=None,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
