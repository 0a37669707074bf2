"""The README's httpx-sse client ("Clients: browsers and Python"), run as written against the
real server with a short PING_INTERVAL_S, so the snippet and the docs cannot drift.

The bug this pins: Python clients tripped on pings. httpx-sse yields each `: ping` as an event
with empty data, and its default 5 s read timeout is below PING_INTERVAL_S (15 s)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from app.settings import Settings
from tests.support.live import LiveServer, wait_status
from tests.support.readme import readme_block


@pytest.fixture(scope="module")
def snippet() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(
        compile(readme_block("Clients: browsers and Python", "python"), "README", "exec"), namespace
    )
    return namespace


QUIET = {"input": {"query": "[[first=1]] [[tokens=5]] quiet first"}}  # ~5 pings at 0.2 s


def test_the_readme_client_skips_pings_and_stops_at_end(
    tight: LiveServer, snippet: dict[str, Any]
) -> None:
    with httpx.Client(base_url=tight.url, timeout=snippet["TIMEOUT"]) as client:
        events = list(snippet["run_events"](client, "POST", "/graphs/chat/stream", json=QUIET))
    names = [event for _, event, _ in events]
    assert names[0] == "metadata" and names[-1] == "end" and names.count("end") == 1
    assert names.count("token") >= 1
    ids = [event_id for event_id, _, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[-1][2]["status"] == "completed"


def test_a_plain_httpx_sse_loop_sees_pings_as_empty_events(tight: LiveServer) -> None:
    """Why the snippet skips events without data: the same run read by a plain loop."""
    with (
        httpx.Client(base_url=tight.url, timeout=30) as client,
        connect_sse(client, "POST", "/graphs/chat/stream", json=QUIET) as source,
    ):
        raw = [(sse.event, sse.data) for sse in source.iter_sse()]
    assert ("message", "") in raw
    empty = next(data for _, data in raw if not data)
    with pytest.raises(json.JSONDecodeError):
        json.loads(empty)


def test_the_readme_client_raises_the_json_error_before_a_stream(
    tight: LiveServer, snippet: dict[str, Any]
) -> None:
    with httpx.Client(base_url=tight.url, timeout=snippet["TIMEOUT"]) as client:
        with pytest.raises(snippet["RunRefused"]) as refused:
            list(snippet["run_events"](client, "POST", "/graphs/nope/stream", json=QUIET))
        assert refused.value.status == 404 and refused.value.code == "graph_not_found"
        with pytest.raises(snippet["RunRefused"]) as refused:
            list(snippet["run_events"](client, "POST", "/graphs/chat/stream", json={"x": 1}))
        assert refused.value.status == 422 and refused.value.code == "invalid_input"


def test_the_readme_client_resumes_and_ends_quietly_on_204(
    tight: LiveServer, snippet: dict[str, Any]
) -> None:
    with httpx.Client(base_url=tight.url, timeout=snippet["TIMEOUT"]) as client:
        run = client.post("/graphs/chat/runs", json={"input": {"query": "[[tokens=8]]"}}).json()
        wait_status(client, run["run_id"], "completed")
        path = f"/runs/{run['run_id']}/stream"
        full = list(snippet["run_events"](client, "GET", path))
        cut = full[len(full) // 2][0]
        rest = list(snippet["run_events"](client, "GET", path, headers={"Last-Event-ID": str(cut)}))
        assert rest == [event for event in full if event[0] > cut]
        last = str(full[-1][0])
        assert (
            list(snippet["run_events"](client, "GET", path, headers={"Last-Event-ID": last})) == []
        )


def test_the_readme_timeout_outlasts_the_default_ping_interval(snippet: dict[str, Any]) -> None:
    timeout: httpx.Timeout = snippet["TIMEOUT"]
    assert timeout.read is not None and timeout.read > Settings().ping_interval_s
