"""A gap in a run's ids is never silent (API.md): the reader gets `error` `events_expired` and the
run's `end`; the one gap made by design (a dead worker's run closed above its id ceiling) is
not one."""

from __future__ import annotations

import asyncio

import orjson

from app.engine import events, recovery
from app.engine.codec import LogEvent
from app.engine.run import StoredLog
from app.protocols.native.encoder import NativeEncoder
from app.protocols.native.schemas import DEFAULT_SELECTION
from app.streaming.subscriber import FanOut


def _read(log: StoredLog, cursor: int) -> list[tuple[int, str, dict[str, object]]]:
    async def main() -> list[bytes]:
        stream = FanOut().frames("run", log, cursor, NativeEncoder(), DEFAULT_SELECTION)
        return [part async for part in stream]

    out = []
    for frame in b"".join(asyncio.run(main())).split(b"\n\n"):
        fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
        if b"event" in fields:
            out.append(
                (int(fields[b"id"]), fields[b"event"].decode(), orjson.loads(fields[b"data"]))
            )
    return out


def _token(i: int) -> LogEvent:
    return LogEvent.of(i, "token", {"node": "llm", "ns": [], "message_id": "m", "text": f"{i} "})


END = events.end("completed", "done", {}, 1.0)


def test_a_reader_asking_for_events_that_are_gone_gets_events_expired_and_the_end() -> None:
    kept = [*(_token(i) for i in range(10, 13)), LogEvent.of(13, "end", END)]
    got = _read(StoredLog(kept), cursor=4)  # 5..9 are gone
    assert [(i, kind) for i, kind, _ in got] == [(4, "error"), (13, "end")]
    assert got[0][2]["code"] == "events_expired"
    # a reader whose cursor is past the gap reads on as usual
    on = _read(StoredLog(kept), cursor=10)
    assert "".join(str(data.get("text", "")) for _, _, data in on) == "11 12 "
    assert [kind for _, kind, _ in on][-1] == "end" and "error" not in [k for _, k, _ in on]


def test_the_ids_a_crash_skipped_are_not_a_gap() -> None:
    error = events.error(recovery.WORKER_LOST, recovery.WORKER_LOST_MESSAGE)
    end = events.end("failed", recovery.WORKER_LOST, {}, None)
    kept = [*(_token(i) for i in range(1, 4)), LogEvent.of(4097, "error", error)]
    got = _read(StoredLog([*kept, LogEvent.of(4098, "end", end)]), cursor=2)
    assert [(i, kind) for i, kind, _ in got] == [(3, "token"), (4097, "error"), (4098, "end")]
    assert got[1][2]["code"] == "worker_lost"
