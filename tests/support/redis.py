"""The machine's Redis server, for the tests of what the service keeps in Redis.

The tests use it for real and fail (never skip) when it does not answer; each test's keys
live under a prefix of its own, deleted afterwards, so runs of the suite never meet."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START = "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no"


def client() -> redis.Redis:
    """A client of the test Redis; raises, naming the URL and how to start one, if it is down."""
    conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        conn.ping()
    except redis.RedisError as exc:
        conn.close()
        raise RuntimeError(
            f"these tests need the Redis server at {REDIS_URL} ({exc}); start it: {START}"
        ) from exc
    return conn


@contextmanager
def key_prefix() -> Iterator[tuple[redis.Redis, str]]:
    """A fresh key prefix (REDIS_KEY_PREFIX) and a client; the prefix's keys go afterwards."""
    conn = client()
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        yield conn, prefix
    finally:
        for key in conn.scan_iter(f"{prefix}*"):
            conn.delete(key)
        conn.close()
