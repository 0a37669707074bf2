"""What `GET /runs/{id}` reports about a run, kept after the run ends (for the retention), and
what is kept of a thread created as an object of its own (`POST /threads`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from app.engine.tenancy import DEFAULT_TENANT


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FAILED = "failed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class RunRecord:
    run_id: str
    graph: str
    thread_id: str
    status: RunStatus = RunStatus.RUNNING
    created_at: str = field(default_factory=_now)
    ended_at: str | None = None
    elapsed_ms: float | None = None
    first_token_ms: float | None = None
    reason: str | None = None
    error: dict[str, str] | None = None
    usage: dict[str, int] = field(default_factory=dict)
    events: int = 0
    owner: str | None = None  # the worker running it (recovery: a run whose owner is gone)
    tenant: str = DEFAULT_TENANT  # whose run it is; never shown (a client knows its own)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def since_start_ms(self) -> float:
        return round((time.monotonic() - self._t0) * 1000, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "graph": self.graph,
            "thread_id": self.thread_id,
            "status": self.status.value,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "elapsed_ms": self.elapsed_ms if self.ended_at else self.since_start_ms(),
            "first_token_ms": self.first_token_ms,
            "reason": self.reason,
            "error": self.error,
            "usage": self.usage,
            "events": self.events,
        }

    def stored(self) -> dict[str, Any]:
        """What a store keeps: the public record, the worker that owns the run, its tenant."""
        return {**self.as_dict(), "owner": self.owner, "tenant": self.tenant}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """A record read back from the store (the inverse of `stored`; a record stored before
        tenants existed is the default tenant's)."""
        fields = {k: v for k, v in data.items() if k in _STORED}
        return cls(**{**fields, "status": RunStatus(data["status"])})

    def interrupted(self, code: str, message: str) -> None:
        """The process died under this run: it failed, and nobody knows how long it ran."""
        self.status = RunStatus.FAILED
        self.reason = code
        self.error = {"code": code, "message": message}
        self.ended_at = _now()
        self.elapsed_ms = None

    def finish(self, status: RunStatus, reason: str, usage: dict[str, int]) -> None:
        self.status = status
        self.reason = reason
        self.usage = usage
        self.ended_at = _now()
        self.elapsed_ms = self.since_start_ms()


@dataclass
class ThreadRecord:
    """A thread created through an API that has threads as objects (LangGraph's): who owns it,
    when, and its metadata. A thread that only ever had runs has none."""

    thread_id: str
    tenant: str = DEFAULT_TENANT
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    metadata: dict[str, Any] = field(default_factory=dict)


_STORED = frozenset(
    (
        "run_id",
        "graph",
        "thread_id",
        "created_at",
        "ended_at",
        "elapsed_ms",
        "first_token_ms",
        "reason",
        "error",
        "usage",
        "events",
        "owner",
        "tenant",
    )
)
