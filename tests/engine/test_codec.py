"""Payload bytes: tokens merged on their bytes equal the merged dict encoded; stored chunks
round-trip."""

from __future__ import annotations

import pytest

from app.engine import codec
from app.engine.codec import LogEvent, merge_runs


def _tok(i: int, text: str, message: str = "m1", node: str = "llm") -> LogEvent:
    return LogEvent.of(i, "token", {"node": node, "ns": [], "message_id": message, "text": text})


def _merged(i: int, text: str, message: str = "m1") -> tuple[int, str, bytes]:
    return (i, "token", codec.dumps({"node": "llm", "ns": [], "message_id": message, "text": text}))


def test_consecutive_tokens_of_one_message_merge_into_the_last_id() -> None:
    events = [
        _tok(1, "a"),
        _tok(2, "b"),
        _tok(3, "c", "m2"),
        LogEvent.of(4, "node_end", {"n": 1}),
        _tok(5, "d", "m2"),
        _tok(6, "e", "m2"),
    ]
    assert merge_runs(events) == [
        _merged(2, "ab"),
        (3, "token", events[2].payload),
        (4, "node_end", events[3].payload),
        _merged(6, "de", "m2"),
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
    assert merge_runs(events) == [_merged(len(texts), "".join(texts))]


def test_tokens_of_another_node_or_shape_are_not_merged() -> None:
    other_node = _tok(2, "x", node="b")
    odd_shape = LogEvent.of(3, "token", {"node": "llm", "message_id": "m1", "text": "y", "n": 1})
    events = [_tok(1, "a"), other_node, odd_shape, _tok(4, "z")]
    assert merge_runs(events) == [(e.id, e.type, e.payload) for e in events]


def test_non_token_events_are_never_merged() -> None:
    events = [LogEvent.of(1, "update", {"a": 1}), LogEvent.of(2, "update", {"a": 2})]
    assert merge_runs(events) == [(e.id, e.type, e.payload) for e in events]


def test_a_payload_is_an_exact_size_copy() -> None:
    """orjson's own result keeps a 4 KB buffer for a small payload; a log keeps every payload
    for the run's life, so `dumps` returns an exact-size copy."""
    import sys
    import tracemalloc

    data = {"node": "llm", "ns": [], "message_id": "m", "text": "a" * 400}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [codec.dumps(data) for _ in range(200)]
        per_payload = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_payload < 2 * sys.getsizeof(kept[0]), per_payload


@pytest.mark.parametrize("compressed", [False, True])
def test_stored_chunks_round_trip(compressed: bool) -> None:
    events = [
        LogEvent.of(1, "metadata", {"run_id": "r", "thread_id": "t", "graph": "chat"}),
        _tok(2, "line\nwith newline and \u00e9"),
        LogEvent.of(3, "custom", {"node": None, "ns": ["a b"], "name": None, "data": {"x": 1}}),
    ]
    data = codec.encode_chunk(events)
    kind = codec.RAW
    if compressed:
        data, kind = codec.compress_chunk(data), codec.ZLIB
    assert codec.open_chunk(kind, data) == events
