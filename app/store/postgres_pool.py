"""The psycopg connection pool that LangGraph's `AsyncPostgresSaver` and `PostgresRunStore`
share (`DATABASE_URL=postgresql://...`): every call borrows a connection for its statements and
gives it back.

Design record: a call may fail while the server is away, but nothing waits without bound, and
once the server answers again the next calls work without a restart of the service.
- Connections are as the saver needs them: autocommit, `prepare_threshold=0`, `dict_row` (the
  store opens its own transactions and cursors).
- `check`: a borrowed connection is tried first (an empty query). One the server dropped while
  idle (an idle timeout, a proxy, `pg_terminate_backend`, a restart) is discarded and another
  handed out. After a failed check the pool also checks all its idle connections at once
  (`_check_all`): psycopg retries a borrow with a back-off (1 s, 2 s, 4 s...) per dead
  connection, so a full pool of them after a restart would outlast `POOL_TIMEOUT_S`.
- `POOL_TIMEOUT_S`: how long a call waits for a connection (the server is down, or all are
  busy) before it fails; the persister retries its pass, a request answers an error.
- `RECONNECT_TIMEOUT_S` bounds each background reconnect: the pool tries with a back-off for that
  long, then gives up that attempt; the next call that finds no connection starts a new one. No
  loop retries forever, and the back-off between attempts never grows past a few seconds.
- `connect_timeout`, TCP keepalives and `tcp_user_timeout` (unless the URL sets them): a server
  that vanishes without closing its sockets fails a connect or a query in seconds, not after the
  kernel's retransmission timeout of many minutes.
- Sizes: `min_size` 2 (the saver and a store call without waiting for a connect), `max_size`
  `DATABASE_POOL_SIZE` per process. The saver takes one connection at a time (it serializes its
  calls on its own lock); the rest serve the persister and requests. Idle connections above
  `min_size` close after psycopg's `max_idle` (10 min); every connection is replaced after its
  `max_lifetime` (1 h), so a failover's new primary gets all of them in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("app.store.postgres")

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]

MIN_SIZE = 2
POOL_TIMEOUT_S = 5.0
RECONNECT_TIMEOUT_S = 10.0
OPEN_TIMEOUT_S = 10.0  # startup: the first connections, or the service does not start
LOCK_TIMEOUT_S = 300.0  # startup: another worker's migration, or the service does not start
LOCK_POLL_S = 0.05
# libpq options set unless the URL has its own.
DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",  # ms: data unacknowledged this long fails the connection
    "application_name": "langgraph-stream",
}


def conninfo(url: str) -> str:
    """The URL's connection string with `DEFAULTS` for what it leaves unset."""
    given = conninfo_to_dict(url)
    return make_conninfo(url, **{k: v for k, v in DEFAULTS.items() if k not in given})


@asynccontextmanager
async def open_pool(url: str, max_size: int) -> AsyncIterator[Pool]:
    """An open pool on `url` with its first connections made (else it raises
    `psycopg_pool.PoolTimeout` within `OPEN_TIMEOUT_S`); closed on the way out."""
    checks = _Checks()
    pool: Pool = AsyncConnectionPool(
        conninfo(url),
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        min_size=min(MIN_SIZE, max_size),
        max_size=max_size,
        open=False,
        check=checks.check,
        timeout=POOL_TIMEOUT_S,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        name="langgraph-stream",
    )
    checks.pool = pool
    try:
        await pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
        yield pool
    finally:
        await checks.stop()
        await pool.close()


class _Checks:
    """The pool's `check`, and the sweep of idle connections a failed check starts."""

    def __init__(self) -> None:
        self.pool: Pool | None = None
        self._sweep: asyncio.Task[None] | None = None

    async def check(self, conn: AsyncConnection[DictRow]) -> None:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None and (self._sweep is None or self._sweep.done()):
                self._sweep = asyncio.create_task(self._check_all(self.pool))
            raise

    @staticmethod
    async def _check_all(pool: Pool) -> None:
        try:
            await pool.check()
        except Exception as exc:  # the pool is closing, say: the next failed check retries
            log.warning("checking the pool's connections failed: %s", exc)

    async def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            await asyncio.wait({self._sweep})


@asynccontextmanager
async def advisory_lock(pool: Pool, key: int) -> AsyncIterator[None]:
    """Hold PostgreSQL's session advisory lock `key` (every worker on the database waits for
    it): startup steps that must run once even when several workers start together.

    Taken by polling `pg_try_advisory_lock`, not by blocking in `pg_advisory_lock`: a waiter
    blocked in a statement keeps a snapshot open, and `CREATE INDEX CONCURRENTLY` (the saver's
    setup, run under this lock) waits for every open snapshot to end, so the holder would wait
    for its waiters for ever."""
    async with pool.connection() as conn:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while not await _try_lock(conn, key):
            if time.monotonic() > deadline:
                raise TimeoutError(f"advisory lock {key} still held after {LOCK_TIMEOUT_S}s")
            await asyncio.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


async def _try_lock(conn: AsyncConnection[DictRow], key: int) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (key,))
    row = await cur.fetchone()
    return bool(row and row["locked"])
