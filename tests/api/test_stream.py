"""The stream of each shipped graph: event order, ids, and text, through real HTTP."""

from __future__ import annotations

from itertools import pairwise

import httpx

from tests.support.fake_openai import FakeOpenAI, token_text
from tests.support.live import SSE, LiveServer, stream_run, tokens_text


def _assert_well_formed(events: list[SSE], client: httpx.Client | None = None) -> None:
    """First metadata, last end, ids strictly increasing from 1, and the end's id is the
    number of events the run's log holds. Ids skip where tokens were merged into one frame (it
    carries the last merged id) and where the log holds events this client does not see (the
    engine's internal events, `values` unless asked for)."""
    assert events[0].event == "metadata"
    assert events[-1].event == "end"
    ids = [e.id for e in events]
    assert ids[0] == 1
    assert all(b is not None and a is not None and b > a for a, b in pairwise(ids))
    if client is not None:
        record = client.get(f"/runs/{events[0].data['run_id']}").json()
        assert events[-1].id == record["events"]


def _kinds(events: list[SSE]) -> list[str]:
    """Event types with runs of merged-or-not tokens collapsed to one "token"."""
    out: list[str] = []
    for e in events:
        if not (e.event == "token" and out and out[-1] == "token"):
            out.append(e.event)
    return out


def test_chat_streams_tokens_between_node_start_and_end(client: httpx.Client) -> None:
    events = stream_run(client, "chat", {"input": {"query": "Explain attention [[tokens=12]]"}})
    _assert_well_formed(events, client)
    assert _kinds(events) == ["metadata", "node_start", "token", "update", "node_end", "end"]
    # every upstream token arrived, merged or not: 12 words, one per token
    tokens = [e for e in events if e.event == "token"]
    assert sum(len(e.data["text"].split()) for e in tokens) == 12
    assert events[0].data["graph"] == "chat"
    assert events[-1].data["status"] == "completed"
    answer = events[-3].data["values"]["answer"]
    assert tokens_text(events) == answer == "".join(token_text(i) for i in range(12))
    assert events[-1].data["usage"]["output_tokens"] == 12


def test_sse_headers_match_the_contract(client: httpx.Client) -> None:
    with client.stream(
        "POST",
        "/graphs/chat/stream",
        json={"input": {"query": "hi"}},
        headers={"accept-encoding": "gzip"},
    ) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache, no-transform"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        response.read()


def test_agent_loop_calls_the_calculator_and_answers(client: httpx.Client) -> None:
    body = {
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": 'add these [[tool=calculator:{"expression": "2*(3+4)"}]]',
                }
            ]
        }
    }
    events = stream_run(client, "agent", body)
    _assert_well_formed(events, client)
    nodes = [e.data["node"] for e in events if e.event == "node_start"]
    assert nodes == ["agent", "tools", "agent"]
    start = next(e for e in events if e.event == "tool_start")
    end = next(e for e in events if e.event == "tool_end")
    assert start.data["tool"] == end.data["tool"] == "calculator"
    assert start.data["call_id"] == end.data["call_id"]
    assert start.data["input"] == {"expression": "2*(3+4)"}
    assert end.data["output"] == "14"
    assert start.id is not None and end.id is not None and start.id < end.id
    final = [e for e in events if e.event == "update"][-1].data["values"]["messages"][-1]
    assert final["role"] == "assistant"
    assert tokens_text(events, final["id"]) == final["content"] == "The tool said: 14"
    assert events[-1].data["status"] == "completed"


def test_report_streams_each_section_as_its_own_step(client: httpx.Client) -> None:
    events = stream_run(client, "report", {"input": {"topic": "tides [[tokens=5]]"}})
    _assert_well_formed(events, client)
    steps = [(e.data["node"], e.data["step"]) for e in events if e.event == "node_start"]
    assert steps[0] == ("plan", 1) and steps[-1][0] == "assemble"
    sections = [s for s in steps if s[0] == "write_section"]
    assert len(sections) >= 1
    # every write_section step streams its own message between its start and end
    for node, step in sections:
        start = next(
            e.id or 0 for e in events if e.event == "node_start" and e.data["step"] == step
        )
        end = next(e.id or 0 for e in events if e.event == "node_end" and e.data["step"] == step)
        tokens = [e for e in events if e.event == "token" and start < (e.id or 0) < end]
        assert tokens and all(t.data["node"] == node for t in tokens)
    report = [e for e in events if e.event == "update"][-1].data["values"]["report"]
    assert report.startswith("# tides")


def test_sync_node_streams_its_tokens_live(client: httpx.Client, fake: FakeOpenAI) -> None:
    """A node calling `llm.invoke` synchronously (as the LangGraph docs do) still streams."""
    events = stream_run(client, "sync_chat", {"input": {"query": "hi [[tokens=8]] [[delay=0.02]]"}})
    _assert_well_formed(events, client)
    assert _kinds(events) == ["metadata", "node_start", "token", "update", "node_end", "end"]
    assert [e.event for e in events].count("token") >= 4  # paced upstream: arrives live
    assert tokens_text(events) == events[-3].data["values"]["answer"]


def test_choices_without_a_delta_are_skipped(client: httpx.Client) -> None:
    """Azure-style content-filter choices (no `delta`) between tokens add nothing and break
    nothing: the service reads the upstream's chunks as plain dicts, not the SDK's models."""
    events = stream_run(client, "chat", {"input": {"query": "[[tokens=6]] [[filtered]]"}})
    _assert_well_formed(events, client)
    assert events[-1].data["status"] == "completed"
    assert tokens_text(events) == "".join(token_text(i) for i in range(6))


def test_multiline_and_non_ascii_tokens_survive_the_round_trip(client: httpx.Client) -> None:
    text = "línea uno\nzweite Zeile: grüße 🌍\r\n\n第三行 «ok»"
    events = stream_run(client, "chat", {"input": {"query": f"{text} [[echo]]"}})
    assert tokens_text(events) == text
    assert events[-1].data["status"] == "completed"


def test_offline_model_streams_with_no_key(
    offline_client: httpx.Client, offline_server: LiveServer
) -> None:
    graphs = offline_client.get("/graphs").json()
    assert graphs["model"]["offline"] is True
    assert "OFFLINE" in offline_server.logs()
    events = stream_run(offline_client, "chat", {"input": {"query": "Explain attention"}})
    _assert_well_formed(events, offline_client)
    assert (events[-1].id or 0) > 20
    assert tokens_text(events) == events[-3].data["values"]["answer"]
    assert "Explain attention" in tokens_text(events)


def test_offline_agent_runs_the_tool_loop(offline_client: httpx.Client) -> None:
    body = {"input": {"messages": [{"role": "user", "content": "what is 6 * 7?"}]}}
    events = stream_run(offline_client, "agent", body)
    tool_end = next(e for e in events if e.event == "tool_end")
    assert tool_end.data["output"] == "42"
    assert "42" in tokens_text(events)
    assert events[-1].data["status"] == "completed"
