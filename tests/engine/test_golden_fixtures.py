"""The golden raw events are current, and the loader gives back what `astream_events` gave.

A failure of `test_fixture_is_current` after a LangGraph or LangChain upgrade means the raw
events changed: read the diff (the new mapper may need to follow), then re-record with
`.venv/bin/python -m tests.engine.golden.record`.
"""

from __future__ import annotations

import asyncio
import difflib
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langgraph.types import Command, Interrupt

from tests.engine.golden import CASES, load_encoded, load_raw, path, raised
from tests.engine.golden.codec import JSON, dumps, encode_event
from tests.engine.golden.record import SCENARIOS, STREAM_KWARGS, record, record_scenario


@pytest.fixture(scope="module")
def recorded() -> dict[str, list[JSON]]:
    return asyncio.run(record())


@pytest.mark.parametrize("case", CASES)
def test_fixture_is_current(case: str, recorded: dict[str, list[JSON]]) -> None:
    stored = path(case).read_text(encoding="utf-8")
    fresh = dumps(recorded[case])
    if fresh != stored:
        diff = difflib.unified_diff(
            stored.splitlines(), fresh.splitlines(), "stored", "recorded now", lineterm="", n=2
        )
        shown = "\n".join(list(diff)[:80])
        pytest.fail(
            f"{path(case).name} is not what a recording gives now; if the change is expected,"
            f" re-record: .venv/bin/python -m tests.engine.golden.record {case}\n{shown}"
        )


@pytest.mark.parametrize("case", CASES)
def test_loader_round_trips(case: str) -> None:
    events = load_raw(case)
    again = [encode_event(event) for event in events]
    assert again == load_encoded(case)
    assert dumps(again) == path(case).read_text(encoding="utf-8")


def _root_chunks(events: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], str, Any]]:
    """The `(namespace, mode, data)` chunks of the root graph's `on_chain_stream` events."""
    return [
        e["data"]["chunk"]
        for e in events
        if e["event"] == "on_chain_stream" and not e["parent_ids"]
    ]


def test_messages_come_back_as_langchain_objects() -> None:
    events = load_raw("chat")
    start = next(e for e in events if e["event"] == "on_chat_model_start")
    assert isinstance(start["data"]["input"]["messages"][0][0], HumanMessage)
    chunks = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert {c.id for c in chunks} == {f"lc_run--{start['run_id']}"}
    # The model's usage comes in the chunk before the last; LangChain adds an empty last chunk.
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(usage) == 1 and usage[0] is chunks[-2].usage_metadata and usage[0]["output_tokens"]
    assert chunks[-1].chunk_position == "last" and not chunks[-1].content
    end = next(e for e in events if e["event"] == "on_chat_model_end")
    assert isinstance(end["data"]["output"], AIMessage)
    assert end["data"]["output"].text == "".join(c.text for c in chunks)


def test_tool_calls_and_results_survive() -> None:
    events = load_raw("agent")
    first_call = next(e for e in events if e["event"] == "on_chat_model_stream")["data"]["chunk"]
    assert first_call.tool_call_chunks[0]["id"] == "call_offline_calculator"
    tool_end = next(e for e in events if e["event"] == "on_tool_end")
    output = tool_end["data"]["output"]
    assert isinstance(output, ToolMessage)
    assert (output.tool_call_id, output.content) == ("call_offline_calculator", "42")


def test_root_chunks_are_namespace_mode_data_tuples() -> None:
    chunks = _root_chunks(load_raw("subgraph_embedded"))
    assert all(isinstance(c, tuple) and isinstance(c[0], tuple) for c in chunks)
    namespaces = {c[0] for c in chunks}
    assert namespaces == {(), ("outer:ns-1",)}
    assert ((("outer:ns-1",), "custom", {"from": "inner"})) in chunks
    inner_start = next(e for e in load_raw("subgraph_embedded") if e["name"] == "inner")
    assert inner_start["metadata"]["langgraph_checkpoint_ns"] == "outer:ns-1|inner:ns-2"


def test_interrupts_and_the_resume_command() -> None:
    chunks = _root_chunks(load_raw("approval"))
    interrupts = [
        item
        for _, mode, data in chunks
        if mode in ("updates", "values") and "__interrupt__" in data
        for item in data["__interrupt__"]
    ]
    # The interrupt comes in both modes: `updates` {"__interrupt__": (...)} and the `values`.
    assert len(interrupts) == 2 and all(isinstance(i, Interrupt) for i in interrupts)
    assert {i.id for i in interrupts} == {"interrupt-1"}
    resume = load_raw("approval_resume")[0]
    assert resume["event"] == "on_chain_start"
    assert resume["data"]["input"] == Command(resume={"approved": True})


def test_custom_events_and_writes() -> None:
    events = load_raw("custom_events")
    custom = [(e["name"], e["data"]) for e in events if e["event"] == "on_custom_event"]
    assert [name for name, _ in custom] == ["progress", "tally"]
    writes = [data for _, mode, data in _root_chunks(events) if mode == "custom"]
    assert writes == [{"stage": "thinking", "done": 0}, {"stage": "answered", "done": 2}]
    report = [data for _, mode, data in _root_chunks(load_raw("report")) if mode == "custom"]
    assert report == [{"section": i, "of": 3} for i in (1, 2, 3)]


def test_a_failing_run_has_no_end_events() -> None:
    events = load_raw("failing_node")
    assert not [e for e in events if e["event"] == "on_chain_end"]
    error = raised("failing_node")
    assert isinstance(error, ValueError) and str(error) == "boom"
    assert raised("chat") is None


def test_include_types_would_drop_custom_events() -> None:
    """Why the recording (and the engine) filter with `exclude_types`: LangChain matches an
    `on_custom_event` against include_types by its name, so listing "custom" keeps none."""
    scenario = next(s for s in SCENARIOS if s.name == "custom_events")
    kwargs = {k: v for k, v in STREAM_KWARGS.items() if k != "exclude_types"}
    kwargs["include_types"] = ["chain", "chat_model", "tool", "custom"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tests.engine.golden.record.STREAM_KWARGS", kwargs)
        events = asyncio.run(record_scenario(scenario))["custom_events"]
    kinds = {e["event"] for e in events}
    assert "on_custom_event" not in kinds and "on_chat_model_stream" in kinds
    assert "on_custom_event" in {e["event"] for e in load_raw("custom_events")}
