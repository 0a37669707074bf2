"""`Idempotency-Key` on run creation: a retried request gets the run the first one created.

The bug these pin: `fetch-event-source` re-sent `POST …/stream` after a network drop, and the
user saw the cut-off answer followed by a whole new one, and paid for two model calls."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import _fake_upstream
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import SSE, LiveServer, parse_sse, read_sse, tokens_text, wait_status


def _calls(fake: FakeOpenAI, marker: str) -> int:
    """How many model requests carried `marker` in their messages."""
    return sum(marker in json.dumps(r) for r in fake.snapshot().requests)


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{uuid.uuid4()}"}


def test_a_retried_post_stream_attaches_to_its_run_from_last_event_id(
    client: httpx.Client, fake: FakeOpenAI
) -> None:
    """The dropped connection's retry carries the same key and its Last-Event-ID: it gets the
    rest of the same run, not a second run, and the model is called once."""
    marker = f"retry-{uuid.uuid4()}"
    body = {
        "input": {"query": f"{marker} [[tokens=40]] [[delay=0.01]]"},
        "thread_id": f"idem-{uuid.uuid4()}",
        "on_disconnect": "continue",
    }
    key = _key()
    seen: list[SSE] = []
    with client.stream("POST", "/graphs/chat/stream", json=body, headers=key) as response:
        assert response.status_code == 200
        for event in parse_sse(response.iter_lines()):
            seen.append(event)
            if sum(e.event == "token" for e in seen) >= 5:
                break  # the network drops
    last = seen[-1].id
    assert last is not None
    headers = {**key, "Last-Event-ID": str(last)}
    with client.stream("POST", "/graphs/chat/stream", json=body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        rest = read_sse(response)
    assert rest[0].id is not None and rest[0].id > last
    assert [e.event for e in rest].count("metadata") == 0
    assert rest[-1].event == "end" and rest[-1].data["status"] == "completed"
    answer = next(e for e in rest if e.event == "update").data["values"]["answer"]
    assert tokens_text(seen) + tokens_text(rest) == answer
    assert _calls(fake, marker) == 1
    # and once the end was delivered, the same retry is told to stop
    headers = {**key, "Last-Event-ID": str(rest[-1].id)}
    assert client.post("/graphs/chat/stream", json=body, headers=headers).status_code == 204


def test_a_retried_post_runs_returns_the_same_run(client: httpx.Client, fake: FakeOpenAI) -> None:
    marker = f"bg-{uuid.uuid4()}"
    body = {"input": {"query": f"{marker} [[tokens=30]] [[delay=0.01]]"}, "thread_id": marker}
    key = _key()
    first = client.post("/graphs/chat/runs", json=body, headers=key)
    # the run holds its thread: without the key this would be 409 thread_busy
    second = client.post("/graphs/chat/runs", json=body, headers=key)
    assert first.status_code == second.status_code == 202, second.text
    assert second.json()["run_id"] == first.json()["run_id"]
    assert second.json()["stream_url"] == first.json()["stream_url"]
    wait_status(client, first.json()["run_id"], "completed")
    third = client.post("/graphs/chat/runs", json=body, headers=key)
    assert third.json() | {"status": "running"} == first.json()
    assert third.json()["status"] == "completed"
    assert _calls(fake, marker) == 1


def test_the_same_key_on_the_other_endpoint_attaches_to_the_same_run(
    client: httpx.Client,
) -> None:
    body = {"input": {"query": "both [[tokens=10]]"}}
    key = _key()
    run = client.post("/graphs/chat/runs", json=body, headers=key).json()
    with client.stream("POST", "/graphs/chat/stream", json=body, headers=key) as response:
        events = read_sse(response)
    assert events[0].event == "metadata" and events[0].data["run_id"] == run["run_id"]


def test_concurrent_requests_with_one_key_make_one_run(
    server: LiveServer, client: httpx.Client, fake: FakeOpenAI
) -> None:
    """Retries that race each other (a client retrying while the first request is still being
    served) wait for the first one's outcome instead of each starting a run."""
    marker = f"race-{uuid.uuid4()}"
    body = {"input": {"query": f"{marker} [[tokens=10]]"}, "thread_id": marker}
    key = _key()
    clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(8)]
    for c in clients:  # connected before the race starts
        assert c.get("/healthz").status_code == 200
    go = threading.Barrier(len(clients))

    def post(c: httpx.Client) -> httpx.Response:
        go.wait()
        return c.post("/graphs/chat/runs", json=body, headers=key)

    with ThreadPoolExecutor(len(clients)) as pool:
        responses = list(pool.map(post, clients))
    for c in clients:
        c.close()
    assert [r.status_code for r in responses] == [202] * len(clients), [r.text for r in responses]
    run_ids = {r.json()["run_id"] for r in responses}
    assert len(run_ids) == 1
    wait_status(client, run_ids.pop(), "completed")
    assert _calls(fake, marker) == 1


def test_the_same_key_with_another_body_is_409_idempotency_mismatch(client: httpx.Client) -> None:
    key = _key()
    first = client.post("/graphs/chat/runs", json={"input": {"query": "a"}}, headers=key)
    assert first.status_code == 202
    for path, body in [
        ("/graphs/chat/runs", {"input": {"query": "b"}}),
        ("/graphs/chat/stream", {"input": {"query": "a"}, "max_rate": 5}),
        ("/graphs/report/runs", {"input": {"topic": "a"}}),
    ]:
        response = client.post(path, json=body, headers=key)
        assert response.status_code == 409, (path, response.text)
        assert response.json()["error"]["code"] == "idempotency_mismatch"
    # defaults spelled out are the same request
    same = {"input": {"query": "a"}, "on_disconnect": "cancel"}
    again = client.post("/graphs/chat/runs", json=same, headers=key)
    assert again.status_code == 202 and again.json()["run_id"] == first.json()["run_id"]


def test_a_bad_key_is_422_invalid_idempotency_key(client: httpx.Client) -> None:
    body = {"input": {"query": "x"}}
    for bad in ["", "x" * 256, "has space", "tab\tkey", "naïve"]:
        for path in ("/graphs/chat/runs", "/graphs/chat/stream"):
            headers = {b"Idempotency-Key": bad.encode()}
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["error"]["code"] == "invalid_idempotency_key"
    longest = client.post("/graphs/chat/runs", json=body, headers={"Idempotency-Key": "k" * 255})
    assert longest.status_code == 202


def test_a_failed_start_binds_nothing(client: httpx.Client) -> None:
    """A request refused before its run starts (here: its thread is busy) leaves the key free,
    so its retry is judged afresh and starts the run once the thread is free."""
    thread = f"busy-{uuid.uuid4()}"
    blocker = client.post(
        "/graphs/chat/runs",
        json={"input": {"query": "[[tokens=20]] [[delay=0.02]]"}, "thread_id": thread},
    ).json()
    key = _key()
    body = {"input": {"query": "after"}, "thread_id": thread}
    refused = client.post("/graphs/chat/runs", json=body, headers=key)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "thread_busy"
    wait_status(client, blocker["run_id"], "completed")
    started = client.post("/graphs/chat/runs", json=body, headers=key)
    assert started.status_code == 202 and started.json()["run_id"] != blocker["run_id"]


def test_keys_survive_a_restart(fake: FakeOpenAI, tmp_path: Path) -> None:
    env = _fake_upstream(fake, DATABASE_URL=f"sqlite:///{tmp_path / 'keys.db'}")
    key, body = _key(), {"input": {"query": "kept [[tokens=5]]"}}
    first = LiveServer(tmp_path, env).start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            run: dict[str, Any] = client.post("/graphs/chat/runs", json=body, headers=key).json()
            wait_status(client, run["run_id"], "completed")
    finally:
        first.stop()
    second = LiveServer(tmp_path, env).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            again = client.post("/graphs/chat/runs", json=body, headers=key)
            assert again.status_code == 202
            assert again.json()["run_id"] == run["run_id"]
            assert again.json()["status"] == "completed"
    finally:
        second.stop()
