"""The streaming response (app/streaming/sse.py) around the generic subscriber, driven as a real
ASGI app in-process: `StreamResponse(FanOut().frames(...))` called with hand-written `receive`
and `send`, so every body message is seen as it is sent (httpx's ASGITransport buffers the
whole response, and a live server hides the send that blocks).

- A client that takes no bytes: the send times out, the response returns quietly (one "dropped
  client" warning), the subscriber is closed, and the run goes on.
- A client that disconnects mid-run: the response returns at once, the subscriber is closed, no
  task is left behind and no cancellation leaks into the caller.
- A client that keeps up: each event's native frame in order, the end of the body when the log
  closes, the subscriber's own pings while the run is quiet, and never a ping inside a big
  frame sent in slices.

Every wait is bounded and waits on what the client has received, never on a fixed delay (the
slow link of the last test is the scenario, not a wait).
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sse_starlette import sse as sse_starlette
from starlette.types import Message, Scope

from app.engine.codec import LogEvent
from app.log.memory import MemoryEventLog
from app.protocols.native.encoder import PING, NativeEncoder
from app.protocols.native.schemas import DEFAULT_SELECTION
from app.streaming.sse import StreamResponse
from app.streaming.subscriber import SEND_BYTES, FanOut

ENCODER = NativeEncoder()
CLIENT = ("127.0.0.1", 50123)
SCOPE: Scope = {"type": "http", "method": "GET", "path": "/stream", "headers": [], "client": CLIENT}
WAIT_S = 5.0  # the bound on every wait: far above what each step takes
END = {"type": "http.response.body", "body": b"", "more_body": False}


@pytest.fixture(autouse=True)
def _no_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """sse-starlette ends every response at once while its process-wide `should_exit` is set;
    these tests are about the client, not a shutdown another test may have begun."""
    monkeypatch.setattr(sse_starlette.AppStatus, "should_exit", False)


class Client:
    """The server's side of one response: records every message sent and wakes waiters.

    `block_at`: the body message (from 1) whose send never completes, as a client whose
    connection is full. `disconnect_after`: `receive` returns `http.disconnect` once that many
    body messages were sent (None: the client never leaves). `slow_s`: each body message
    bigger than SLOW_OVER takes that long to send (a slow link)."""

    SLOW_OVER = 1024

    def __init__(
        self,
        *,
        block_at: int | None = None,
        disconnect_after: int | None = None,
        slow_s: float = 0.0,
    ) -> None:
        self.messages: list[Message] = []
        self.block_at = block_at
        self.disconnect_after = disconnect_after
        self.slow_s = slow_s
        self.blocked_send_cancelled = False
        self.disconnects = 0
        self._never = asyncio.Event()  # never set
        self._changed = asyncio.Condition()

    @property
    def bodies(self) -> list[bytes]:
        return [
            m["body"]
            for m in self.messages
            if m["type"] == "http.response.body" and m.get("more_body")
        ]

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            if self.block_at is not None and len(self.bodies) + 1 == self.block_at:
                try:
                    await self._never.wait()
                except asyncio.CancelledError:
                    self.blocked_send_cancelled = True
                    raise
            if len(message["body"]) > self.SLOW_OVER:
                await asyncio.sleep(self.slow_s)
        self.messages.append(message)
        async with self._changed:
            self._changed.notify_all()

    async def receive(self) -> Message:
        if self.disconnect_after is None:
            await self._never.wait()
        else:
            count = self.disconnect_after
            await self.until(lambda: len(self.bodies) >= count)
        self.disconnects += 1
        return {"type": "http.disconnect"}

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), WAIT_S)

    async def sent(self, count: int) -> None:
        """Until `count` body messages were sent."""
        await self.until(lambda: len(self.bodies) >= count)

    async def pings_after(self, body: bytes, count: int) -> None:
        """Until `body` was sent and `count` pings after it."""
        await self.until(
            lambda: (
                body in self.bodies and self.bodies[self.bodies.index(body) :].count(PING) >= count
            )
        )


class Stream:
    """One subscriber of `log` as a response: its generator, its on_close calls, its FanOut."""

    def __init__(
        self, log: MemoryEventLog, *, send_timeout_s: float = 60.0, ping_s: float = 60.0
    ) -> None:
        self.fanout = FanOut()
        self.closes = 0
        self.frames = self.fanout.frames(
            "run", log, 0, ENCODER, DEFAULT_SELECTION, on_close=self._closed, ping_s=ping_s
        )
        self.response = StreamResponse(self.frames, send_timeout_s=send_timeout_s)

    def _closed(self) -> None:
        self.closes += 1

    @property
    def generator_closed(self) -> bool:
        """The subscriber's generator has finished (its `finally` ran), not merely paused."""
        assert isinstance(self.frames, types.AsyncGeneratorType)
        return self.frames.ag_frame is None

    def serve(self, client: Client) -> asyncio.Task[None]:
        return asyncio.create_task(self.response(SCOPE, client.receive, client.send))


def frame(event: LogEvent) -> bytes:
    return ENCODER.frame(event.id, event.type, event.payload)


def node(name: str) -> dict[str, Any]:
    return {"node": name, "ns": [], "step": 1}


def pings_between(body: bytes, frames: Sequence[bytes]) -> list[int]:
    """`body` as pings and `frames`, in order: the number of pings before each frame and after
    the last. Fails if `body` is anything else (a ping inside a frame, a frame out of order)."""
    counts: list[int] = []
    pos = 0
    for expected in [*frames, None]:
        pings = 0
        while body.startswith(PING, pos):
            pos += len(PING)
            pings += 1
        counts.append(pings)
        if expected is None:
            break
        assert body[pos : pos + len(expected)] == expected, (pos, body[pos : pos + 200])
        pos += len(expected)
    assert pos == len(body), body[pos : pos + 200]
    return counts


def test_a_client_that_takes_no_bytes_is_dropped_quietly_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The second body send never completes: after `send_timeout_s` the send is cancelled, the
    response returns without raising, logs one "dropped client" warning naming the client,
    and the subscriber's generator is closed (on_close ran, no open stream counted). The run's
    log is untouched: still open, still taking appends."""

    async def scenario() -> tuple[Stream, Client, MemoryEventLog, LogEvent]:
        log = MemoryEventLog("run")
        stream = Stream(log, send_timeout_s=0.2)
        client = Client(block_at=2)
        task = stream.serve(client)
        first = log.append("node_start", node("a"))
        await client.sent(1)
        assert stream.fanout.open_streams == 1 and stream.closes == 0
        log.append("node_end", node("a"))  # its send blocks for good
        await asyncio.wait_for(task, WAIT_S)  # returns: SendTimeoutError did not escape
        return stream, client, log, first

    with caplog.at_level(logging.WARNING, logger="app.streaming"):
        stream, client, log, first = asyncio.run(scenario())
    assert client.bodies == [frame(first)]
    assert END not in client.messages  # cut off, not ended
    assert client.blocked_send_cancelled
    dropped = [
        r
        for r in caplog.records
        if r.name == "app.streaming" and r.levelno == logging.WARNING
        if r.getMessage().startswith("dropped client")
    ]
    assert len(dropped) == 1, caplog.records
    assert str(CLIENT) in dropped[0].getMessage() and "0.2s" in dropped[0].getMessage()
    assert dropped[0].exc_info is None  # without a traceback
    assert stream.closes == 1
    assert stream.fanout.open_streams == 0
    assert stream.generator_closed
    assert not log.closed
    assert log.append("node_start", node("b")).id == 3


def test_a_client_that_disconnects_mid_run_ends_its_response_and_leaves_no_task() -> None:
    """The client leaves after two frames while the run is live (log open, nothing more
    appended, the subscriber waiting on the log): the response, awaited in the test's own task,
    returns at once; the subscriber is closed; the only task left besides the test's is
    sse-starlette's one shutdown watcher per loop, and the test's task has no cancellation
    pending (anyio's cancel of the response did not leak out, nor was it swallowed)."""

    async def scenario() -> tuple[Stream, Client, MemoryEventLog, list[LogEvent], set[str]]:
        log = MemoryEventLog("run")
        stream = Stream(log)
        client = Client(disconnect_after=2)
        events: list[LogEvent] = []

        async def run() -> None:
            for name in ("a", "b"):
                events.append(log.append("node_start", node(name)))
                await client.sent(len(events))

        me = asyncio.current_task()
        assert me is not None
        driver = asyncio.create_task(run())
        async with asyncio.timeout(WAIT_S):  # no send timeout, no ping: only the disconnect
            await stream.response(SCOPE, client.receive, client.send)
        await driver
        assert me.cancelling() == 0
        left = {
            getattr(task.get_coro(), "__qualname__", repr(task))
            for task in asyncio.all_tasks()
            if task is not me
        }
        return stream, client, log, events, left

    stream, client, log, events, left = asyncio.run(scenario())
    assert client.disconnects == 1
    assert client.bodies == [frame(e) for e in events]
    assert END not in client.messages
    assert stream.closes == 1
    assert stream.fanout.open_streams == 0
    assert stream.generator_closed
    assert left <= {sse_starlette._shutdown_watcher.__qualname__}, left
    assert not log.closed


def test_frames_are_the_events_native_frames_in_order_and_the_body_ends_with_the_log() -> None:
    """Two events already in the log go out as one send of both frames; each live event as a
    send of exactly its frame; closing the log ends the body (`more_body` False, last), and the
    subscriber closes."""

    async def scenario() -> tuple[Stream, Client, list[LogEvent]]:
        log = MemoryEventLog("run")
        events = [
            log.append("metadata", {"run_id": "run", "thread_id": "t", "graph": "g"}),
            log.append("node_start", node("a")),
        ]
        stream = Stream(log)
        client = Client()
        task = stream.serve(client)
        await client.sent(1)
        for event_type, data in (
            ("update", {"node": "a", "ns": [], "values": {"x": 1}}),
            ("node_end", node("a")),
            ("end", {"status": "success"}),
        ):
            events.append(log.append(event_type, data))
            await client.sent(len(events) - 1)
        log.close()
        await asyncio.wait_for(task, WAIT_S)
        return stream, client, events

    stream, client, events = asyncio.run(scenario())
    start, *bodies, end = client.messages
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert end == END
    assert [m["more_body"] for m in bodies] == [True] * len(bodies)
    assert client.bodies == [frame(events[0]) + frame(events[1])] + [frame(e) for e in events[2:]]
    assert stream.closes == 1
    assert stream.fanout.open_streams == 0


def test_a_quiet_run_gets_the_subscribers_pings_between_frames() -> None:
    """With `ping_s` 0.05, pings (`: ping`, each its own send) come before the first event,
    between events and after the last while the run is quiet, and only there."""

    async def scenario() -> tuple[Client, list[LogEvent]]:
        log = MemoryEventLog("run")
        stream = Stream(log, ping_s=0.05)
        client = Client()
        task = stream.serve(client)
        events: list[LogEvent] = []
        await client.until(lambda: client.bodies.count(PING) >= 2)
        for name in ("a", "b"):
            events.append(log.append("node_start", node(name)))
            await client.pings_after(frame(events[-1]), 2)
        log.close()
        await asyncio.wait_for(task, WAIT_S)
        return client, events

    client, events = asyncio.run(scenario())
    frames = [frame(e) for e in events]
    assert all(body == PING or body in frames for body in client.bodies), client.bodies
    counts = pings_between(b"".join(client.bodies), frames)
    assert all(count >= 2 for count in counts), counts
    assert client.messages[-1] == END


def test_a_big_frame_is_sent_in_slices_with_no_ping_inside_it() -> None:
    """A 200 KB event over a slow link (each slice takes three ping intervals to send): its
    frame goes out in slices of at most SEND_BYTES whose bytes joined are the frame exactly;
    pings still come while the run is quiet, but only between frames."""
    ping_s = 0.05

    async def scenario() -> tuple[Client, list[LogEvent]]:
        log = MemoryEventLog("run")
        stream = Stream(log, ping_s=ping_s, send_timeout_s=WAIT_S)
        client = Client(slow_s=3 * ping_s)
        task = stream.serve(client)
        events = [log.append("node_start", node("a"))]
        await client.pings_after(frame(events[0]), 1)
        events.append(log.append("update", {"node": "a", "ns": [], "values": "x" * 200_000}))
        # Until the big frame's bytes are out (counted without the pings: a ping inside the
        # frame must fail the checks below, not this wait), then one ping after it.
        size = len(frame(events[0])) + len(frame(events[1]))
        await client.until(lambda: sum(len(b) for b in client.bodies if b != PING) >= size)
        before = client.bodies.count(PING)
        await client.until(lambda: client.bodies.count(PING) > before)
        events.append(log.append("node_end", node("a")))
        await client.pings_after(frame(events[-1]), 0)
        log.close()
        await asyncio.wait_for(task, WAIT_S)
        return client, events

    client, events = asyncio.run(scenario())
    frames = [frame(e) for e in events]
    assert len(frames[1]) > 3 * SEND_BYTES
    assert all(len(body) <= SEND_BYTES for body in client.bodies)
    counts = pings_between(b"".join(client.bodies), frames)
    # The sends that make up the big frame: between the pings after the first frame and the
    # pings before the last; their bytes are the frame's, and there are several of them.
    start = client.bodies.index(frames[0]) + 1 + counts[1]
    end = len(client.bodies) - counts[3] - 1 - counts[2]
    pieces = client.bodies[start:end]
    assert b"".join(pieces) == frames[1]
    assert PING not in pieces
    assert len([p for p in pieces if len(p) > Client.SLOW_OVER]) == -(-len(frames[1]) // SEND_BYTES)
    assert counts[1] >= 1 and counts[2] >= 1, counts
    assert client.messages[-1] == END
