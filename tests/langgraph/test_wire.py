"""The LangGraph API's bytes and statuses as LANGGRAPH_API.md records them, read with plain
httpx (the SDK forgives much: it carries an `id` forward to parts that have none, and reads any
content type starting with `text/event-stream`): CRLF lines, `event`/`data`/`id` in that order
in every frame, the stream headers, `200` creates, a `202` empty-bodied cancel, a `409` JSON
reject before any stream."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.fake_openai import token_text

PREFIX = "/langgraph"


def _frames(raw: bytes) -> list[tuple[str, Any, int]]:
    """(event, data, id) of every frame; asserts each is CRLF-framed, fields in order."""
    assert raw.endswith(b"\r\n\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b""), "a line not ended by CRLF"
    parsed = []
    for block in raw.split(b"\r\n\r\n")[:-1]:
        if block.startswith(b":"):
            assert block == b": heartbeat"
            continue
        lines = block.split(b"\r\n")
        assert [line.split(b": ", 1)[0] for line in lines] == [b"event", b"data", b"id"], block
        parsed.append((lines[0][7:].decode(), json.loads(lines[1][6:]), int(lines[2][4:].decode())))
    return parsed


def test_stream_bytes_headers_and_statuses(client: httpx.Client) -> None:
    made = client.post(f"{PREFIX}/threads", json={})
    assert made.status_code == 200
    assert made.json()["status"] == "idle" and made.json()["values"] is None
    t = made.json()["thread_id"]
    body = {
        "assistant_id": "chat",
        "input": {"query": "[[tokens=3]] hi"},
        "stream_mode": ["values", "updates", "messages-tuple"],
    }
    with client.stream(
        "POST",
        f"{PREFIX}/threads/{t}/runs/stream",
        json=body,
        headers={"Accept": "text/event-stream", "Cache-Control": "no-store"},
    ) as response:
        assert response.status_code == 200
        headers = response.headers
        raw = response.read()
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-store" and headers["x-accel-buffering"] == "no"
    frames = _frames(raw)
    event, metadata, _ = frames[0]
    assert event == "metadata" and metadata.keys() == {"run_id", "attempt"}  # no thread_id
    run_id = metadata["run_id"]
    # paths relative to the API's URL, as the reference sends them (both SDKs prepend it)
    assert headers["content-location"] == f"/threads/{t}/runs/{run_id}"
    assert headers["location"] == f"/threads/{t}/runs/{run_id}/stream"
    ids = [i for _, _, i in frames]
    assert ids == sorted(set(ids))  # every frame has its own id, increasing
    answer = "".join(token_text(i) for i in range(3))
    # the input, filtered to the output schema, is `{}`: not sent (as LangGraph)
    assert [d for e, d, _ in frames if e == "values"] == [{"answer": answer}]
    assert [d for e, d, _ in frames if e == "updates"] == [{"llm": {"answer": answer}}]

    # A background run: `200` (not 202), `Content-Location`, no `Location`.
    long = {"assistant_id": "chat", "input": {"query": "[[tokens=400]] [[delay=0.02]] x"}}
    created = client.post(f"{PREFIX}/threads/{t}/runs", json=long)
    assert created.status_code == 200 and created.json()["status"] == "pending"
    r = created.json()["run_id"]
    assert created.headers["content-location"] == f"/threads/{t}/runs/{r}"
    assert "location" not in created.headers
    # `reject` on the busy thread: a JSON 409 before any stream
    rejected = client.post(
        f"{PREFIX}/threads/{t}/runs/stream",
        json={**long, "multitask_strategy": "reject"},
        headers={"Accept": "text/event-stream"},
    )
    assert rejected.status_code == 409
    assert rejected.headers["content-type"].startswith("application/json")
    # cancel as the SDK sends it (no body, no content type): 202, empty body
    cancelled = client.post(
        f"{PREFIX}/threads/{t}/runs/{r}/cancel", params={"wait": 0, "action": "interrupt"}
    )
    assert cancelled.status_code == 202 and cancelled.content == b""
    assert client.get(f"{PREFIX}/threads/{t}/runs/{r}").json()["status"] == "interrupted"


def test_a_quiet_run_gets_a_heartbeat_every_five_seconds(client: httpx.Client) -> None:
    """The shared server pings native streams every 15 s (PING_INTERVAL_S); a LangGraph stream
    gets the reference's `: heartbeat` within 5 s of quiet."""
    body = {"assistant_id": "chat", "input": {"query": "[[first=5.5]] [[tokens=2]] slow"}}
    with client.stream("POST", f"{PREFIX}/runs/stream", json=body, timeout=30) as response:
        raw = response.read()
    blocks = raw.split(b"\r\n\r\n")
    beat = blocks.index(b": heartbeat")
    first_values = next(i for i, b in enumerate(blocks) if b.startswith(b"event: values"))
    assert beat < first_values  # while the run was quiet, before its answer
