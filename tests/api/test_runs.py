"""Background runs, watching them, replay after Last-Event-ID, and the run record."""

from __future__ import annotations

import httpx

from tests.support.live import read_sse, tokens_text


def _start(client: httpx.Client, query: str, graph: str = "chat") -> dict[str, str]:
    response = client.post(f"/graphs/{graph}/runs", json={"input": {"query": query}})
    assert response.status_code == 202, response.text
    run: dict[str, str] = response.json()
    return run


def test_background_run_returns_links_and_streams_from_the_start(client: httpx.Client) -> None:
    run = _start(client, "hello [[tokens=30]] [[delay=0.01]]")
    assert run["status"] == "running"
    assert run["stream_url"].endswith(f"/runs/{run['run_id']}/stream")
    assert run["cancel_url"].endswith(f"/runs/{run['run_id']}/cancel")
    with client.stream("GET", run["stream_url"]) as response:
        assert response.status_code == 200
        events = read_sse(response)
    assert events[0].event == "metadata" and events[0].data["run_id"] == run["run_id"]
    assert events[-1].event == "end" and events[-1].data["status"] == "completed"
    assert tokens_text(events) == events[-3].data["values"]["answer"]
    record = client.get(f"/runs/{run['run_id']}").json()
    assert record["status"] == "completed"
    assert record["graph"] == "chat" and record["thread_id"] == run["thread_id"]
    assert record["usage"]["output_tokens"] == 30
    assert record["events"] == events[-1].id
    assert record["first_token_ms"] is not None and record["elapsed_ms"] >= record["first_token_ms"]


def test_two_watchers_of_one_run_see_the_same_events(client: httpx.Client) -> None:
    run = _start(client, "hi [[tokens=20]] [[delay=0.01]]")
    with client.stream("GET", run["stream_url"]) as a, client.stream("GET", run["stream_url"]) as b:
        first, second = read_sse(a), read_sse(b)
    assert tokens_text(first) == tokens_text(second)
    assert first[-1].data == second[-1].data and first[-1].id == second[-1].id


def test_last_event_id_resumes_with_exactly_the_missing_events(client: httpx.Client) -> None:
    run = _start(client, "resume me [[tokens=40]] [[delay=0.005]]")
    with client.stream("GET", run["stream_url"]) as response:
        full = read_sse(response)
    unmerged = [e for e in full if e.event != "token"]
    cut = full[len(full) // 2]
    assert cut.id is not None
    with client.stream(
        "GET", run["stream_url"], headers={"Last-Event-ID": str(cut.id)}
    ) as response:
        rest = read_sse(response)
    assert rest[0].id is not None and rest[0].id > cut.id
    assert rest[-1].id == full[-1].id
    # the text after the cut is exactly the text the first reader got after the cut
    assert tokens_text(rest) == tokens_text([e for e in full if (e.id or 0) > cut.id])
    assert [e.event for e in rest if e.event != "token"] == [
        e.event for e in unmerged if (e.id or 0) > cut.id
    ]
    # the query parameter works the same, for clients that cannot set headers
    with client.stream("GET", f"{run['stream_url']}?last_event_id={cut.id}") as response:
        again = read_sse(response)
    assert tokens_text(again) == tokens_text(rest) and again[-1].id == rest[-1].id


def test_reconnect_after_end_gets_204(client: httpx.Client) -> None:
    run = _start(client, "short [[tokens=3]]")
    with client.stream("GET", run["stream_url"]) as response:
        events = read_sse(response)
    end_id = events[-1].id
    assert end_id is not None
    response = client.get(run["stream_url"], headers={"Last-Event-ID": str(end_id)})
    assert response.status_code == 204
    assert client.get(f"{run['stream_url']}?last_event_id={end_id}").status_code == 204
    # one before the end still gets the end
    with client.stream(
        "GET", run["stream_url"], headers={"Last-Event-ID": str(end_id - 1)}
    ) as response:
        assert [e.event for e in read_sse(response)] == ["end"]
