"""The native wire format, byte for byte: today's frames from the log's payloads."""

from __future__ import annotations

import asyncio

from app.engine.codec import LogEvent
from app.log.memory import MemoryEventLog
from app.protocols.native.encoder import NativeEncoder, encode, encode_json, frame
from app.protocols.native.schemas import DEFAULT_SELECTION
from app.streaming.encoder import encode_merged
from app.streaming.subscriber import FanOut


def test_json_event_frame_golden_bytes() -> None:
    assert encode_json(7, "token", {"text": "a\nb", "é": "🌍"}) == (
        b'id: 7\nevent: token\ndata: {"text":"a\\nb","\xc3\xa9":"\xf0\x9f\x8c\x8d"}\n\n'
    )


def test_a_token_frame_is_the_payload_framed_as_before() -> None:
    """The bytes a client gets for a token are exactly what the service sent before the log
    held payloads (`id`, `event`, one `data:` line of compact JSON), with `ns` added."""
    event = LogEvent.of(3, "token", {"node": "llm", "ns": [], "message_id": "m", "text": "hi"})
    assert NativeEncoder.frame(event.id, event.type, event.payload) == (
        b'id: 3\nevent: token\ndata: {"node":"llm","ns":[],"message_id":"m","text":"hi"}\n\n'
    )


def test_the_pieces_of_a_big_frame_join_to_the_frame_and_share_the_payload() -> None:
    payload = b'{"values":"' + b"x" * 100_000 + b'"}'
    head, body, tail = NativeEncoder.parts(9, "update", payload)
    assert head + body + tail == frame(9, "update", payload)
    assert body is payload  # no copy per reader


def test_multiline_data_becomes_several_data_lines() -> None:
    assert encode("one\ntwo\r\nthree\rfour", event="x", event_id=1) == (
        b"id: 1\nevent: x\ndata: one\ndata: two\ndata: three\ndata: four\n\n"
    )


def test_id_and_event_cannot_break_the_frame() -> None:
    assert encode("d", event="evil\nevent: end", event_id="1\n2") == (
        b"id: 12\nevent: evilevent: end\ndata: d\n\n"
    )


def _tok(i: int, text: str, message: str = "m1") -> LogEvent:
    return LogEvent.of(i, "token", {"node": "llm", "ns": [], "message_id": message, "text": text})


def test_merged_tokens_frame_as_one_event_with_the_last_id() -> None:
    events = [_tok(1, "a"), _tok(2, "b"), _tok(3, "c", "m2"), LogEvent.of(4, "node_end", {})]
    assert encode_merged(NativeEncoder(), events) == [
        encode_json(2, "token", {"node": "llm", "ns": [], "message_id": "m1", "text": "ab"}),
        frame(3, "token", events[2].payload),
        frame(4, "node_end", events[3].payload),
    ]


def test_frames_replays_after_cursor_then_follows_live_appends() -> None:
    async def scenario() -> list[bytes]:
        log = MemoryEventLog()
        for text in "abc":
            log.append("token", {"node": "llm", "ns": [], "message_id": "m", "text": text})
        out: list[bytes] = []

        async def consume() -> None:
            async for chunk in FanOut().frames("r", log, 1, NativeEncoder(), DEFAULT_SELECTION):
                out.append(chunk)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        log.append("model_end", {"node": "llm", "ns": [], "message_id": "m"})  # not shown
        log.append("end", {"status": "completed"})
        log.close()
        await asyncio.wait_for(task, 1)
        return out

    joined = b"".join(asyncio.run(scenario()))
    assert joined == (
        encode_json(3, "token", {"node": "llm", "ns": [], "message_id": "m", "text": "bc"})
        + encode_json(5, "end", {"status": "completed"})
    )
