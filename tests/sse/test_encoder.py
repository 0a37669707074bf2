"""The wire format, byte for byte, and the token merging rule."""

from __future__ import annotations

import asyncio

import pytest

from app.runs.log import Event, MemoryEventLog
from app.sse.encoder import encode, encode_json
from app.sse.stream import frames, merge_frames


def test_json_event_frame_golden_bytes() -> None:
    assert encode_json(7, "token", {"text": "a\nb", "é": "🌍"}) == (
        b'id: 7\nevent: token\ndata: {"text":"a\\nb","\xc3\xa9":"\xf0\x9f\x8c\x8d"}\n\n'
    )


def test_multiline_data_becomes_several_data_lines() -> None:
    assert encode("one\ntwo\r\nthree\rfour", event="x", event_id=1) == (
        b"id: 1\nevent: x\ndata: one\ndata: two\ndata: three\ndata: four\n\n"
    )


def test_id_and_event_cannot_break_the_frame() -> None:
    assert encode("d", event="evil\nevent: end", event_id="1\n2") == (
        b"id: 12\nevent: evilevent: end\ndata: d\n\n"
    )


def _tok(i: int, text: str, message: str = "m1") -> Event:
    return Event(i, "token", {"node": "llm", "message_id": message, "text": text})


def test_consecutive_tokens_of_one_message_merge_into_the_last_id() -> None:
    events = [
        _tok(1, "a"),
        _tok(2, "b"),
        _tok(3, "c", "m2"),
        Event(4, "node_end", {"n": 1}),
        _tok(5, "d", "m2"),
        _tok(6, "e", "m2"),
    ]
    assert merge_frames(events) == [
        encode_json(2, "token", {"node": "llm", "message_id": "m1", "text": "ab"}),
        events[2].frame,
        events[3].frame,
        encode_json(6, "token", {"node": "llm", "message_id": "m2", "text": "de"}),
    ]


@pytest.mark.parametrize(
    "texts",
    [
        ['say "hi"', " \\ back", "slash\\"],
        ["line\n", "\ttab\r", "\x00\x1f ctl"],
        ["caf\u00e9 ", "\u65e5\u672c", " \U0001f600"],
        [',"text":"', '"}', "\n\ndata: x\n\n"],
        ["", "a", ""],
    ],
)
def test_merging_on_the_bytes_equals_encoding_the_merged_text(texts: list[str]) -> None:
    events = [_tok(i + 1, t) for i, t in enumerate(texts)]
    merged = encode_json(
        len(texts), "token", {"node": "llm", "message_id": "m1", "text": "".join(texts)}
    )
    assert merge_frames(events) == [merged]


def test_tokens_of_another_node_or_shape_are_not_merged() -> None:
    other_node = Event(2, "token", {"node": "b", "message_id": "m1", "text": "x"})
    odd_shape = Event(3, "token", {"node": "llm", "message_id": "m1", "text": "y", "n": 1})
    events = [_tok(1, "a"), other_node, odd_shape, _tok(4, "z")]
    assert merge_frames(events) == [e.frame for e in events]


def test_non_token_events_are_never_merged() -> None:
    events = [Event(1, "update", {"a": 1}), Event(2, "update", {"a": 2})]
    assert merge_frames(events) == [events[0].frame, events[1].frame]


def test_frames_replays_after_cursor_then_follows_live_appends() -> None:
    async def scenario() -> list[bytes]:
        log = MemoryEventLog()
        for text in "abc":
            log.append("token", {"message_id": "m", "text": text})
        out: list[bytes] = []

        async def consume() -> None:
            async for chunk in frames(log, 1):
                out.append(chunk)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        log.append("end", {"status": "completed"})
        log.close()
        await asyncio.wait_for(task, 1)
        return out

    out = asyncio.run(scenario())
    joined = b"".join(out)
    assert joined == (
        encode_json(3, "token", {"message_id": "m", "text": "bc"})
        + encode_json(4, "end", {"status": "completed"})
    )
