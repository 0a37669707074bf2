"""One subscriber's view of a run: read the log from a cursor, merge while lagging, shape rate.

Design record
- Lag is detected by construction: the frames generator is only resumed when sse-starlette has
  finished sending the previous chunk. A client whose connection is full blocks that send, so
  when the generator runs again everything that piled up in the log meanwhile is read as one
  batch, and consecutive `token` events of one message in that batch become one frame whose id
  is the last merged event's id. A client that keeps up gets one frame per event.
- `max_rate` sends at most that many frames a second: each slot takes the first waiting event,
  or the merge of the waiting consecutive tokens of one message.
- Nothing but consecutive tokens of one message is ever merged; nothing is dropped; order is
  the log's order. The client's cursor is always the id of the last event it was sent.
- A lagging reader takes at most `BATCH` events per send, so what one slow client holds in
  its transport buffer is bounded by the batch, not by how far behind it is (merged token
  frames are bounded the same way).
- A send that takes no bytes for SEND_TIMEOUT_S raises sse-starlette's SendTimeoutError; the
  response ends and the connection is closed (the client can reconnect with Last-Event-ID).
- One send is at most SEND_BYTES (64 KiB); a bigger frame goes out in slices. Why: uvicorn's
  flow control waits for the socket to drain *between* sends, so a single send is copied into
  the transport's buffer whole. An `update` carrying a long answer (2 MB for a 20,000-token
  run) sent to 100 readers whose sockets were full cost 200 MB of buffers (found with the
  bench's stalled-clients case: 2,023,280 bytes buffered per connection). In slices, a stalled
  reader holds at most one slice beyond the high-water mark.
- Coalescing: while tokens come faster than one per window, the reader pauses one window
  after sending one, so what arrives meanwhile goes out as one merged frame in one send. Why:
  the profile of one fast stream (make bench, cost case; py-spy) had a send per token through
  sse-starlette and uvicorn (a cancel scope, the ASGI send chain, a socket write) and a
  wake-up of this generator per token; coalescing took the service from ~295 to ~220 us of
  CPU per token (2.0x to 1.5x `ChatOpenAI.astream` alone), and the client reads fewer frames
  too. A token after a pause is sent at once, so first-token latency and paced streams
  (slower than one token per window) are untouched; a fast stream's tokens wait at most one
  window. A reader with more than a BATCH waiting never pauses (a replay goes at full speed).
- The window follows the load (`coalesce_window`): 5 ms up to 10 open streams, then 0.5 ms per
  open stream, at most 50 ms, so fast streams' readers wake about 2,000 times a second in all
  whatever their number. Why: with 100 readers of one fast run beside 10 other streams (bench
  slow_clients case), a fixed 5 ms window had the readers wake 20,000 times a second, and the
  other streams got 0.74x their throughput alone; with this window 0.91x, and the throughput
  at 100 fast streams went from 1.24x to 1.39x the naive forwarder. Paced streams did not
  change (1,000 paced streams: p99 gap 571-661 ms with 5 ms, 632-668 ms with 50 ms).
- Readers of one run share their merges: a coalescing pause ends on the window's boundary on
  the loop's clock, every reader waking at one boundary reads up to the log's last id at that
  boundary, and the merged sends of each range read since then are kept on the log. Why: 100
  readers of one fast run each merged the same tokens; with the model client made cheaper
  (graphs/models.py) that was 14% of the event loop in the stalled-clients case (py-spy).
  Server CPU for 100 live readers of one 20,000-token run: 2.69 -> 1.71 s. Without reading to
  the boundary's id the readers drifted apart for good (the run appends between their turns),
  and with one cached range they evicted each other: both were measured before this design.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from app.runs.log import Event, EventLog
from app.sse.encoder import PING

log = logging.getLogger("app.sse")

BATCH = 256
COALESCE_MIN_S = 0.005
COALESCE_MAX_S = 0.05
COALESCE_PER_STREAM_S = 0.0005
SEND_BYTES = 64 * 1024
HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


_TEXT_KEY = b',"text":"'
_TOKEN_TAIL = b'"}\n\n'


def _token_head(frame: bytes) -> tuple[int, bytes] | None:
    """Where a token frame's data starts, and its data up to and including the text key
    (`{"node":..,"message_id":..,"text":"`); None if the frame is not in that shape."""
    if not frame.endswith(_TOKEN_TAIL):
        return None
    start = frame.find(b"\ndata: ") + 7
    # The text is the last key, and an escaped JSON string holds no bare `"`, so the last
    # `,"text":"` in the frame is the key itself.
    cut = frame.rfind(_TEXT_KEY)
    if start < 7 or cut < start:
        return None
    return start, frame[start : cut + len(_TEXT_KEY)]


def _take(events: Sequence[Event], start: int) -> tuple[bytes, int]:
    """The frame for events[start:] up to the end of a run of mergeable tokens; next index.

    Tokens are merged on the bytes, without decoding them: escaped JSON strings concatenate
    into the escape of the concatenation, so `{"node":N,"message_id":M,"text":"a"}` and the same
    head with `"b"` give the head with `"ab"`, byte for byte what encoding the merged dict gives
    (tests/sse/test_encoder.py). A token merges with the previous one when its data starts
    with the same head (same node, same message). Why: decoding every token a lagging reader
    merged was half the event loop's samples with 100 stalled readers (py-spy, bench
    slow_clients case); this costs ~0.2 us a token."""
    first = events[start]
    if first.type != "token" or start + 1 == len(events) or events[start + 1].type != "token":
        return first.frame, start + 1
    found = _token_head(first.frame)
    if found is None:
        return first.frame, start + 1
    at, head = found
    texts = [first.frame[at + len(head) : -len(_TOKEN_TAIL)]]
    end = start + 1
    while end < len(events) and events[end].type == "token":
        frame = events[end].frame
        at = frame.find(b"\ndata: ") + 7
        if not (frame.startswith(head, at) and frame.endswith(_TOKEN_TAIL)):
            break
        texts.append(frame[at + len(head) : -len(_TOKEN_TAIL)])
        end += 1
    if end == start + 1:
        return first.frame, end
    return b"id: %d\nevent: token\ndata: %s%s%s" % (
        events[end - 1].id,
        head,
        b"".join(texts),
        _TOKEN_TAIL,
    ), end


def sends(frames: Sequence[bytes]) -> Iterator[bytes]:
    """`frames` as sends of at most SEND_BYTES: small frames joined, a big one sliced (an SSE
    frame may span several sends; clients join the bytes). No copy of a big frame is made
    beyond the slice being sent, so many readers of one big event share its bytes."""
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


def merge_frames(events: Sequence[Event]) -> list[bytes]:
    """All `events` as frames, consecutive tokens of one message merged (pure; tested)."""
    frames: list[bytes] = []
    i = 0
    while i < len(events):
        frame, i = _take(events, i)
        frames.append(frame)
    return frames


def _boundary(event_log: EventLog, window: float, tick: int) -> int:
    """The log's last id when the first of its readers woke at this window boundary (`tick`:
    the boundary the reader slept until, in windows), or at a later one.

    Readers that wake at one boundary read up to that id, not to the log's end at the moment
    each of them runs: the run appends between their turns, and readers that read different
    ends would stay apart (different cursors) for the rest of the run. Reading to the same
    end, they come out at the same cursor and share every later merge (`_shared_sends`).
    Tokens appended meanwhile wait for the next boundary: within the window. A reader that
    wakes late, after others have marked a later boundary, reads to that later mark: any id
    the log has reached is a correct end, and it rejoins the others."""
    mark = event_log.boundary
    if mark is None or mark[0][0] != window or mark[0][1] < tick:
        mark = event_log.boundary = ((window, tick), event_log.last_id)
        event_log.shared = {}  # the merges of the last boundary are not read again
    return mark[1]


def _shared_sends(event_log: EventLog, cursor: int, events: Sequence[Event]) -> list[bytes]:
    """The sends for `events` (read after `cursor`), merged once for all readers of the log
    that read the same range: the ranges merged since the last window boundary are kept on
    the log (`shared`). Readers that keep up with a fast run wake on the same boundaries and
    read to the same end (see `frames`, `_boundary`), so they read the same ranges (more than
    one when more than a BATCH came in the window): one merge, and one set of bytes in their
    transports, instead of one per reader."""
    key = (cursor, events[-1].id)
    parts = event_log.shared.get(key)
    if parts is None:
        parts = event_log.shared[key] = list(sends(merge_frames(events)))
    return parts


_open_streams = 0  # frames() generators alive in this process


def coalesce_window() -> float:
    """The coalescing window for the current load: COALESCE_PER_STREAM_S per open stream,
    within [COALESCE_MIN_S, COALESCE_MAX_S]. It keeps the wake-ups of fast streams' readers
    to about 1 / COALESCE_PER_STREAM_S a second in all (2,000/s) up to 100 open streams."""
    return min(COALESCE_MAX_S, max(COALESCE_MIN_S, _open_streams * COALESCE_PER_STREAM_S))


async def frames(
    event_log: EventLog,
    cursor: int,
    max_rate: float | None = None,
    on_close: Callable[[], None] | None = None,
    coalesce_s: float | None = None,
    ping_s: float = 15.0,
) -> AsyncIterator[bytes]:
    """The bytes to send to one subscriber, from the event after `cursor` to the run's end,
    with a `: ping` comment whenever the run has been quiet for `ping_s`. `coalesce_s`: a
    fixed coalescing window (0: none); None: `coalesce_window()`, which follows the load."""
    global _open_streams
    interval = 1.0 / max_rate if max_rate else 0.0
    clock = asyncio.get_running_loop().time
    last_token_at = float("-inf")
    upto = 0  # after a window boundary: read no further than the run had then (`_boundary`)
    _open_streams += 1
    try:
        while True:
            events = event_log.after(cursor, BATCH if upto <= cursor else min(BATCH, upto - cursor))
            if not events:
                if event_log.closed:
                    return
                try:
                    async with asyncio.timeout(ping_s):
                        await event_log.wait(cursor)
                except TimeoutError:
                    yield PING
                continue
            if interval:
                frame, taken = _take(events, 0)
                cursor = events[taken - 1].id
                for part in sends((frame,)):
                    yield part
                await asyncio.sleep(interval)
                continue
            if len(events) == 1:
                parts: Iterable[bytes] = sends((events[0].frame,))
            elif upto > cursor:  # a read to a window boundary, as the others at that boundary
                parts = _shared_sends(event_log, cursor, events)
            else:
                parts = sends(merge_frames(events))
            cursor = events[-1].id
            for part in parts:
                yield part
            if len(events) == BATCH or events[-1].type != "token":
                continue  # more is waiting already, or not a token: no reason to wait
            window = coalesce_window() if coalesce_s is None else coalesce_s
            if window:
                now = clock()
                if now - last_token_at < window:
                    # To the window's next boundary on the loop's clock, not a window from
                    # now, so readers of one run wake together and can share one merge.
                    tick = int(now // window) + 1
                    await asyncio.sleep(tick * window - now)
                    now = clock()
                    upto = _boundary(event_log, window, tick)
                last_token_at = now
    finally:
        _open_streams -= 1
        if on_close is not None:
            on_close()


class RunEventStream(EventSourceResponse):
    """sse-starlette's response with our headers and a quiet send timeout.

    Its own ping task is off (`ping=0`): `frames()` sends `: ping` itself, between frames. A
    ping from another task could land between two slices of one big frame and break it."""

    def __init__(self, content: AsyncIterator[bytes], *, send_timeout_s: float) -> None:
        super().__init__(content, headers=HEADERS, ping=0, send_timeout=send_timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self._dropped(scope)
        except BaseExceptionGroup as group:
            # The data send and the ping can both time out at once: then sse-starlette's task
            # group raises a group of SendTimeoutErrors instead of a single one.
            _, rest = group.split(SendTimeoutError)
            if rest is not None:
                raise
            self._dropped(scope)

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        """sse-starlette's per-send timeout, on asyncio's own `timeout` instead of an anyio
        cancel scope: the same behaviour, paid on every send. The anyio scope was ~4% of the
        event loop's samples with 100 streams (py-spy, bench throughput case); on uvloop it
        costs 7.6 us a send against 5.4 us for `asyncio.timeout` (microbenchmark). This
        overrides a private method: if sse-starlette renames it, its own (slower) version runs
        and the behaviour is unchanged (tests/api/test_backpressure.py covers the timeout)."""
        if self.send_timeout is None:
            await send(message)
            return
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise SendTimeoutError() from None

    def _dropped(self, scope: Scope) -> None:
        log.warning(
            "dropped client %s: it took no bytes for %ss", scope.get("client"), self.send_timeout
        )
