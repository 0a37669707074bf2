"""What the engine needs to know of the service's settings (built from `Settings` in the
lifespan, so the engine does not read the environment)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    max_concurrent_runs: int = 100
    max_tokens_per_run: int = 32768
    run_timeout_s: float = 300.0
    max_run_log_bytes: int = 32 * 1024 * 1024
    cancel_confirm_s: float = 2.0
    finished_runs_cache_bytes: int = 64 * 1024 * 1024
    finished_runs_cache_s: float = 10.0
    # How long a stopped run waits for the checkpoint writes already inside the saver (its
    # fence, app/engine/fence.py). They queue for the SQLite connection behind every other
    # run's: under load that is seconds, so this only catches a write that is stuck.
    write_fence_s: float = 30.0
    event_flush_s: float = 0.5
    run_retention_s: float = 7 * 24 * 3600.0
    heartbeat_s: float = 5.0  # WORKER_HEARTBEAT_S (app/engine/leases.py)
