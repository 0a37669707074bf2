"""Cancel `{"action": "rollback"}` leaves the thread exactly as before the run; the default
`{"action": "interrupt"}` keeps what completed steps wrote. Both stores: SQLite and memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _fake_upstream, _serve
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import parse_sse, stream_run

SLOW_TOPIC = "[[tokens=150]] [[delay=0.01]] rivers"


@pytest.fixture(scope="module", params=["sqlite", "memory"])
def store_client(
    request: pytest.FixtureRequest, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp(f"rollback-{request.param}")
    env = _fake_upstream(fake)
    if request.param == "memory":
        env["DATABASE_URL"] = "memory://"
    for server in _serve(Path(tmp), env):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client


def _state(client: httpx.Client, thread_id: str) -> dict[str, Any]:
    state = client.get(f"/threads/{thread_id}").json()
    return {k: state[k] for k in ("values", "next", "interrupts", "checkpoint_id")}


def _cancel_while_writing(client: httpx.Client, thread_id: str, action: str) -> dict[str, Any]:
    """Start a report on the thread, cancel it once `plan` is done and `write_section` streams."""
    run = client.post(
        "/graphs/report/runs", json={"input": {"topic": SLOW_TOPIC}, "thread_id": thread_id}
    ).json()
    with client.stream("GET", run["stream_url"]) as response:
        node = None
        events = parse_sse(response.iter_lines())
        for event in events:
            if event.event == "node_start":
                node = event.data["node"]
            if event.event == "token" and node == "write_section":
                break
        cancelled = client.post(run["cancel_url"], json={"action": action})
        assert cancelled.status_code == 202, cancelled.text
        rest = list(events)
    assert rest[-1].event == "end" and rest[-1].data["status"] == "cancelled"
    return {"record": cancelled.json(), "end": rest[-1].data}


def test_rollback_leaves_the_thread_exactly_as_before_the_run(store_client: httpx.Client) -> None:
    stream_run(
        store_client, "report", {"input": {"topic": "[[tokens=5]] cats"}, "thread_id": "rb-1"}
    )
    before = _state(store_client, "rb-1")
    out = _cancel_while_writing(store_client, "rb-1", "rollback")
    assert out["end"]["reason"] == "rollback" and out["record"]["reason"] == "rollback"
    assert _state(store_client, "rb-1") == before
    # and the thread works on from there
    again = stream_run(
        store_client, "report", {"input": {"topic": "[[tokens=5]] owls"}, "thread_id": "rb-1"}
    )
    assert again[-1].data["status"] == "completed"


def test_rollback_of_a_thread_first_run_leaves_no_state(store_client: httpx.Client) -> None:
    _cancel_while_writing(store_client, "rb-2", "rollback")
    state = _state(store_client, "rb-2")
    assert state["values"] == {} and state["next"] == [] and state["checkpoint_id"] is None
    refused = store_client.post("/graphs/report/runs", json={"input": None, "thread_id": "rb-2"})
    assert refused.status_code == 422  # nothing to continue from


def test_interrupt_keeps_completed_steps_and_the_thread_continues(
    store_client: httpx.Client,
) -> None:
    stream_run(
        store_client, "report", {"input": {"topic": "[[tokens=5]] cats"}, "thread_id": "int-1"}
    )
    before = _state(store_client, "int-1")
    out = _cancel_while_writing(store_client, "int-1", "interrupt")
    assert out["end"]["reason"] == "cancelled"
    after = _state(store_client, "int-1")
    assert after != before
    assert after["values"]["topic"] == SLOW_TOPIC  # the input and `plan` were kept
    assert after["values"]["sections"]
    assert after["next"] == ["write_section"]
    resumed = stream_run(store_client, "report", {"input": None, "thread_id": "int-1"})
    assert next(e.data["node"] for e in resumed if e.event == "node_start") == "write_section"
    assert resumed[-1].data["status"] == "completed"


def test_rollback_of_a_finished_run_changes_nothing(store_client: httpx.Client) -> None:
    events = stream_run(store_client, "chat", {"input": {"query": "hi"}, "thread_id": "rb-3"})
    before = _state(store_client, "rb-3")
    run_id = events[0].data["run_id"]
    response = store_client.post(f"/runs/{run_id}/cancel", json={"action": "rollback"})
    assert response.status_code == 202
    assert response.json()["status"] == "completed"
    assert _state(store_client, "rb-3") == before
