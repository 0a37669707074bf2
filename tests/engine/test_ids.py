"""Event ids reserved ahead in the store (app/engine/ids.py): readers see only reserved ids, and
reserving costs one store write per range, never one per event, with the run's task never
waiting on it.

The gate is tested on a real `MemoryEventLog`. The cost runs a real `RunManager` in-process on
the real SQLite store (a file), whose `reserve_ids` calls are counted by a subclass that only
counts, and a LangGraph graph (tests/engine/graphs/burst.py) writing custom events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from langgraph.checkpoint.memory import InMemorySaver

from app.broker.local import LocalCancelBroker
from app.engine.config import EngineConfig
from app.engine.ids import ID_RANGE, ReservedLog, next_ceiling
from app.engine.manager import RunManager
from app.engine.registry import GraphRegistry
from app.engine.run import RunRequest
from app.log.memory import MemoryEventLog
from app.store.sqlite import SqliteRunStore
from tests.engine.graphs._controls import Controls

GRAPHS = Path(__file__).parent / "graphs"
BOUND_S = 20.0


def _closed(reader: ReservedLog) -> bool:
    return reader.closed


def test_readers_see_the_log_only_up_to_the_reserved_ceiling_and_wait_there() -> None:
    async def main() -> None:
        log = MemoryEventLog("r")
        woken: list[int] = []
        reader = ReservedLog(log, lambda: woken.append(reader.ceiling))
        for i in range(5):
            log.append("token", {"i": i})
        assert (reader.last_id, list(reader.after(0, 10))) == (0, [])
        reader.raise_to(3)
        assert [e.id for e in reader.after(0, 10)] == [1, 2, 3]
        assert reader.last_id == 3
        log.close()
        assert not _closed(reader)  # events 4 and 5 are still behind the ceiling

        waiting = asyncio.create_task(reader.wait(3))
        await asyncio.sleep(0)
        assert woken == [3] and not waiting.done()  # the persister was asked for more ids
        reader.raise_to(2)  # lower: nothing changes
        assert not waiting.done()
        reader.raise_to(10)
        await asyncio.wait_for(waiting, 1)
        assert [e.id for e in reader.after(3, 10)] == [4, 5]
        assert _closed(reader) and reader.blocked == 1

    asyncio.run(main())


def test_a_reader_at_the_ceiling_with_nothing_new_waits_for_the_log_not_the_store() -> None:
    async def main() -> None:
        log = MemoryEventLog("r")
        woken: list[int] = []
        reader = ReservedLog(log, lambda: woken.append(1))
        reader.raise_to(1)
        log.append("metadata", {})
        waiting = asyncio.create_task(reader.wait(1))
        await asyncio.sleep(0)
        assert woken == []  # nothing is waiting behind the ceiling yet
        log.append("token", {})  # id 2: above it
        await asyncio.sleep(0)
        assert woken == [1]
        reader.raise_to(4096)
        await asyncio.wait_for(waiting, 1)

    asyncio.run(main())


def test_the_ceiling_is_raised_by_half_a_range_ahead_and_more_for_a_fast_run() -> None:
    assert next_ceiling(0, ID_RANGE, rate=0) is None
    assert next_ceiling(ID_RANGE // 2, ID_RANGE, rate=0) is None
    assert next_ceiling(ID_RANGE // 2 + 1, ID_RANGE, rate=0) == ID_RANGE // 2 + 1 + ID_RANGE
    fast = next_ceiling(ID_RANGE // 2 + 1, ID_RANGE, rate=20_000)
    assert fast is not None and fast - (ID_RANGE // 2 + 1) == 40_000  # 2 s of its events


class CountingStore(SqliteRunStore):
    """The real SQLite store; counts its `reserve_ids` writes and what they carried."""

    writes: list[Sequence[tuple[str, int]]]

    async def reserve_ids(self, ceilings: Sequence[tuple[str, int]]) -> None:
        self.writes.append(list(ceilings))
        await super().reserve_ids(ceilings)


async def _burst(tmp: Path, events: int, pause_s: float) -> tuple[int, int, int, float]:
    """Run `burst` with one reader reading as fast as it can; return (the run's last id, the
    store's reserve writes, the times the reader waited at the ceiling, events/s)."""
    store = cast(CountingStore, await CountingStore.open(tmp / "runs.db"))
    store.writes = []
    saver = InMemorySaver()
    controls = Controls(burst=events, burst_pause_s=pause_s)
    manager = RunManager(
        EngineConfig(event_flush_s=0.5),  # the default EVENT_FLUSH_S
        GraphRegistry.load([GRAPHS], saver, Controls),
        controls,
        store=store,
        logs=MemoryEventLog,
        broker=LocalCancelBroker(),
        rewinder=None,
    )
    async with manager:
        graph = GraphRegistry.load([GRAPHS], saver, Controls)["burst"]
        run = await manager.start(graph, RunRequest(input={"query": "q"}))
        started = time.monotonic()
        cursor = 0
        async with asyncio.timeout(BOUND_S):
            while True:
                batch = run.reader.after(cursor, 256)
                if batch:
                    assert batch[0].id == cursor + 1
                    cursor = batch[-1].id
                    continue
                if run.reader.closed:
                    break
                await run.reader.wait(cursor)
        took = time.monotonic() - started
        assert run.record.status.value == "completed"
        last = run.log.last_id
        assert cursor == last  # every event reached the reader
    await store.close()
    return last, len(store.writes), run.ids.blocked, last / took


def test_a_paced_run_never_waits_on_a_reservation_and_writes_one_per_range(
    tmp_path: Path,
) -> None:
    """~4,000 events a second for 3 s (a model streams 10-100 tokens a second): the ceiling is
    always raised ahead of the reader, one write per range."""
    last, writes, blocked, rate = asyncio.run(_burst(tmp_path, 12_000, pause_s=0.025))
    print(f"paced: {last} events at {rate:.0f}/s, {writes} reserve writes, {blocked} waits")
    assert blocked == 0
    assert writes <= 1 + last // (ID_RANGE // 2)


def test_a_run_as_fast_as_langgraph_goes_costs_a_write_per_range_at_most(
    tmp_path: Path,
) -> None:
    """The worst case: every event is delivered; a reader may wait at the first range's
    ceiling (the persister has not seen the run's rate yet), then no more than once or twice
    (the rate-sized ranges), and the writes stay below one per range."""
    last, writes, blocked, rate = asyncio.run(_burst(tmp_path, 30_000, pause_s=0.0))
    print(f"unpaced: {last} events at {rate:.0f}/s, {writes} reserve writes, {blocked} waits")
    assert blocked <= 3
    assert writes <= 1 + last // (ID_RANGE // 2)
