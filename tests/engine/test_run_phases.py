"""The run's phase machine (app/engine/run.py, app/engine/manager.py): how a run's end is
decided, and that whatever ends it (its task, a cancel, a rollback, a task abandoned because it
ignores cancel, a rollback that fails) writes `end` once, at the right moment.

`decide_end` is tested as the pure function it is. Everything else runs a real `RunManager`
in-process (no HTTP) with the memory backends (InMemorySaver, MemoryRunStore, MemoryRewinder,
MemoryEventLog, LocalCancelBroker) and real LangGraph graphs from tests/engine/graphs/, steered
by a `Controls` the test hands to the manager as the graphs' runtime context. Three stand-ins,
each said where it is defined: a rewinder whose `rewind` fails, a saver whose writes wait until
released, and a stream consumer that swallows cancels (what the manager's abandon path is for; a
LangGraph node cannot do it).

Every wait is bounded (`BOUND_S`); every scenario fails on anything the event loop reports
(an exception in a callback, a task's exception nobody read).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from app.broker.local import LocalCancelBroker
from app.engine import events
from app.engine.config import EngineConfig
from app.engine.errors import NotOpen
from app.engine.failures import classify
from app.engine.manager import RunManager
from app.engine.ports import Mark, Rewinder
from app.engine.record import RunStatus
from app.engine.registry import GraphRegistry
from app.engine.run import Ending, Phase, Run, RunRequest, decide_end
from app.log.memory import MemoryEventLog
from app.store.memory import MemoryRunStore
from app.store.rewind import MemoryRewinder
from graphs.offline import OfflineChatModel
from tests.engine.graphs._controls import Controls

T = TypeVar("T")
GRAPHS = Path(__file__).parent / "graphs"
BOUND_S = 5.0  # no wait below should come close; it only keeps a broken run from hanging
SCENARIO_S = 30.0  # a whole scenario
CONFIRM_S = 0.3  # `cancel_confirm_s`: how long a cancel waits before abandoning the task

# -- decide_end ----------------------------------------------------------------------------

BOOM = ValueError("boom")


def _case(case_id: str, expected: Ending, **kwargs: Any) -> Any:
    given: dict[str, Any] = {"cancelled": False, "exc": None, "cancel_reason": None}
    given["paused"] = False
    return pytest.param({**given, **kwargs}, expected, id=case_id)


CANCELLED = RunStatus.CANCELLED
END_CASES = [
    _case("completed", Ending(RunStatus.COMPLETED, "done")),
    _case("paused", Ending(RunStatus.PAUSED, "interrupt"), paused=True),
    _case("cancelled-default-reason", Ending(CANCELLED, "cancelled"), cancelled=True),
    _case(
        "cancelled-reason-kept",
        Ending(CANCELLED, "shutdown"),
        cancelled=True,
        cancel_reason="shutdown",
    ),
    _case("cancelled-while-paused", Ending(CANCELLED, "cancelled"), cancelled=True, paused=True),
    _case(
        "failed",
        Ending(
            RunStatus.FAILED,
            "node_error",
            {"code": "node_error", "message": "the graph failed: ValueError: boom"},
        ),
        exc=BOOM,
    ),
    _case(
        "failed-timeout",
        Ending(
            RunStatus.FAILED,
            "timeout",
            {"code": "timeout", "message": "the run took longer than its timeout"},
        ),
        exc=TimeoutError(),
    ),
    _case(
        "cancelled-while-failing",
        Ending(CANCELLED, "cancelled"),
        exc=BOOM,
        cancel_reason="cancelled",
    ),
    _case(
        "cancelled-while-failing-reason-kept",
        Ending(CANCELLED, "rollback_failed"),
        exc=BOOM,
        cancel_reason="rollback_failed",
    ),
    _case("forced-though-completed", Ending(CANCELLED, "cancelled"), forced=True),
    _case(
        "forced-rolled-back", Ending(CANCELLED, "rollback"), forced=True, cancel_reason="rollback"
    ),
    _case(
        "forced-though-failed-and-paused",
        Ending(CANCELLED, "cancelled"),
        forced=True,
        exc=BOOM,
        paused=True,
    ),
]


@pytest.mark.parametrize(("given", "expected"), END_CASES)
def test_decide_end(given: dict[str, Any], expected: Ending) -> None:
    assert decide_end(**given) == expected


@pytest.mark.parametrize("exc", [BOOM, TimeoutError(), RuntimeError("x" * 500)])
def test_a_failure_is_reported_as_classify_reports_it(exc: BaseException) -> None:
    ending = decide_end(cancelled=False, exc=exc, cancel_reason=None, paused=False)
    code, message = classify(exc)
    assert ending == Ending(RunStatus.FAILED, code, events.error(code, message))


# -- the harness ---------------------------------------------------------------------------


_BUILT: list[Controls] = []  # the scenario's graphs' controls, released when it ends


def run_scenario(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run the scenario in an event loop of its own, within `SCENARIO_S`; fail on anything the
    loop reported meanwhile (an exception raised in a callback, such as a done callback writing
    to a closed log; a task dropped with an exception nobody read, reported when it is collected:
    hence `gc.collect()`), and on any task the scenario left running.

    Not `asyncio.run`, nor `asyncio.wait_for`: both wait, without a bound, for what they cancel
    to end, which a task that ignores cancel never does. Here the clean-up first releases the
    graphs' nodes (a stubborn node may be waiting), then gives each step `BOUND_S`."""
    reported: list[dict[str, Any]] = []
    _BUILT.clear()
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        main = loop.create_task(scenario())
        loop.run_until_complete(asyncio.wait({main}, timeout=SCENARIO_S))
        if not main.done():
            main.cancel()
            pytest.fail(f"the scenario did not end within {SCENARIO_S}s")
        main.result()  # the scenario's own failure, if any
        gc.collect()
        loop.run_until_complete(asyncio.sleep(0))
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        assert not left, f"the scenario left tasks running: {left}"
    finally:
        _close(loop)
    gc.collect()
    assert not reported, f"the event loop reported: {[c.get('message') for c in reported]}"


def _close(loop: asyncio.AbstractEventLoop) -> None:
    for controls in _BUILT:
        controls.release.set()
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    steps: list[Coroutine[Any, Any, Any]] = [asyncio.wait(pending)] if pending else []
    steps += [loop.shutdown_asyncgens(), loop.shutdown_default_executor()]
    for step in steps:
        loop.run_until_complete(asyncio.wait({loop.create_task(step)}, timeout=BOUND_S))
    loop.close()


async def bounded(awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, or TimeoutError after `BOUND_S` (then it is cancelled, and not
    waited for: it may ignore the cancel)."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=BOUND_S)
    finally:
        if not task.done():
            task.cancel()
    if not done:
        raise TimeoutError(f"not done within {BOUND_S}s")
    return task.result()


@dataclasses.dataclass
class Engine:
    manager: RunManager
    graphs: GraphRegistry
    saver: InMemorySaver
    store: MemoryRunStore
    controls: Controls

    async def state(self, graph: str, thread_id: str) -> dict[str, Any]:
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        snapshot = await self.graphs[graph].compiled.aget_state(config)
        history = [s async for s in self.graphs[graph].compiled.aget_state_history(config)]
        checkpoint_id = snapshot.config.get("configurable", {}).get("checkpoint_id")
        return {
            "values": snapshot.values,
            "next": snapshot.next,
            "checkpoint_id": checkpoint_id,
            "checkpoints": len(history),
        }


def build(
    rewinder: Callable[[InMemorySaver], Rewinder] = MemoryRewinder,
    saver: InMemorySaver | None = None,
    **config: Any,
) -> Engine:
    """A manager on the memory backends (as app/backends.py builds them for `memory://`), with
    the phase tests' graphs; not entered yet. Call inside the scenario's event loop."""
    saver = saver or InMemorySaver()
    graphs = GraphRegistry.load([GRAPHS], saver, Controls)
    store = MemoryRunStore()
    controls = Controls()
    _BUILT.append(controls)
    manager = RunManager(
        EngineConfig(**{"cancel_confirm_s": CONFIRM_S, "event_flush_s": 0.05, **config}),
        graphs,
        controls,
        store=store,
        logs=MemoryEventLog,
        broker=LocalCancelBroker(),
        rewinder=rewinder(saver),
    )
    return Engine(manager, graphs, saver, store, controls)


@asynccontextmanager
async def engine(
    rewinder: Callable[[InMemorySaver], Rewinder] = MemoryRewinder,
    saver: InMemorySaver | None = None,
    **config: Any,
) -> AsyncIterator[Engine]:
    """`async with manager:`, its exit bounded too (closing cancels the runs still going)."""
    built = build(rewinder, saver, **config)
    await bounded(built.manager.__aenter__())
    try:
        yield built
    finally:
        await bounded(built.manager.__aexit__(None, None, None))


def types_of(run: Run) -> list[str]:
    return [e.type for e in run.reader.after(0, run.reader.last_id)]


def last_event(run: Run) -> tuple[str, Any]:
    event = run.reader.after(run.reader.last_id - 1, 1)[0]
    return event.type, event.data


def request(thread_id: str, **payload: Any) -> RunRequest:
    return RunRequest(input=dict(payload), thread_id=thread_id)


class SwallowsCancel:
    """A compiled graph whose event stream's consumer swallows cancels: the run's own task
    ignores them, which is what the manager's abandon path is for ("a single task.cancel() can
    be swallowed inside the LangGraph / astream_events consumer", app/engine/manager.py).

    A stand-in for the third-party stream, not for our code: no LangGraph node can make the
    run's task ignore cancel (LangGraph runs the node in a task of its own and stops waiting for
    it at the second cancel: test_a_node_that_ignores_cancel_is_stopped_by_a_repeated_cancel),
    so this stream wraps the real graph's, reads it under `asyncio.shield` and, when cancelled,
    goes on waiting for the same event. The graph it streams, and everything else
    (`aget_state`, ...), is the real compiled graph it wraps."""

    def __init__(self, compiled: CompiledStateGraph[Any, Any, Any, Any]) -> None:
        self._compiled = compiled
        self.ignored = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compiled, name)

    async def astream_events(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        # An async generator (it has aclose); the declared type is the looser AsyncIterator.
        inner = cast(AsyncGenerator[Any, None], self._compiled.astream_events(*args, **kwargs))
        try:
            while True:
                step = asyncio.ensure_future(anext(inner))
                while True:
                    try:
                        event = await asyncio.shield(step)
                        break
                    except asyncio.CancelledError:
                        if step.cancelled():  # the read itself was cancelled: give up
                            raise
                        self.ignored += 1
                    except StopAsyncIteration:
                        return
                yield event
        finally:
            await inner.aclose()


# -- a run that ends on its own ------------------------------------------------------------


def test_a_failing_node_fails_the_run_with_error_then_end(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with engine() as e:
            run = await e.manager.start(e.graphs["failing"], request("fail-1", query="q"))
            record = await bounded(e.manager.wait(run.run_id))
            assert record.status is RunStatus.FAILED and record.reason == "node_error"
            assert record.error is not None and record.error["code"] == "node_error"
            assert "explode" in record.error["message"] and "boom" in record.error["message"]
            types = types_of(run)
            assert types[-2:] == ["error", "end"] and types.count("end") == 1
            error, end = run.reader.after(len(types) - 2, 2)
            assert error.data == record.error
            assert end.data["status"] == "failed" and end.data["reason"] == "node_error"
            assert run.phase is Phase.ENDED and run.reader.closed
        stored = await e.store.load_record(run.run_id)
        assert stored is not None and stored.status is RunStatus.FAILED
        assert stored.error == record.error

    run_scenario(scenario)
    assert any("failed (node_error)" in r.getMessage() for r in caplog.records)


def test_a_run_that_fails_because_it_was_cancelled_is_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model's reply is cut by the cancel (`RunGuard` raises from its next token), so the
    node fails and the run's task ends with that exception, not cancelled: the run is reported
    cancelled, with no `error`. (The stream's consumer swallows the cancel itself, else the
    task would end cancelled at once; LangGraph drops a node's error raised while it is being
    cancelled.)"""
    caplog.set_level(logging.INFO, logger="app.engine")

    async def scenario() -> None:
        async with engine() as e:
            e.controls.llm = OfflineChatModel(token_delay_s=0.05)
            real = e.graphs["streams"]
            stream = SwallowsCancel(real.compiled)
            graph = dataclasses.replace(
                real, compiled=cast(CompiledStateGraph[Any, Any, Any, Any], stream)
            )
            run = await e.manager.start(graph, request("fail-cancel", query="q"))
            await bounded(e.controls.entered.wait())
            record = await bounded(e.manager.cancel(run.run_id))
            assert stream.ignored >= 1
            assert run.task is not None and not run.task.cancelled()
            failure = run.task.exception()
            assert failure is not None and classify(failure)[0] == "node_error"
            assert record.status is RunStatus.CANCELLED and record.reason == "cancelled"
            assert record.error is None and "error" not in types_of(run)
            kind, end = last_event(run)
            assert kind == "end" and end["status"] == "cancelled" and end["reason"] == "cancelled"

    run_scenario(scenario)
    assert not any("abandoning" in r.getMessage() for r in caplog.records)


# -- a task that ignores cancel ------------------------------------------------------------


def test_a_node_that_ignores_cancel_is_stopped_by_a_repeated_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`stubborn` catches every CancelledError and waits on. LangGraph (1.2) runs the node in a
    task of its own and stops waiting for it at the second cancel, so the run's task ends then:
    the escalation is what stops it, well before `cancel_confirm_s`. The node itself runs on,
    detached, until the test releases it; once it has, the run's closed log is unchanged."""
    caplog.set_level(logging.INFO, logger="app.engine")

    async def scenario() -> None:
        async with engine() as e:
            already = asyncio.all_tasks()
            run = await e.manager.start(e.graphs["stubborn"], request("stub-1", query="q"))
            await bounded(e.controls.entered.wait())
            record = await bounded(e.manager.cancel(run.run_id))
            assert e.controls.cancels_ignored >= 1  # the node did swallow a cancel
            assert record.status is RunStatus.CANCELLED and record.reason == "cancelled"
            assert run.phase is Phase.ENDED and run.reader.closed
            kind, end = last_event(run)
            assert kind == "end" and end["status"] == "cancelled"
            assert await e.manager.active_run_on("stub-1") is None
            ended_at = run.reader.last_id
            # The thread is free: a new run on it starts (and ends once released).
            again = await e.manager.start(e.graphs["stubborn"], request("stub-1", query="q2"))
            e.controls.release.set()
            assert (await bounded(e.manager.wait(again.run_id))).status is RunStatus.COMPLETED
            leftovers = asyncio.all_tasks() - already - {asyncio.current_task()}
            if leftovers:  # the detached node, and LangGraph's tasks waiting on it
                await bounded(asyncio.wait(leftovers))
            assert e.controls.finished.is_set()
            assert run.reader.last_id == ended_at and run.reader.closed
            assert types_of(run).count("end") == 1

    run_scenario(scenario)
    messages = [r.getMessage() for r in caplog.records if r.name == "app.engine"]
    assert any("still running after cancel #1" in m for m in messages)
    assert not any("abandoning" in m for m in messages)


def test_a_cancelled_run_changes_its_thread_no_more_once_cancel_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: a LangGraph 1.2 node that ignores cancel runs on, detached, after `cancel`
    has returned the run cancelled; when it returned, its step's writes landed on the thread (as
    if `hold` had completed in the cancelled run). The run's fenced saver drops them."""
    caplog.set_level(logging.INFO, logger="app.engine")

    async def scenario() -> None:
        async with engine() as e:
            already = asyncio.all_tasks()
            run = await e.manager.start(e.graphs["stubborn"], request("stub-late", query="q"))
            await bounded(e.controls.entered.wait())
            await bounded(e.manager.cancel(run.run_id))
            at_cancel = await e.state("stubborn", "stub-late")
            assert at_cancel["next"] == ("hold",)  # `hold` did not complete
            e.controls.release.set()
            leftovers = asyncio.all_tasks() - already - {asyncio.current_task()}
            await bounded(asyncio.wait(leftovers))
            assert e.controls.finished.is_set()  # `hold` did return, after the cancel
            assert await e.state("stubborn", "stub-late") == at_cancel
            assert run.fence is not None and run.fence.dropped >= 1

    run_scenario(scenario)
    messages = [r.getMessage() for r in caplog.records if r.name == "app.engine"]
    assert any("dropped a checkpoint task write" in m for m in messages), messages


def test_a_task_that_ignores_cancel_is_abandoned_after_cancel_confirm_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.engine")

    async def scenario() -> None:
        # No finished run cached: the abandoned one is dropped from memory at its end.
        async with engine(finished_runs_cache_bytes=0) as e:
            real = e.graphs["two_steps"]
            stream = SwallowsCancel(real.compiled)
            graph = dataclasses.replace(
                real, compiled=cast(CompiledStateGraph[Any, Any, Any, Any], stream)
            )
            run = await e.manager.start(graph, request("aband-1", steps=[]))
            run_id, log, task = run.run_id, run.reader, run.task
            assert task is not None
            await bounded(e.controls.entered.wait())

            started = time.monotonic()
            record = await bounded(e.manager.cancel(run_id))
            took = time.monotonic() - started
            assert CONFIRM_S <= took < CONFIRM_S + 1.0, took
            assert stream.ignored >= 2  # cancelled again (and again), then given up on
            assert not task.done()  # abandoned, still running
            assert record.status is RunStatus.CANCELLED and record.reason == "cancelled"
            assert run.phase is Phase.ENDED and log.closed
            kind, end = last_event(run)
            assert kind == "end" and end["status"] == "cancelled" and end["reason"] == "cancelled"
            assert await e.manager.active_run_on("aband-1") is None and e.manager.active_count == 0
            ended_at = log.last_id

            # The thread is free for a new run.
            again = await e.manager.start(real, request("aband-1", steps=[]))
            # Let both go: the abandoned task streams on, into the closed log, and ends.
            e.controls.release.set()
            assert (await bounded(e.manager.wait(again.run_id))).status is RunStatus.COMPLETED
            await bounded(asyncio.wait({task}))
            assert log.last_id == ended_at and log.closed
            assert run.record.status is RunStatus.CANCELLED
            del run, task, again  # the manager no longer holds the abandoned run either
            stored = await e.store.load_record(run_id)
            assert stored is not None and stored.status is RunStatus.CANCELLED

    run_scenario(scenario)
    messages = [r.getMessage() for r in caplog.records if r.name == "app.engine"]
    assert any("abandoning its task" in m for m in messages)
    assert any("abandoned task has ended (RuntimeError('append to a closed" in m for m in messages)


# -- rollback ------------------------------------------------------------------------------


class FailingRewinder:
    """A `Rewinder` whose `rewind` fails, as a store that errors would: a fake of the peer port
    (the real MemoryRewinder takes the marks), the one way to make a rollback fail on demand."""

    def __init__(self, saver: InMemorySaver) -> None:
        self._real = MemoryRewinder(saver)
        self.rewinds = 0

    async def mark(self, thread_id: str) -> Mark:
        return await self._real.mark(thread_id)

    async def rewind(self, mark: Mark) -> None:
        self.rewinds += 1
        raise OSError("the checkpoint store is unavailable")


class WatchedRewinder:
    """The real MemoryRewinder, noting what the watched run looked like when `rewind` began."""

    def __init__(self, saver: InMemorySaver) -> None:
        self._real = MemoryRewinder(saver)
        self.watch: Run | None = None
        self.seen: list[dict[str, Any]] = []

    async def mark(self, thread_id: str) -> Mark:
        return await self._real.mark(thread_id)

    async def rewind(self, mark: Mark) -> None:
        run = self.watch
        assert run is not None
        self.seen.append({"phase": run.phase, "closed": run.reader.closed, "types": types_of(run)})
        await self._real.rewind(mark)


def test_a_rollback_restores_the_thread_before_end_is_written() -> None:
    watched: list[WatchedRewinder] = []

    def rewinder(saver: InMemorySaver) -> WatchedRewinder:
        watched.append(WatchedRewinder(saver))
        return watched[-1]

    async def scenario() -> None:
        async with engine(rewinder) as e:
            c = e.controls
            c.release.set()
            first = await e.manager.start(e.graphs["two_steps"], request("rb-1", steps=[]))
            assert (await bounded(e.manager.wait(first.run_id))).status is RunStatus.COMPLETED
            before = await e.state("two_steps", "rb-1")
            assert before["values"] == {"steps": ["first", "second"]}
            c.release.clear()
            c.entered.clear()

            run = await e.manager.start(e.graphs["two_steps"], request("rb-1", steps=[]))
            watched[0].watch = run
            await bounded(c.entered.wait())
            record = await bounded(e.manager.cancel(run.run_id, roll_back=True))
            assert record.status is RunStatus.CANCELLED and record.reason == "rollback"
            kind, end = last_event(run)
            assert kind == "end" and end["status"] == "cancelled" and end["reason"] == "rollback"
            # While the thread was rewound, the run was still STOPPING and had no `end`.
            [seen] = watched[0].seen
            assert seen["phase"] is Phase.STOPPING and not seen["closed"]
            assert "end" not in seen["types"] and "node_start" in seen["types"]
            after = await e.state("two_steps", "rb-1")
            assert after == before

    run_scenario(scenario)


def test_a_rollback_that_fails_ends_the_run_and_keeps_the_checkpoints(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fakes: list[FailingRewinder] = []

    def rewinder(saver: InMemorySaver) -> FailingRewinder:
        fakes.append(FailingRewinder(saver))
        return fakes[-1]

    async def scenario() -> None:
        async with engine(rewinder) as e:
            run = await e.manager.start(e.graphs["two_steps"], request("rbf-1", steps=[]))
            await bounded(e.controls.entered.wait())
            record = await bounded(e.manager.cancel(run.run_id, roll_back=True))
            assert fakes[0].rewinds == 1
            assert record.status is RunStatus.CANCELLED and record.reason == "rollback_failed"
            assert record.error is None and "error" not in types_of(run)
            kind, end = last_event(run)
            assert kind == "end" and end["status"] == "cancelled"
            assert end["reason"] == "rollback_failed"
            assert run.phase is Phase.ENDED and run.reader.closed
            assert await e.manager.active_run_on("rbf-1") is None
            # The thread keeps what the run wrote: `first`'s step, `second` still to run.
            state = await e.state("two_steps", "rbf-1")
            assert state["values"] == {"steps": ["first"]} and state["next"] == ("second",)
        stored = await e.store.load_record(run.run_id)
        assert stored is not None and stored.reason == "rollback_failed"

    run_scenario(scenario)
    [failure] = [r for r in caplog.records if "rollback failed" in r.getMessage()]
    assert failure.levelno == logging.ERROR and failure.exc_info is not None
    assert isinstance(failure.exc_info[1], OSError)


class HeldSaver(InMemorySaver):
    """The real InMemorySaver, except that once `hold` is set every write waits inside it until
    `release` is set, as a write stuck behind a store that no longer answers would: the one way
    to have a run's write still going when its fence closes."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = asyncio.Event()
        self.release = asyncio.Event()
        self.held = 0

    async def _wait(self) -> None:
        if self.hold.is_set():
            self.held += 1
            await self.release.wait()

    async def aput(self, *args: Any, **kwargs: Any) -> RunnableConfig:
        await self._wait()
        return await super().aput(*args, **kwargs)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        await self._wait()
        await super().aput_writes(*args, **kwargs)


def test_a_rollback_whose_write_is_still_going_ends_rollback_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A write of the run still inside the saver `write_fence_s` after the run stopped could
    land on a rewound thread: the thread is not rewound, and the run says so."""
    saver = HeldSaver()

    async def scenario() -> None:
        async with engine(saver=saver, write_fence_s=0.2) as e:
            already = asyncio.all_tasks()
            saver.hold.set()
            run = await e.manager.start(e.graphs["two_steps"], request("held-1", steps=[]))
            await bounded(e.controls.entered.wait())
            record = await bounded(e.manager.cancel(run.run_id, roll_back=True))
            assert saver.held >= 1 and not saver.release.is_set()
            assert record.status is RunStatus.CANCELLED and record.reason == "rollback_failed"
            kind, end = last_event(run)
            assert kind == "end" and end["reason"] == "rollback_failed"
            saver.release.set()
            saver.hold.clear()
            # The held write lands after the end, as the log warned.
            leftovers = asyncio.all_tasks() - already - {asyncio.current_task()}
            if leftovers:
                await bounded(asyncio.wait(leftovers))
            assert (await e.state("two_steps", "held-1"))["checkpoint_id"] is not None

    run_scenario(scenario)
    assert any(
        "a checkpoint write was still going" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )


# -- cancel is idempotent ------------------------------------------------------------------


def test_cancel_twice_returns_the_same_record_and_the_first_cancel_decides() -> None:
    async def scenario() -> None:
        async with engine() as e:
            run = await e.manager.start(e.graphs["two_steps"], request("twice-1", steps=[]))
            await bounded(e.controls.entered.wait())
            a, b = await bounded(
                asyncio.gather(
                    e.manager.cancel(run.run_id, "user"),
                    e.manager.cancel(run.run_id, "other", roll_back=True),
                )
            )
            assert a is b is run.record
            assert a.status is RunStatus.CANCELLED and a.reason == "user"
            ended = (run.reader.last_id, dict(a.as_dict()))
            c = await bounded(e.manager.cancel(run.run_id, "third", roll_back=True))
            assert c is a and (run.reader.last_id, c.as_dict()) == ended
            assert types_of(run).count("end") == 1
            # The rollback asked second was not done: the run's first step is still there.
            state = await e.state("two_steps", "twice-1")
            assert state["values"] == {"steps": ["first"]}

    run_scenario(scenario)


def test_cancel_of_a_finished_run_changes_nothing() -> None:
    async def scenario() -> None:
        async with engine() as e:
            e.controls.release.set()
            run = await e.manager.start(e.graphs["two_steps"], request("done-1", steps=[]))
            record = await bounded(e.manager.wait(run.run_id))
            assert record.status is RunStatus.COMPLETED and record.reason == "done"
            ended = (run.reader.last_id, dict(record.as_dict()))
            state = await e.state("two_steps", "done-1")
            again = await bounded(e.manager.cancel(run.run_id, roll_back=True))
            assert again is record and (run.reader.last_id, again.as_dict()) == ended
            assert run.phase is Phase.ENDED and run.stopping is None
            assert await e.state("two_steps", "done-1") == state

    run_scenario(scenario)


# -- lifecycle -----------------------------------------------------------------------------


def test_start_before_entering_and_after_closing_raises_not_open() -> None:
    async def scenario() -> None:
        e = build()
        with pytest.raises(NotOpen):
            await e.manager.start(e.graphs["failing"], request("open-1", query="q"))
        async with e.manager:
            pass
        with pytest.raises(NotOpen):
            await e.manager.start(e.graphs["failing"], request("open-1", query="q"))
        assert e.manager.active_count == 0
        assert await e.store.thread_graph("default", "open-1") is None  # nothing was started
        with pytest.raises(NotOpen):
            async with e.manager:
                pass

    run_scenario(scenario)
