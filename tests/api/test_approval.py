"""Human in the loop: the `approval` graph pauses with `interrupt()`, a later run resumes it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.live import SSE, parse_sse, stream_run, tokens_text


def _one(events: list[SSE], kind: str) -> SSE:
    found = [e for e in events if e.event == kind]
    assert len(found) == 1, f"expected one {kind}: {[e.event for e in events]}"
    return found[0]


def _thread(client: httpx.Client, thread_id: str) -> dict[str, Any]:
    response = client.get(f"/threads/{thread_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _assert_paused_on(events: list[SSE], draft: str) -> SSE:
    interrupt = _one(events, "interrupt")
    assert interrupt.data["node"] == "review"
    assert interrupt.data["value"]["draft"] == draft
    assert "approve" in interrupt.data["value"]["question"].lower()
    assert events[-1].event == "end"
    assert events[-1].data["status"] == "paused"
    assert events[-1].data["reason"] == "interrupt"
    return interrupt


def test_a_draft_streams_then_pauses_and_approval_finishes_it(client: httpx.Client) -> None:
    first = stream_run(
        client,
        "approval",
        {"input": {"request": "[[echo]] a haiku about rivers"}, "thread_id": "approve-1"},
    )
    draft = tokens_text(first)
    assert "a haiku about rivers" in draft
    interrupt = _assert_paused_on(first, draft)
    run_id = first[0].data["run_id"]
    assert client.get(f"/runs/{run_id}").json()["status"] == "paused"

    state = _thread(client, "approve-1")
    assert state["next"] == ["review"]
    assert state["values"]["draft"] == draft
    assert [i["value"]["draft"] for i in state["interrupts"]] == [draft]
    assert state["interrupts"][0]["id"] == interrupt.data["id"]

    second = stream_run(
        client, "approval", {"thread_id": "approve-1", "resume": {"approved": True}}
    )
    assert second[-1].data["status"] == "completed"
    assert not [e for e in second if e.event in ("interrupt", "token")]
    update = next(e for e in second if e.event == "update" and e.data["node"] == "review")
    assert update.data["values"]["approved"] is True

    done = _thread(client, "approve-1")
    assert done["next"] == [] and done["interrupts"] == []
    assert done["values"]["approved"] is True
    assert done["values"]["final"] == draft


def test_rejection_with_feedback_revises_and_asks_again(client: httpx.Client) -> None:
    first = stream_run(
        client, "approval", {"input": {"request": "[[echo]] a long poem"}, "thread_id": "revise-1"}
    )
    draft = tokens_text(first)
    revision = stream_run(
        client,
        "approval",
        {"thread_id": "revise-1", "resume": {"approved": False, "feedback": "make it shorter"}},
    )
    revised = tokens_text(revision)
    assert "make it shorter" in revised  # the feedback reached the model
    assert revised != draft
    nodes = [e.data["node"] for e in revision if e.event == "node_start"]
    assert nodes == ["review", "draft", "review"]
    _assert_paused_on(revision, revised)
    state = _thread(client, "revise-1")
    assert state["values"]["draft"] == revised and state["values"]["approved"] is False

    final = stream_run(client, "approval", {"thread_id": "revise-1", "resume": {"approved": True}})
    assert final[-1].data["status"] == "completed"
    assert _thread(client, "revise-1")["values"]["final"] == revised


def test_the_same_flow_works_from_a_background_run_and_its_live_stream(
    client: httpx.Client,
) -> None:
    def run_and_watch(body: dict[str, Any]) -> list[SSE]:
        started = client.post("/graphs/approval/runs", json=body)
        assert started.status_code == 202, started.text
        with client.stream("GET", started.json()["stream_url"]) as response:
            return list(parse_sse(response.iter_lines()))

    first = run_and_watch({"input": {"request": "[[echo]] a slogan"}, "thread_id": "bg-1"})
    _assert_paused_on(first, tokens_text(first))
    second = run_and_watch({"thread_id": "bg-1", "resume": {"approved": True}})
    assert second[-1].data["status"] == "completed"
    assert _thread(client, "bg-1")["values"]["approved"] is True


def test_a_resume_of_the_wrong_shape_is_422_naming_the_field(client: httpx.Client) -> None:
    stream_run(client, "approval", {"input": {"request": "x"}, "thread_id": "shape-1"})
    response = client.post(
        "/graphs/approval/runs", json={"thread_id": "shape-1", "resume": {"approved": "maybe"}}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert "resume.approved" in response.json()["error"]["message"]
    assert _thread(client, "shape-1")["next"] == ["review"]  # still paused, nothing lost


def test_the_approval_graph_publishes_its_resume_schema(client: httpx.Client) -> None:
    graph = client.get("/graphs/approval").json()
    assert graph["resume_schema"]["required"] == ["approved"]
    assert "feedback" in graph["resume_schema"]["properties"]
