"""The mapper, against golden files: raw `astream_events` sequences recorded from real runs
(tests/engine/golden/raw/, see its README in `tests/engine/golden/__init__.py`) mapped to
internal events (tests/engine/golden/mapped/). A change of the mapping shows as a diff of the
mapped files; review it, then regenerate with

    REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/engine/test_mapping.py

`elapsed_ms` is the only value that depends on the clock; it is replaced by 0.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from app.engine.codec import dumps
from app.engine.mapping import STREAM_KWARGS, EventMapper
from app.engine.registry import output_keys_of
from tests.engine.golden import CASES, load_raw
from tests.engine.golden.record import STREAM_KWARGS as RECORDED_KWARGS

MAPPED = Path(__file__).parent / "golden" / "mapped"
MODULES = {
    "chat": "graphs.chat",
    "agent": "graphs.agent",
    "approval": "graphs.approval",
    "approval_resume": "graphs.approval",
    "report": "graphs.report",
}


def _mapper(case: str) -> EventMapper:
    module = importlib.import_module(MODULES.get(case, f"tests.graphs.{case}"))
    schema = module.graph.compile().get_output_jsonschema()
    return EventMapper(output_keys_of(schema))


def map_case(case: str) -> tuple[EventMapper, list[dict[str, Any]]]:
    mapper = _mapper(case)
    out = []
    for raw in load_raw(case):
        for event_type, data in mapper.map(raw):
            if "elapsed_ms" in data:
                data = {**data, "elapsed_ms": 0}
            # As the log holds it: the payload bytes, decoded.
            out.append({"type": event_type, "data": json.loads(dumps(data))})
    return mapper, out


def test_the_fixtures_were_recorded_with_the_engines_own_stream_arguments() -> None:
    assert RECORDED_KWARGS == STREAM_KWARGS


@pytest.mark.parametrize("case", CASES)
def test_raw_events_map_to_the_golden_internal_events(case: str) -> None:
    _, mapped = map_case(case)
    path = MAPPED / f"{case}.json"
    if os.environ.get("REGENERATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(mapped, indent=1, ensure_ascii=False) + "\n", "utf-8")
    assert mapped == json.loads(path.read_text("utf-8"))


def _types(mapped: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in mapped]


def test_chat_is_one_node_with_its_model_call_and_tokens_then_values() -> None:
    mapper, mapped = map_case("chat")
    types = [t for t in _types(mapped) if t != "token"]
    assert types == [
        "values",  # the input state, before any node (output schema: nothing of it yet)
        "node_start",
        "model_start",
        "model_end",
        "update",
        "node_end",
        "values",
    ]
    start = next(e["data"] for e in mapped if e["type"] == "model_start")
    assert start["metadata"]["langgraph_node"] == "llm" and start["node"] == "llm"
    tokens = [e["data"] for e in mapped if e["type"] == "token"]
    assert {t["message_id"] for t in tokens} == {start["message_id"]}
    answer = mapped[-1]["data"]["values"]["answer"]
    assert "".join(t["text"] for t in tokens) == answer
    assert set(mapped[-1]["data"]["values"]) == {"answer"}  # the output schema only
    assert mapper.usage.as_dict()["output_tokens"] > 0
    end = next(e["data"] for e in mapped if e["type"] == "model_end")
    assert end["usage"]["output_tokens"] == mapper.usage.as_dict()["output_tokens"]


@pytest.mark.parametrize("case", ["subgraph_embedded", "subgraph_called"])
def test_a_subgraphs_nodes_carry_the_path_of_their_parent_node(case: str) -> None:
    _, mapped = map_case(case)
    parent = "outer" if case == "subgraph_embedded" else "caller"
    starts = [(e["data"]["node"], e["data"]["ns"]) for e in mapped if e["type"] == "node_start"]
    assert (parent, []) in starts
    assert ("inner", [parent]) in starts
    tokens = [e["data"] for e in mapped if e["type"] == "token"]
    assert tokens and all(t["node"] == "inner" and t["ns"] == [parent] for t in tokens)


def test_custom_events_from_the_stream_writer_and_dispatch_keep_their_node_and_name() -> None:
    _, mapped = map_case("custom_events")
    custom = [e["data"] for e in mapped if e["type"] == "custom"]
    names = [c["name"] for c in custom]
    assert None in names and "progress" in names
    assert all(c["node"] is not None for c in custom)


def test_the_report_graph_reports_its_progress_through_the_stream_writer() -> None:
    _, mapped = map_case("report")
    progress = [e["data"] for e in mapped if e["type"] == "custom"]
    sections = [p["data"] for p in progress]
    assert sections == [{"section": i, "of": len(sections)} for i in range(1, len(sections) + 1)]
    assert all(p["node"] == "write_section" and p["name"] is None for p in progress)


def test_an_interrupt_names_the_node_that_paused_and_leaves_the_values() -> None:
    mapper, mapped = map_case("approval")
    (interrupt,) = [e["data"] for e in mapped if e["type"] == "interrupt"]
    assert interrupt["node"] == "review" and interrupt["ns"] == []
    assert interrupt["value"]["draft"] and interrupt["id"]
    assert mapper.interrupted
    values = [e["data"]["values"] for e in mapped if e["type"] == "values"]
    assert all("__interrupt__" not in v for v in values)


def test_a_failing_node_starts_and_never_ends() -> None:
    _, mapped = map_case("failing_node")
    assert "node_start" in _types(mapped) and "node_end" not in _types(mapped)


def test_tool_calls_carry_the_models_call_id_and_their_argument_chunks() -> None:
    _, mapped = map_case("agent")
    start = next(e["data"] for e in mapped if e["type"] == "tool_start")
    end = next(e["data"] for e in mapped if e["type"] == "tool_end")
    assert start["call_id"] == end["call_id"] == "call_offline_calculator"
    chunks = [e["data"] for e in mapped if e["type"] == "tool_call_chunk"]
    assert "".join(c["args"] or "" for c in chunks) == '{"expression": "6 * 7"}'
    model_end = next(e["data"] for e in mapped if e["type"] == "model_end")
    assert model_end["tool_calls"][0]["id"] == start["call_id"]
