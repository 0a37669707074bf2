"""One subscriber's view of a run: read the log from a cursor, merge while lagging, shape rate.

Design record
- Lag is detected by construction: the generator is only resumed when the response has finished
  sending the previous chunk. A client whose connection is full blocks that send, so when the
  generator runs again everything that piled up in the log meanwhile is read as one batch, and
  consecutive `token` events of one message in that batch become one frame whose id is the last
  merged event's id. A client that keeps up gets one frame per event.
- `max_rate` sends at most that many frames a second: each slot takes the first waiting event,
  or the merge of the waiting consecutive tokens of one message. At shutdown pacing stops
  (`FanOut.stop_pacing`): the rest goes out at once, merged as for a lagging client, so a
  paced stream gets its `end` before the server cuts the streams still open.
- A gap in the ids read (events no longer kept) is never silent: the reader gets `error`
  `events_expired` (framed with the last id it read) and, if the run has ended, its `end`. Ids
  skip by design only before a dead worker's run's `error` (app/engine/ids.py).
- Nothing but consecutive tokens of one message is ever merged; nothing this subscriber selected
  is dropped; order is the log's order. The cursor is the id of the last event read (sent, or
  not selected): a reconnect with the last id sent reads the unselected ones again and skips
  them again.
- A lagging reader takes at most `BATCH` events per send, so what one slow client holds in
  its transport buffer is bounded by the batch, not by how far behind it is.
- One send is at most SEND_BYTES (64 KiB); a bigger frame goes out in slices. Why: uvicorn's
  flow control waits for the socket to drain *between* sends, so a single send is copied into
  the transport's buffer whole, once per stalled reader (docs/perf/0002-stalled-clients.md).
- Coalescing: while tokens come faster than one per window, the reader pauses one window after
  sending one, so what arrives meanwhile goes out as one merged frame in one send. Why: a send
  per token through sse-starlette and uvicorn was the largest cost per token we controlled.
  A token after a pause is sent at once (first token, paced streams); a fast stream's tokens
  wait at most one window; a reader with a BATCH waiting never pauses (a replay goes at full
  speed).
- The window follows the load (`FanOut.window`): 5 ms up to 10 open streams, then 0.5 ms per
  open stream, at most 50 ms, so fast streams' readers wake about 2,000 times a second in all
  whatever their number. Why: with a fixed window, the more readers a fast run had, the more
  often they woke, until they starved the other streams (docs/perf/0008-coalescing-by-load.md).
- Readers of one run share their merges: a coalescing pause ends on the window's boundary on
  the loop's clock, every reader waking at one boundary reads up to the log's last id at that
  boundary, and the sends of each range read since then are kept (per run, per wire format and
  selection, in the `FanOut`) until the next boundary. Why: 100 readers of one fast run each
  merged the same tokens. Without reading to the boundary's id the readers drift apart for
  good (the run appends between their turns); with one cached range they evict each other.
- Fan-out state (open streams, shared merges) is an object made in the lifespan, not a module
  global, so two apps in one process (tests) do not share it.
Measurements behind these rules: docs/perf/ (0001, 0002, 0008, 0011).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from app.engine import events, recovery
from app.engine.codec import LogEvent, dumps, merge_tokens
from app.engine.ports import EventLogReader
from app.streaming.encoder import BIG, Encoder, encode_merged
from app.streaming.selection import Selection

BATCH = 256
EVENTS_EXPIRED = dumps(
    events.error(
        "events_expired",
        "the events after the id asked for are no longer kept; start again from the run's record",
    )
)
COALESCE_MIN_S = 0.005
COALESCE_MAX_S = 0.05
COALESCE_PER_STREAM_S = 0.0005
SEND_BYTES = BIG


def _skipped_by_a_crash(event: LogEvent) -> bool:
    """Ids skip, by design, only before the `error` of a run whose worker died
    (app/engine/ids.py): any other gap is events that are gone."""
    return event.type == "error" and event.data.get("code") in (
        recovery.INTERRUPTED_BY_RESTART,
        recovery.WORKER_LOST,
    )


def sends(frames: Iterable[bytes]) -> Iterator[bytes]:
    """`frames` as sends of at most SEND_BYTES: small frames joined, a big one sliced (a frame
    may span several sends; clients join the bytes). No copy of a big frame is made beyond the
    slice being sent, so many readers of one big event share its bytes."""
    pending: list[bytes] = []
    size = 0
    for frame in frames:
        if size + len(frame) > SEND_BYTES and pending:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, size = [], 0
        if len(frame) > SEND_BYTES:
            for i in range(0, len(frame), SEND_BYTES):
                yield frame[i : i + SEND_BYTES]
            continue
        pending.append(frame)
        size += len(frame)
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)


@dataclass
class _Shared:
    """What the readers of one run share: the log's last id at the newest window boundary,
    `((window, tick), last id)`, and the sends of each range merged since, by
    `(encoder key, selection, cursor, last id)`."""

    readers: int = 0
    boundary: tuple[tuple[float, int], int] | None = None
    sends: dict[tuple[str, Selection, int, int], list[bytes]] = field(default_factory=dict)


class FanOut:
    """Every subscriber of this process: how many are open (the coalescing window follows it)
    and, per run, the merges its readers share. Made once in the lifespan."""

    def __init__(self) -> None:
        self.open_streams = 0
        # What app/metrics.py reads at a scrape: plain counts, added once per send batch.
        self.sent: dict[str, int] = {}  # events sent to clients, by type
        self.tokens_merged = 0  # token events sent merged into the frame of the token before
        self.disconnects: dict[str, int] = {}  # streams ended before the run's end, by reason
        self._runs: dict[str, _Shared] = {}
        self._unpaced = asyncio.Event()

    def stop_pacing(self) -> None:
        """From now on `max_rate` is ignored: every stream sends what it has left at once."""
        self._unpaced.set()

    @property
    def stopping(self) -> bool:
        """The shutdown has cut the runs' grace short: streams are ending for it."""
        return self._unpaced.is_set()

    def disconnected(self, reason: str) -> None:
        """A stream ended before its run's end: `client_gone`, `send_timeout`, `shutdown`."""
        self.disconnects[reason] = self.disconnects.get(reason, 0) + 1

    def _count(self, events: Sequence[LogEvent]) -> None:
        """Count one send batch: its events by type, and the tokens merged in it."""
        sent = self.sent
        previous = ""
        merged = 0
        for event in events:
            kind = event.type
            sent[kind] = sent.get(kind, 0) + 1
            if kind == "token" and previous == "token":
                merged += 1
            previous = kind
        self.tokens_merged += merged

    def window(self) -> float:
        """The coalescing window for the current load: COALESCE_PER_STREAM_S per open stream,
        within [COALESCE_MIN_S, COALESCE_MAX_S]."""
        return min(COALESCE_MAX_S, max(COALESCE_MIN_S, self.open_streams * COALESCE_PER_STREAM_S))

    async def frames(
        self,
        run_id: str,
        log: EventLogReader,
        cursor: int,
        encoder: Encoder,
        selection: Selection,
        *,
        max_rate: float | None = None,
        on_close: Callable[[], None] | None = None,
        coalesce_s: float | None = None,
        ping_s: float = 15.0,
        on_complete: Callable[[], None] | None = None,
    ) -> AsyncIterator[bytes]:
        """The bytes to send to one subscriber, from the event after `cursor` to the run's end,
        with the encoder's ping whenever the run has been quiet for `ping_s`; `on_complete` once the
        last of it was sent. `coalesce_s`: a
        fixed coalescing window (0: none); None: `window()`, which follows the load."""
        shared = self._runs.get(run_id)
        if shared is None:
            shared = self._runs[run_id] = _Shared()
        shared.readers += 1
        self.open_streams += 1
        try:
            async for part in self._frames(
                shared, log, cursor, encoder, selection, max_rate, coalesce_s, ping_s
            ):
                yield part
            if on_complete is not None:
                on_complete()  # the run's end was sent: not a disconnect
        finally:
            self.open_streams -= 1
            shared.readers -= 1
            if shared.readers == 0:
                self._runs.pop(run_id, None)
            if on_close is not None:
                on_close()

    async def _frames(
        self,
        shared: _Shared,
        log: EventLogReader,
        cursor: int,
        encoder: Encoder,
        selection: Selection,
        max_rate: float | None,
        coalesce_s: float | None,
        ping_s: float,
    ) -> AsyncIterator[bytes]:
        interval = 1.0 / max_rate if max_rate else 0.0
        clock = asyncio.get_running_loop().time
        last_token_at = float("-inf")
        upto = 0  # after a window boundary: read no further than the run had then (`_boundary`)
        while True:
            limit = BATCH if upto <= cursor else min(BATCH, upto - cursor)
            batch = log.after(cursor, limit)
            if not batch:
                if log.closed:
                    return
                try:
                    async with asyncio.timeout(ping_s):
                        await log.wait(cursor)
                except TimeoutError:
                    yield encoder.ping
                continue
            if batch[-1].id - cursor != len(batch):  # ids skip somewhere in this batch
                gap = next(i for i, e in enumerate(batch) if e.id != cursor + 1 + i)
                if gap:
                    batch = batch[:gap]  # up to it as usual; the gap is met on the next read
                elif not _skipped_by_a_crash(batch[0]):
                    yield encoder.frame(cursor, "error", EVENTS_EXPIRED)
                    if log.closed:  # what is kept after the gap would hide it: the end only
                        end = log.after(log.last_id - 1, 1)
                        yield encoder.frame(end[0].id, end[0].type, end[0].payload)
                        return
            events = selection.keep(batch)
            if not events:
                cursor = batch[-1].id
                continue
            if interval and not self._unpaced.is_set():
                payload, taken = merge_tokens(events, 0)
                self._count(events[:taken])
                frame = encoder.frame(events[taken - 1].id, events[0].type, payload)
                cursor = events[taken - 1].id if taken < len(events) else batch[-1].id
                for part in sends((frame,)):
                    yield part
                # The slot's wait, with pings when it is longer than the ping interval.
                deadline = clock() + interval
                while not self._unpaced.is_set():
                    left = deadline - clock()
                    if left <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(left, ping_s)):
                            await self._unpaced.wait()
                    if not self._unpaced.is_set() and deadline - clock() > 0:
                        yield encoder.ping
                continue
            if len(events) == 1:
                kind = events[0].type
                self.sent[kind] = self.sent.get(kind, 0) + 1
                parts: Iterable[bytes] = sends(_framed(encoder, events[0]))
            elif upto > cursor:  # a read to a window boundary, as the others at that boundary
                parts = _shared_sends(shared, encoder, selection, cursor, batch[-1].id, events)
            else:
                parts = sends(encode_merged(encoder, events))
            if len(events) > 1:
                self._count(events)
            cursor = batch[-1].id
            for part in parts:
                yield part
            if len(batch) == BATCH or events[-1].type != "token":
                continue  # more is waiting already, or not a token: no reason to wait
            window = self.window() if coalesce_s is None else coalesce_s
            if window:
                now = clock()
                if now - last_token_at < window:
                    # To the window's next boundary on the loop's clock, not a window from
                    # now, so readers of one run wake together and can share one merge.
                    tick = int(now // window) + 1
                    await asyncio.sleep(tick * window - now)
                    now = clock()
                    upto = _boundary(shared, log, window, tick)
                last_token_at = now


def _framed(encoder: Encoder, event: LogEvent) -> Sequence[bytes]:
    """One event's frame; a big one as pieces around the shared payload (see `sends`)."""
    if len(event.payload) > SEND_BYTES:
        return encoder.parts(event.id, event.type, event.payload)
    return (encoder.frame(event.id, event.type, event.payload),)


def _boundary(shared: _Shared, log: EventLogReader, window: float, tick: int) -> int:
    """The log's last id when the first of its readers woke at this window boundary (`tick`:
    the boundary the reader slept until, in windows), or at a later one.

    Readers that wake at one boundary read up to that id, not to the log's end at the moment
    each of them runs: the run appends between their turns, and readers that read different
    ends would stay apart (different cursors) for the rest of the run. Reading to the same
    end, they come out at the same cursor and share every later merge (`_shared_sends`).
    Tokens appended meanwhile wait for the next boundary: within the window. A reader that
    wakes late, after others have marked a later boundary, reads to that later mark: any id
    the log has reached is a correct end, and it rejoins the others."""
    mark = shared.boundary
    if mark is None or mark[0][0] != window or mark[0][1] < tick:
        mark = shared.boundary = ((window, tick), log.last_id)
        shared.sends = {}  # the merges of the last boundary are not read again
    return mark[1]


def _shared_sends(
    shared: _Shared,
    encoder: Encoder,
    selection: Selection,
    cursor: int,
    last: int,
    events: Sequence[LogEvent],
) -> list[bytes]:
    """The sends for `events` (read after `cursor` up to `last`), merged once for all readers of
    the run that read the same range with the same encoder and selection."""
    key = (encoder.key, selection, cursor, last)
    parts = shared.sends.get(key)
    if parts is None:
        parts = shared.sends[key] = list(sends(encode_merged(encoder, events)))
    return parts
