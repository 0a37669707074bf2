"""Admission: what the caller of `RunManager.start` may check before a new run is created.

The engine knows no keys, tenants or rates; a protocol passes an `Admit` that decides (and may
refuse by raising an `EngineError`) and returns a `Release`. The manager calls it only when a
new run is about to be created (never for a request that attaches to the run of its
idempotency key), after the engine's own checks, and calls the release exactly once: when the
run is retired (its `end` is written), or at once if the start fails after admission.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Release = Callable[[], None]
Admit = Callable[[], Awaitable[Release]]
