"""Cancel really stops: the stream ends `cancelled` and the model's HTTP request is closed."""

from __future__ import annotations

import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.live import SSE, parse_sse, wait_status

SLOW = "[[tokens=400]] [[delay=0.02]]"


@pytest.mark.parametrize("graph", ["chat", "sync_chat"])
def test_cancel_mid_stream_ends_cancelled_and_closes_upstream(
    client: httpx.Client, fake: FakeOpenAI, graph: str
) -> None:
    """Both node styles: `await llm.ainvoke` and a synchronous `llm.invoke` in a thread."""
    abandoned = fake.snapshot().abandoned
    run = client.post(f"/graphs/{graph}/runs", json={"input": {"query": f"go {SLOW}"}}).json()
    with client.stream("GET", run["stream_url"]) as response:
        events: list[SSE] = []
        for event in parse_sse(response.iter_lines()):
            events.append(event)
            if event.event == "token" and len(events) == 3:
                cancelled = client.post(run["cancel_url"])
                assert cancelled.status_code == 202
                assert cancelled.json()["status"] == "cancelled"
    end = events[-1]
    assert end.event == "end"
    assert end.data["status"] == "cancelled" and end.data["reason"] == "cancelled"
    tokens = sum(1 for e in events if e.event == "token")
    assert tokens < 100  # it stopped; it did not run to the end
    stats = fake.wait_for(lambda s: s.abandoned >= abandoned + 1, timeout=5)
    assert stats.abandoned == abandoned + 1
    assert client.get(f"/runs/{run['run_id']}").json()["status"] == "cancelled"


def test_cancel_twice_or_after_the_end_changes_nothing(client: httpx.Client) -> None:
    run = client.post("/graphs/chat/runs", json={"input": {"query": f"x {SLOW}"}}).json()
    first = client.post(run["cancel_url"], json={"action": "interrupt"})
    second = client.post(run["cancel_url"])
    assert first.status_code == second.status_code == 202
    assert first.json()["status"] == second.json()["status"] == "cancelled"
    assert first.json()["ended_at"] == second.json()["ended_at"]

    done = client.post("/graphs/chat/runs", json={"input": {"query": "[[tokens=2]]"}}).json()
    with client.stream("GET", done["stream_url"]) as response:
        assert list(parse_sse(response.iter_lines()))[-1].data["status"] == "completed"
    after = client.post(done["cancel_url"])
    assert after.status_code == 202 and after.json()["status"] == "completed"


def test_many_cancels_in_a_row_all_end(client: httpx.Client, fake: FakeOpenAI) -> None:
    """Regression guard for the swallowed-cancel trap: a single task.cancel() inside the
    astream_events consumer can be lost; every run must still end, and end cancelled."""
    abandoned = fake.snapshot().abandoned
    runs = 25
    for i in range(runs):
        run = client.post(
            "/graphs/chat/runs", json={"input": {"query": f"n{i} [[tokens=300]] [[delay=0.01]]"}}
        ).json()
        # wait until the model call is under way, then cancel
        with client.stream("GET", run["stream_url"]) as response:
            for event in parse_sse(response.iter_lines()):
                if event.event == "token":
                    break
        record = client.post(run["cancel_url"]).json()
        assert record["status"] == "cancelled", record
        assert record["ended_at"] is not None
    fake.wait_for(lambda s: s.abandoned >= abandoned + runs, timeout=10)


def test_disconnect_cancels_the_run(client: httpx.Client, fake: FakeOpenAI) -> None:
    abandoned = fake.snapshot().abandoned
    with client.stream(
        "POST", "/graphs/chat/stream", json={"input": {"query": f"bye {SLOW}"}}
    ) as response:
        lines = response.iter_lines()
        first = next(parse_sse(lines))
        run_id = first.data["run_id"]
        for event in parse_sse(lines):
            if event.event == "token":
                break
    # leaving the block closed the connection
    fake.wait_for(lambda s: s.abandoned >= abandoned + 1, timeout=5)
    record = wait_status(client, run_id, "cancelled")
    assert record["reason"] == "client_disconnected"


def test_disconnect_with_continue_lets_the_run_complete(client: httpx.Client) -> None:
    with client.stream(
        "POST",
        "/graphs/chat/stream",
        json={"input": {"query": "stay [[tokens=30]] [[delay=0.01]]"}, "on_disconnect": "continue"},
    ) as response:
        run_id = next(parse_sse(response.iter_lines())).data["run_id"]
    record = wait_status(client, run_id, "completed")
    assert record["usage"]["output_tokens"] == 30
    # and the whole stream is still there to replay
    with client.stream("GET", f"/runs/{run_id}/stream") as response:
        events = list(parse_sse(response.iter_lines()))
    assert events[-1].data["status"] == "completed"
