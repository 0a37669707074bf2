"""The trimmer's rule (app/memory_trim.py): when it trims, and that a trim with few runs live
collects the reference cycles a burst left (the service's GC thresholds leave them to a quiet
server)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from app.memory_trim import FEW_LIVE, MemoryTrimmer


class Load:
    """What the trimmer reads: live runs, and runs that have left memory so far."""

    def __init__(self) -> None:
        self.live = 0
        self.released = 0

    def trimmer(self) -> MemoryTrimmer:
        return MemoryTrimmer(lambda: self.live, lambda: self.released, interval_s=1.0)


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Only explicit collections: an automatic one could free the cycle on its own."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_steady_load_is_not_trimmed_and_a_receding_one_is() -> None:
    load = Load()
    trimmer = load.trimmer()
    assert trimmer.available
    load.live = 100
    assert not trimmer.due()  # nothing has left memory
    load.released = 40
    load.live = 100
    assert not trimmer.due()  # runs end and start: the load holds
    load.live = 50
    assert trimmer.due()  # down to half of its peak
    asyncio.run(trimmer.trim())
    assert trimmer.trims == 1
    assert not trimmer.due()  # nothing more has left since
    load.released = 90
    load.live = 0
    assert trimmer.due()


@pytest.mark.usefixtures("no_automatic_gc")
@pytest.mark.parametrize("live", [0, 1, FEW_LIVE])
def test_an_idle_or_quiet_trim_collects_cycles_first(live: int) -> None:
    """Also with a few runs live: one long run must not keep every burst's cycles."""
    load = Load()
    load.live = live
    trimmer = load.trimmer()
    cycle = Node()
    freed = weakref.ref(cycle)
    del cycle
    assert freed() is not None
    asyncio.run(trimmer.trim())
    assert freed() is None


@pytest.mark.usefixtures("no_automatic_gc")
def test_a_trim_while_runs_are_live_does_not_stop_them_for_a_full_collection() -> None:
    load = Load()
    load.live = FEW_LIVE + 1
    trimmer = load.trimmer()
    cycle = Node()
    kept = weakref.ref(cycle)
    del cycle
    asyncio.run(trimmer.trim())
    assert kept() is not None
    gc.collect()
    assert kept() is None
