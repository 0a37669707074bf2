"""What a run streams beyond nodes and tokens: `custom` events, subgraph namespaces (`ns`),
`values`, and each client's choice of event types and nodes (`stream`), through real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.live import SSE, read_sse, stream_run, tokens_text, wait_status


def _of(events: list[SSE], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.event == kind]


def test_the_report_graph_reports_each_section_as_a_custom_event(client: httpx.Client) -> None:
    events = stream_run(client, "report", {"input": {"topic": "tides [[tokens=5]]"}})
    progress = _of(events, "custom")
    sections = [p["data"] for p in progress]
    assert sections and sections == [
        {"section": i, "of": len(sections)} for i in range(1, len(sections) + 1)
    ]
    assert all(p["node"] == "write_section" and p["ns"] == [] for p in progress)
    assert all(p["name"] is None for p in progress)  # written with get_stream_writer()


def test_dispatched_custom_events_keep_their_name_from_async_and_sync_nodes(
    client: httpx.Client,
) -> None:
    events = stream_run(client, "custom_events", {"input": {"query": "go [[tokens=4]]"}})
    custom = _of(events, "custom")
    by_name = {c["name"]: c for c in custom if c["name"] is not None}
    assert by_name["progress"]["node"] == "progress"
    assert by_name["progress"]["data"] == {"stage": "calling the model", "done": 1}
    assert by_name["tally"]["node"] == "tally"  # the sync node's dispatch_custom_event
    written = [c["data"]["stage"] for c in custom if c["name"] is None]
    assert sorted(written) == ["answered", "thinking"]
    assert all(c["node"] == "progress" for c in custom if c["name"] is None)
    assert events[-1].data["status"] == "completed"


@pytest.mark.parametrize(
    ("graph", "parent"), [("subgraph_embedded", "outer"), ("subgraph_called", "caller")]
)
def test_a_subgraphs_nodes_and_tokens_carry_their_parent_node(
    client: httpx.Client, graph: str, parent: str
) -> None:
    events = stream_run(client, graph, {"input": {"query": "inside [[tokens=6]]"}})
    starts = [(d["node"], d["ns"]) for d in _of(events, "node_start")]
    assert (parent, []) in starts and ("inner", [parent]) in starts
    ends = [(d["node"], d["ns"]) for d in _of(events, "node_end")]
    assert ("inner", [parent]) in ends
    tokens = _of(events, "token")
    assert tokens and all(t["node"] == "inner" and t["ns"] == [parent] for t in tokens)
    inner_update = next(d for d in _of(events, "update") if d["node"] == "inner")
    assert tokens_text(events) == inner_update["values"]["answer"]


def test_values_come_only_when_asked_and_show_the_output_schema(client: httpx.Client) -> None:
    body = {"input": {"query": "hi [[tokens=3]]"}}
    assert _of(stream_run(client, "chat", body), "values") == []
    events = stream_run(client, "chat", {**body, "stream": {"values": True}})
    values = _of(events, "values")
    assert values[-1] == {"values": {"answer": tokens_text(events)}}  # no `query`: not output
    assert [e.event for e in events].index("values") < len(events) - 1
    assert events[-1].event == "end"


def test_a_client_can_choose_event_types(client: httpx.Client) -> None:
    events = stream_run(
        client, "chat", {"input": {"query": "hi [[tokens=5]]"}, "stream": {"events": ["token"]}}
    )
    assert {e.event for e in events} == {"metadata", "token", "end"}  # metadata/end always
    assert len(tokens_text(events).split()) == 5


def test_a_client_can_choose_nodes_and_gets_what_is_inside_them(client: httpx.Client) -> None:
    body = {"input": {"query": "x [[tokens=3]]"}, "stream": {"nodes": ["outer"]}}
    events = stream_run(client, "subgraph_embedded", body)
    scoped = [e.data for e in events if "node" in e.data]
    assert scoped and all(d["node"] == "outer" or "outer" in d["ns"] for d in scoped)
    assert any(d["node"] == "inner" for d in scoped)
    events = stream_run(
        client, "report", {"input": {"topic": "t [[tokens=3]]"}, "stream": {"nodes": ["plan"]}}
    )
    assert {d["node"] for d in _of(events, "node_start")} == {"plan"}


def test_a_watcher_chooses_with_query_parameters(client: httpx.Client) -> None:
    run = client.post("/graphs/chat/runs", json={"input": {"query": "q [[tokens=4]]"}}).json()
    wait_status(client, run["run_id"], "completed")
    with client.stream("GET", run["stream_url"], params={"events": "end", "values": "true"}) as r:
        events = read_sse(r)
    assert [e.event for e in events] == ["metadata", "values", "values", "end"]


@pytest.mark.parametrize(
    ("stream", "named"),
    [({"events": ["tokens"]}, "'tokens'"), ({"nodes": ["nope"]}, "'nope'")],
)
def test_unknown_event_types_or_nodes_are_422_naming_them(
    client: httpx.Client, stream: dict[str, list[str]], named: str
) -> None:
    response = client.post("/graphs/chat/stream", json={"input": {"query": "q"}, "stream": stream})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and named in error["message"]


def test_a_model_call_tagged_nostream_streams_no_tokens(client: httpx.Client) -> None:
    events = stream_run(client, "quiet_then_loud", {"input": {"query": "q [[tokens=4]]"}})
    assert {t["node"] for t in _of(events, "token")} == {"loud"}
    quiet = next(d for d in _of(events, "update") if d["node"] == "quiet")
    assert len(quiet["values"]["plan"].split()) == 4  # the call ran; its tokens were not sent
    assert events[-1].data["usage"]["output_tokens"] == 8
