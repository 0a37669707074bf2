"""Several live workers as one service: `n` uvicorn processes (tests/support/live.py) on one
fresh PostgreSQL schema and one fresh Redis key prefix, each talking to the fake model.

The first worker starts alone (it creates the schema; the others would wait on its migration
lock anyway), then the rest together. `WORKER_HEARTBEAT_S` is 0.5 s, so a killed worker is
judged lost within seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import _fake_upstream
from tests.support import postgres
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import SSE, LiveServer, read_sse
from tests.support.redis import REDIS_URL, key_prefix


class Workers:
    def __init__(self, servers: list[LiveServer], database_url: str) -> None:
        self.servers = servers
        self.database_url = database_url  # their schema (a test may read the tables)

    def client(self, i: int) -> httpx.Client:
        return httpx.Client(base_url=self.servers[i].url, timeout=30)


def worker_env(fake: FakeOpenAI, url: str, prefix: str, **extra: str) -> dict[str, str]:
    settings = {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, "WORKER_HEARTBEAT_S": "0.5"}
    return _fake_upstream(fake, DATABASE_URL=url, **{**settings, **extra})


@contextmanager
def several_workers(fake: FakeOpenAI, tmp: Path, n: int, **extra: str) -> Iterator[Workers]:
    """`n` ready workers (settings `extra` on top); all stopped, the schema and keys gone,
    afterwards."""
    with postgres.schema() as url, key_prefix() as (_, prefix):
        servers = [LiveServer(tmp, worker_env(fake, url, prefix, **extra)) for _ in range(n)]
        try:
            servers[0].start(wait=False).wait_ready(60)
            for server in servers[1:]:
                server.start(wait=False)
            for server in servers[1:]:
                server.wait_ready(60)
            yield Workers(servers, url)
        finally:
            for server in servers:
                server.stop()


def stream_of(client: httpx.Client, run_id: str, last: int | None = None) -> list[SSE]:
    """`GET /runs/{id}/stream` read to its end, from `last` (`Last-Event-ID`) if given."""
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    with client.stream("GET", f"/runs/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200, response.read()
        return read_sse(response)
