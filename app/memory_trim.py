"""Giving memory back to the system once a burst of runs is over.

Design record
- Rule: every MEMORY_TRIM_S, let go of expired finished runs (FINISHED_RUNS_CACHE_S), and if
  runs have left memory since the last trim while the number of live runs is at most half of
  its peak since then, call glibc's `malloc_trim(0)` in a worker thread. Under steady load
  nothing is trimmed (the memory is in use); after a burst it is trimmed as the load recedes
  and again once what the burst left in the cache has expired. When at most FEW_LIVE runs are
  live, a full garbage collection comes first: with the service's GC thresholds
  (app/gc_tuning.py) a quiet server allocates too little to trigger one, and the burst's
  reference cycles held ~22 MB after 150 streams until one ran. Not only when idle: one long
  run kept live (a watched run, a slow model call) kept every burst's cycles (cancelled runs'
  logs, LangGraph's runner and its tracebacks) for good, +75 MB after 8 rounds of 100
  abandoned streams, flat when collected (docs/perf/0021-leak-probe.md). Its pause stalls at
  most FEW_LIVE streams.
- Why: glibc keeps freed chunks inside its heaps and returns only the top of a heap by itself;
  after 300 concurrent streams the server stayed at ~1 GB, which a container's memory limit
  kills. `malloc_trim(0)` also releases the free pages inside each heap.
- It can only reach Python's objects if they come from malloc: `PYTHONMALLOC=malloc` (set by
  `make run`, the tests and the bench). With pymalloc, a 1 MiB arena goes back only when
  every object in it is freed, and the few long-lived objects made during a burst keep nearly
  every arena (415 arenas held for 61 MB of live blocks). Measurements:
  docs/perf/0016-memory-after-load.md.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Callable

log = logging.getLogger("app.memory")

FEW_LIVE = 4  # a trim with no more live runs than this collects the cycles first


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)  # glibc only (not musl, not macOS)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def python_uses_malloc() -> bool:
    """Whether Python's objects come from malloc (PYTHONMALLOC=malloc), so a trim reaches them."""
    return os.environ.get("PYTHONMALLOC", "") in ("malloc", "malloc_debug")


class MemoryTrimmer:
    """Trims the heap as the load recedes; see the module docstring. `live()`: the runs in
    progress; `sweep()`: expire what the engine keeps of finished runs and return how many runs
    have left memory so far (a counter that only grows)."""

    def __init__(
        self, live: Callable[[], int], sweep: Callable[[], int], interval_s: float
    ) -> None:
        self._live = live
        self._sweep = sweep
        self._interval_s = interval_s
        self._trim = _malloc_trim()
        self._peak = 0
        self._released = 0
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def due(self) -> bool:
        """Sweep, note the live-run count; whether runs have left memory since the last trim
        and the load is at most half of its peak since then."""
        released = self._sweep()
        live = self._live()
        self._peak = max(self._peak, live)
        return released != self._released and live * 2 <= self._peak

    async def trim(self) -> None:
        if self._trim is None:
            return
        self._released = self._sweep()
        self._peak = self._live()
        if self._peak <= FEW_LIVE:
            gc.collect()
        await asyncio.to_thread(self._trim, 0)
        self.trims += 1

    async def run(self) -> None:
        if self._trim is None:
            log.info("malloc_trim is not available (not glibc): memory is not trimmed")
            return
        if not python_uses_malloc():
            log.warning(
                "PYTHONMALLOC is not 'malloc': memory freed after a burst of runs stays with "
                "Python's allocator; start the server with PYTHONMALLOC=malloc (make run does)"
            )
        while True:
            await asyncio.sleep(self._interval_s)
            if self.due():
                await self.trim()
