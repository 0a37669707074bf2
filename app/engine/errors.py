"""The engine's errors: each has a stable `code` and a message for people, and nothing else.

    EngineError                  internal_error
    ├── NotFound                 graph_not_found / run_not_found / thread_not_found
    ├── InvalidInput             invalid_input (the message names the field),
    │                            invalid_idempotency_key
    ├── LimitTooHigh             limit_too_high
    ├── Unsupported              unsupported_action
    ├── Conflict                 thread_busy / thread_graph_mismatch / thread_not_paused /
    │                            idempotency_mismatch
    ├── TooManyRuns              too_many_runs (`retry_after_s`)
    ├── ShuttingDown             shutting_down (`retry_after_s`)
    ├── StoreUnavailable         store_unavailable (`retry_after_s`)
    └── NotOpen                  engine_not_open (a run started before the engine was entered)

No HTTP here: each protocol maps codes to its own statuses and bodies
(app/protocols/native/errors.py for ours). The codes are the public contract (API.md).
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: an error with a stable machine-readable code."""

    code = "internal_error"
    retry_after_s: float | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(EngineError):
    """No such graph, run or thread (or it belongs to someone else)."""

    code = "not_found"


class InvalidInput(EngineError):
    """The request is well-formed but not the right shape; the message names the field."""

    code = "invalid_input"


class LimitTooHigh(EngineError):
    """A per-run limit asks for more than the server allows."""

    code = "limit_too_high"


class Unsupported(EngineError):
    """The action cannot be done with this configuration (rollback without a rewinder)."""

    code = "unsupported_action"


class Conflict(EngineError):
    """The thread's state forbids this run: one is in progress on it (`thread_busy`), it belongs
    to another graph (`thread_graph_mismatch`), or `resume` was sent to a thread that is not
    paused (`thread_not_paused`); or an idempotency key was used for another request
    (`idempotency_mismatch`)."""

    code = "thread_busy"


class TooManyRuns(EngineError):
    """MAX_CONCURRENT_RUNS runs are in progress; retry later."""

    code = "too_many_runs"
    retry_after_s = 1.0


class ShuttingDown(EngineError):
    """The server is shutting down and takes no new runs; retry on another instance."""

    code = "shutting_down"
    retry_after_s = 5.0


class StoreUnavailable(EngineError):
    """The run store cannot take writes (disk full, I/O error, read-only): no new run starts
    until a write succeeds again."""

    code = "store_unavailable"
    retry_after_s = 5.0


class NotOpen(EngineError):
    """The engine was used before it was entered (`async with manager:`), or after it closed."""

    code = "engine_not_open"
