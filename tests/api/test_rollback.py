"""Cancel `{"action": "rollback"}` leaves the thread exactly as before the run; the default
`{"action": "interrupt"}` keeps what completed steps wrote. Every store: SQLite, memory and
PostgreSQL (a schema of the module's own on the machine's server)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _fake_upstream, _serve
from tests.support import postgres
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import parse_sse, stream_run

SLOW_TOPIC = "[[tokens=150]] [[delay=0.01]] rivers"


@pytest.fixture(scope="module", params=["sqlite", "memory", "postgres"])
def store_client(
    request: pytest.FixtureRequest, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp(f"rollback-{request.param}")
    env = _fake_upstream(fake)
    with ExitStack() as stack:
        if request.param == "memory":
            env["DATABASE_URL"] = "memory://"
        elif request.param == "postgres":
            env["DATABASE_URL"] = stack.enter_context(postgres.schema())
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


# -- rolling back a resume ----------------------------------------------------------------
# The resumed run asks the model with the resume value as its prompt: slow for the run that is
# rolled back (cancelled at its first token), quick for the resume after it.
SLOW_PROMPT = "[[tokens=300]] [[delay=0.01]] go"
QUICK_PROMPT = "[[tokens=3]] go"


def _thread(client: httpx.Client, thread_id: str) -> dict[str, Any]:
    response = client.get(f"/threads/{thread_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait_thread(
    client: httpx.Client, thread_id: str, ready: Callable[[dict[str, Any]], bool]
) -> None:
    deadline = time.monotonic() + 10
    while not ready(state := _thread(client, thread_id)):
        assert time.monotonic() < deadline, f"thread never got there: {state}"
        time.sleep(0.01)


def _roll_back_at_first_token(
    client: httpx.Client,
    graph: str,
    body: dict[str, Any],
    ready: Callable[[dict[str, Any]], bool] = lambda state: True,
) -> None:
    """Start a run, and once it streams tokens and the thread is `ready`, cancel it with
    rollback; return once its `end` arrived."""
    run = client.post(f"/graphs/{graph}/runs", json=body)
    assert run.status_code == 202, run.text
    with client.stream("GET", run.json()["stream_url"]) as response:
        events = parse_sse(response.iter_lines())
        assert any(event.event == "token" for event in events)  # stops at the first
        _wait_thread(client, body["thread_id"], ready)
        cancelled = client.post(run.json()["cancel_url"], json={"action": "rollback"})
        assert cancelled.status_code == 202, cancelled.text
        rest = list(events)
    assert rest[-1].event == "end"
    assert (rest[-1].data["status"], rest[-1].data["reason"]) == ("cancelled", "rollback")


def test_rollback_of_a_resume_inside_a_subgraph_leaves_the_subgraph_paused(
    store_client: httpx.Client,
) -> None:
    """Regression: the paused subgraph's checkpoints are newer than the root's newest, and a
    rollback deleted them with the run's; the next resume ran the subgraph from its start."""
    client, thread = store_client, "rb-sub"
    paused = stream_run(client, "paused_subgraph", {"input": {"query": "q"}, "thread_id": thread})
    assert paused[-1].data["status"] == "paused"
    before = _thread(client, thread)
    assert [i["value"]["question"] for i in before["interrupts"]] == ["prompt?"]

    _roll_back_at_first_token(
        client, "paused_subgraph", {"thread_id": thread, "resume": SLOW_PROMPT}
    )
    assert _thread(client, thread) == before

    resumed = stream_run(client, "paused_subgraph", {"thread_id": thread, "resume": QUICK_PROMPT})
    assert resumed[-1].data["status"] == "completed"
    started = [e.data["node"] for e in resumed if e.event == "node_start"]
    assert "prepare" not in started and "write" in started  # on from `ask`, as first resumed
    values = _thread(client, thread)["values"]
    assert (values["prepared"], values["prompt"]) == ("prepared: q", QUICK_PROMPT)


def test_rollback_of_a_resume_that_asked_again_brings_back_the_first_question(
    store_client: httpx.Client,
) -> None:
    """Regression: the resumed node's second `interrupt()` replaces the first's interrupt write
    under the same key, and a rollback kept the replaced value: the thread showed "second?"."""
    client, thread = store_client, "rb-twice"
    paused = stream_run(client, "ask_twice", {"input": {"query": "q"}, "thread_id": thread})
    assert paused[-1].data["status"] == "paused"
    before = _thread(client, thread)
    ids = {i["value"]: i["id"] for i in before["interrupts"]}
    assert set(ids) == {"first?", "prompt?"}

    def asked_again(state: dict[str, Any]) -> bool:
        return "second?" in [i["value"] for i in state["interrupts"]]

    slow = {ids["first?"]: "a", ids["prompt?"]: SLOW_PROMPT}
    _roll_back_at_first_token(
        client, "ask_twice", {"thread_id": thread, "resume": slow}, ready=asked_again
    )
    assert _thread(client, thread) == before

    quick = {ids["first?"]: "a", ids["prompt?"]: QUICK_PROMPT}
    resumed = stream_run(client, "ask_twice", {"thread_id": thread, "resume": quick})
    assert resumed[-1].data["status"] == "paused"
    state = _thread(client, thread)
    assert [i["value"] for i in state["interrupts"]] == ["second?"]
    done = stream_run(client, "ask_twice", {"thread_id": thread, "resume": "b"})
    assert done[-1].data["status"] == "completed"
    values = _thread(client, thread)["values"]
    assert (values["first"], values["second"]) == ("a", "b") and values["answer"]
