"""Threads: a conversation continues across runs; `GET /threads/{id}` shows its state."""

from __future__ import annotations

import httpx

from tests.support.fake_openai import FakeOpenAI
from tests.support.live import stream_run


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    return str(response.json()["error"]["message"])


def test_a_second_agent_run_on_a_thread_sees_the_earlier_messages(
    client: httpx.Client, fake: FakeOpenAI
) -> None:
    def ask(text: str) -> None:
        body = {"input": {"messages": [{"role": "user", "content": text}]}, "thread_id": "mem-1"}
        assert stream_run(client, "agent", body)[-1].data["status"] == "completed"

    ask("[[echo]] my name is Ada")
    ask("what is my name?")
    request = next(
        r
        for r in reversed(fake.snapshot().requests)
        if r["messages"][-1]["content"] == "what is my name?"
    )
    contents = [m["content"] for m in request["messages"]]
    assert contents[0] == "[[echo]] my name is Ada"
    assert "my name is Ada" in contents[1]  # the model's first answer
    assert len(contents) == 3

    state = client.get("/threads/mem-1").json()
    assert state["graph"] == "agent"
    roles = [m["role"] for m in state["values"]["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert state["next"] == [] and state["interrupts"] == []
    assert state["checkpoint_id"] and state["active_run_id"] is None


def test_a_thread_shows_its_running_run(client: httpx.Client) -> None:
    run = client.post(
        "/graphs/chat/runs",
        json={"input": {"query": "[[tokens=400]] [[delay=0.01]]"}, "thread_id": "busy-2"},
    ).json()
    try:
        assert client.get("/threads/busy-2").json()["active_run_id"] == run["run_id"]
    finally:
        client.post(run["cancel_url"])
    assert client.get("/threads/busy-2").json()["active_run_id"] is None


def test_an_unknown_thread_is_404(client: httpx.Client) -> None:
    _error(client.get("/threads/never-seen"), 404, "thread_not_found")


def test_a_thread_cannot_change_graph(client: httpx.Client) -> None:
    stream_run(client, "chat", {"input": {"query": "hi"}, "thread_id": "owned-1"})
    message = _error(
        client.post("/graphs/report/runs", json={"input": {"topic": "x"}, "thread_id": "owned-1"}),
        409,
        "thread_graph_mismatch",
    )
    assert "chat" in message


def test_resuming_a_thread_that_is_not_paused_is_409(client: httpx.Client) -> None:
    stream_run(client, "approval", {"input": {"request": "x"}, "thread_id": "resume-2"})
    assert stream_run(client, "approval", {"thread_id": "resume-2", "resume": {"approved": True}})
    _error(
        client.post(
            "/graphs/approval/runs", json={"thread_id": "resume-2", "resume": {"approved": True}}
        ),
        409,
        "thread_not_paused",
    )


def test_input_null_on_a_new_thread_is_422(client: httpx.Client) -> None:
    _error(
        client.post("/graphs/chat/runs", json={"input": None, "thread_id": "empty-1"}),
        422,
        "invalid_input",
    )
