"""What went wrong inside a run, as a stable `code` and a human message (never a traceback)."""

from __future__ import annotations

import errno
import re
import sqlite3

import httpx
import openai
import psycopg
from langchain_core.tools import ToolException
from langgraph.errors import GraphRecursionError

from app.engine.limits import RunTooLarge, TokenLimitExceeded


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


STORE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})

# Redis and PostgreSQL's pool not answering, by the client library's class (redis-py is not
# the engine's to import; the pool's errors are not psycopg's).
UNREACHABLE = {
    "psycopg_pool": frozenset({"PoolTimeout", "PoolClosed", "TooManyRequests"}),
    "redis": frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError"}),
}


POSTGRES_ERRORS = (
    psycopg.OperationalError,  # no connection, lost, server shutting down, disk full
    psycopg.InterfaceError,  # a connection already closed
    psycopg.errors.ReadOnlySqlTransaction,  # a standby or a read-only server
)


def store_busy(exc: BaseException) -> bool:
    """The store answers but had no connection free in time (its pool's wait ran out): this
    request fails, the store is not down."""
    return any(
        type(err).__module__.startswith("psycopg_pool")
        and type(err).__name__ in ("PoolTimeout", "TooManyRequests")
        for err in _chain(exc)
    )


def store_error(exc: BaseException) -> str | None:
    """What is wrong with the store, if `exc` (or what caused it) says it cannot be written: any
    SQLite error (disk full, I/O error, read-only, locked past its busy timeout), a PostgreSQL
    server that does not answer or cannot take writes, a Redis server that does not answer, or
    a full, failing or read-only disk. None for anything else."""
    for err in _chain(exc):
        if isinstance(err, (sqlite3.Error, *POSTGRES_ERRORS)):
            return f"the database cannot be written: {_short(err, 200)}"
        if isinstance(err, OSError) and err.errno in STORE_ERRNOS:
            return f"the database cannot be written: {_short(err, 200)}"
        library = type(err).__module__.split(".")[0]
        if type(err).__name__ in UNREACHABLE.get(library, ()):
            what = "Redis" if library == "redis" else "the database"
            return f"{what} cannot be reached: {_short(err, 200)}"
    return None


def classify(exc: BaseException) -> tuple[str, str]:
    """(code, message) for an exception that ended a run."""
    problem = store_error(exc)
    if problem is not None:
        return "store_unavailable", problem
    for err in _chain(exc):
        if isinstance(err, TokenLimitExceeded):
            return "token_limit", str(err)
        if isinstance(err, RunTooLarge):
            return "run_too_large", str(err)
        if isinstance(err, TimeoutError):
            return "timeout", "the run took longer than its timeout"
        if isinstance(err, GraphRecursionError):
            return "recursion_limit", "the graph took more steps than its recursion limit"
        if isinstance(err, openai.APIStatusError):
            if err.status_code in (401, 403):
                return "upstream_auth", f"the model server refused the key ({err.status_code})"
            if err.status_code == 429:
                return "upstream_rate_limited", "the model server is rate limiting (429)"
            return "upstream_error", f"the model server answered {err.status_code}"
        if isinstance(err, openai.APIError) and not isinstance(err, openai.APIConnectionError):
            return "upstream_error", f"the model server sent an error: {_short(err, 200)}"
        if isinstance(err, openai.APITimeoutError):
            return "upstream_unavailable", "the model server sent nothing for too long"
        if isinstance(err, (openai.APIConnectionError, httpx.TransportError)):
            return "upstream_unavailable", "the model server could not be reached"
        if isinstance(err, ToolException):
            return "tool_error", f"a tool failed: {_short(err)}"
    node = _node(exc)
    where = f"node {node!r}" if node else "the graph"
    return "node_error", f"{where} failed: {type(exc).__name__}: {_short(exc)}"


def _node(exc: BaseException) -> str | None:
    for note in getattr(exc, "__notes__", ()):
        if note.startswith("During task with name '"):
            return str(note.split("'")[1])
    return None


# What a message to a client must not carry (the log keeps the whole text, with the run id).
_SECRETS = (
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+"), "<url>"),
    (re.compile(r"(?<![\w/.:])(?:~|\.{1,2})?/(?:[\w.@+-]+/)+[\w.@+-]*"), "<path>"),
    (re.compile(r"\b[A-Za-z]:\\[^\s'\"]+"), "<path>"),
    (re.compile(r"(?i)\bbearer\s+[^\s'\"]+"), "Bearer <key>"),
    (re.compile(r"\b(?:sk|pk|rk|key)-[A-Za-z0-9_-]{6,}"), "<key>"),
    (re.compile(r"(?i)\b(api[_-]?key|token|secret|password)=[^\s&'\"]+"), r"\1=<redacted>"),
)


def scrub(text: str) -> str:
    """`text` without URLs, file paths or keys."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _short(exc: BaseException, limit: int = 300) -> str:
    text = scrub(" ".join(str(exc).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"
