"""`GET /metrics` and the logs through the real server: each metric moves as its runs and
streams do (completed, cancelled, failed, paused, refused, a client gone), no label holds a run
or thread id, `/metrics` needs a key or METRICS_TOKEN, and with LOG_FORMAT=json every line is
one JSON object naming its run, with no key, token or secret anywhere in the log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.logformat import TextFormatter, redact
from tests.api.test_auth import bearer
from tests.conftest import ALICE_KEY, AUTH_KEYS, BOB_KEY
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer, parse_sse, wait_status

MODEL_KEY = "sk-model-key-never-logged-0123456789"
METRICS_TOKEN = "metrics-token-0123456789abcdef"
TOKEN_SECRET = "stream-token-secret-0123456789abcdef-xyz"
SLOW = "[[tokens=400]] [[delay=0.02]]"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metered(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "OPENAI_API_KEY": MODEL_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "LLM_MAX_RETRIES": "0",
        "LLM_MODEL": "fake-model",
        "API_KEYS": AUTH_KEYS,
        "STREAM_TOKEN_SECRET": TOKEN_SECRET,
        "METRICS_TOKEN": METRICS_TOKEN,
        "MAX_RUNS_PER_KEY": "2",
        "LOG_FORMAT": "json",
    }
    server = LiveServer(tmp_path_factory.mktemp("metered"), env).start()
    try:
        yield server
    finally:
        server.stop()


def scrape(server: LiveServer) -> Samples:
    response = httpx.get(f"{server.url}/metrics", headers=bearer(METRICS_TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_metrics(server: LiveServer, ok: Callable[[Samples], bool], timeout: float = 10) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if ok(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def _first_token(c: httpx.Client, run_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while c.get(f"/runs/{run_id}").json().get("first_token_ms") is None:
        assert time.monotonic() < deadline, f"run {run_id} streamed no token"
        time.sleep(0.02)


def _stream(c: httpx.Client, graph: str, body: dict[str, Any]) -> list[Any]:
    with c.stream("POST", f"/graphs/{graph}/stream", json=body) as response:
        assert response.status_code == 200, response.read()
        return list(parse_sse(response.iter_lines()))


def test_metrics_move_with_runs_and_streams(metered: LiveServer) -> None:
    before = scrape(metered)
    with httpx.Client(base_url=metered.url, headers=bearer(ALICE_KEY), timeout=30) as c:
        done = _stream(c, "chat", {"input": {"query": "hello [[tokens=5]]"}})
        assert done[-1].data["status"] == "completed"
        failed = _stream(c, "chat", {"input": {"query": "x [[fail=500]]"}})
        assert failed[-1].data["status"] == "failed"
        paused = _stream(c, "approval", {"input": {"request": "a note [[tokens=3]]"}})
        assert paused[-1].data["status"] == "paused"
        # a client that goes away mid-stream (its run goes on: on_disconnect continue)
        query = "go [[tokens=60]] [[delay=0.02]]"
        body = {"input": {"query": query}, "on_disconnect": "continue"}
        with c.stream("POST", "/graphs/chat/stream", json=body) as response:
            for event in parse_sse(response.iter_lines()):
                if event.event == "token":
                    break
        gone = wait_metrics(
            metered,
            lambda s: (
                value(s, "lgstream_stream_disconnects_total", reason="client_gone")
                > value(before, "lgstream_stream_disconnects_total", reason="client_gone")
            ),
        )
        assert value(gone, "lgstream_stream_disconnects_total", reason="client_gone") == (
            value(before, "lgstream_stream_disconnects_total", reason="client_gone") + 1
        )
    with httpx.Client(base_url=metered.url, headers=bearer(BOB_KEY), timeout=30) as c:
        slow = [
            c.post("/graphs/chat/runs", json={"input": {"query": f"s{i} {SLOW}"}}).json()
            for i in range(2)
        ]
        refused = c.post("/graphs/chat/runs", json={"input": {"query": "third"}})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_runs"
        running = scrape(metered)
        assert value(running, "lgstream_runs_in_progress", graph="chat") >= 2
        for run in slow:  # each has streamed its first token (a time to count) when cancelled
            _first_token(c, run["run_id"])
            assert c.post(run["cancel_url"]).json()["status"] == "cancelled"
    after = wait_metrics(
        metered, lambda s: value(s, "lgstream_runs_in_progress", graph="chat") == 0, timeout=30
    )

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("lgstream_runs_started_total", graph="chat") == 5
    assert moved("lgstream_runs_started_total", graph="approval") == 1
    assert moved("lgstream_runs_finished_total", graph="chat", status="completed") == 2
    assert moved("lgstream_runs_finished_total", graph="chat", status="failed") == 1
    assert moved("lgstream_runs_finished_total", graph="chat", status="cancelled") == 2
    assert moved("lgstream_runs_finished_total", graph="approval", status="paused") == 1
    assert value(after, "lgstream_runs_in_progress", graph="approval") == 0
    assert moved("lgstream_tokens_total", graph="chat") >= 5 + 60
    assert moved("lgstream_tokens_total", graph="approval") >= 3
    assert moved("lgstream_rate_limited_total", limit="too_many_runs") == 1
    assert moved("lgstream_cancel_latency_seconds_count") == 2
    assert moved("lgstream_run_duration_seconds_count", graph="chat") == 5
    assert moved("lgstream_time_to_first_token_seconds_count", graph="chat") >= 4
    sent_tokens = sum(t.data is not None for t in done if t.event == "token")
    assert moved("lgstream_events_sent_total", event="token") >= sent_tokens
    assert moved("lgstream_events_sent_total", event="end") == 3  # the three streams read to end
    assert moved("lgstream_events_sent_total", event="metadata") == 4
    assert value(after, "lgstream_streams_open") == 0


def test_no_label_holds_a_run_or_thread_id(metered: LiveServer) -> None:
    with httpx.Client(base_url=metered.url, headers=bearer(ALICE_KEY), timeout=30) as c:
        events = _stream(c, "chat", {"input": {"query": "ids [[tokens=2]]"}})
    meta = events[0].data
    text = httpx.get(f"{metered.url}/metrics", headers=bearer(METRICS_TOKEN)).text
    assert meta["run_id"] not in text and meta["thread_id"] not in text
    labels = {k for (_, ls) in scrape(metered) for k, _ in ls}
    assert labels <= {"graph", "status", "event", "reason", "limit", "le"}


def test_metrics_needs_a_key_or_the_metrics_token(metered: LiveServer) -> None:
    url = f"{metered.url}/metrics"
    bare = httpx.get(url)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "unauthorized"
    assert httpx.get(url, headers=bearer("wrong-token-0123456789")).status_code == 401
    assert httpx.get(url, headers=bearer(ALICE_KEY)).status_code == 200
    assert httpx.get(url, headers={"X-Api-Key": METRICS_TOKEN}).status_code == 200
    # the metrics token opens /metrics only
    assert httpx.get(f"{metered.url}/graphs", headers=bearer(METRICS_TOKEN)).status_code == 401


def test_json_logs_name_their_run_and_hold_no_secret(metered: LiveServer) -> None:
    with httpx.Client(base_url=metered.url, headers=bearer(ALICE_KEY), timeout=30) as c:
        run = c.post("/graphs/chat/runs", json={"input": {"query": "log me [[tokens=3]]"}}).json()
        wait_status(c, run["run_id"], "completed")
    (token,) = parse_qs(urlsplit(run["stream_url"]).query)["token"]
    with httpx.stream("GET", run["stream_url"], timeout=30) as response:  # the signed URL
        assert response.status_code == 200
        assert list(parse_sse(response.iter_lines()))[-1].event == "end"
    httpx.get(f"{metered.url}/graphs", headers={"X-Api-Key": BOB_KEY})
    lines = _wait_log(metered, lambda ls: any("[redacted]" in line for line in ls))
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= record.keys(), record
    started = [r for r in records if r.get("run_id") == run["run_id"]]
    assert {"run_id", "thread_id", "graph", "tenant"} <= started[0].keys()
    assert started[0]["thread_id"] == run["thread_id"] and started[0]["tenant"] == "alice"
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any("/runs/" in r["msg"] and "token=[redacted]" in r["msg"] for r in access)
    text = metered.logs()
    for secret in (ALICE_KEY, BOB_KEY, MODEL_KEY, METRICS_TOKEN, TOKEN_SECRET, token):
        assert secret not in text


def _wait_log(server: LiveServer, ok: Callable[[list[str]], bool]) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in server.logs().splitlines() if line.strip()]
        if ok(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_text_logs_stay_readable_and_redact_tokens() -> None:
    assert redact("GET /runs/r/stream?token=abc.def&x=1 HTTP/1.1") == (
        "GET /runs/r/stream?token=[redacted]&x=1 HTTP/1.1"
    )
    record = logging.LogRecord("app.engine", logging.INFO, __file__, 1, "run %s", ("r1",), None)
    assert TextFormatter().format(record) == "INFO:     app.engine: run r1"


def test_the_tenant_label_only_when_asked(fake: FakeOpenAI, tmp_path: Path) -> None:
    env = {
        "OPENAI_API_KEY": MODEL_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "API_KEYS": AUTH_KEYS,
        "METRICS_TOKEN": METRICS_TOKEN,
        "METRICS_TENANT_LABEL": "true",
    }
    server = LiveServer(tmp_path, env).start()
    try:
        with httpx.Client(base_url=server.url, headers=bearer(ALICE_KEY), timeout=30) as c:
            assert _stream(c, "chat", {"input": {"query": "t [[tokens=2]]"}})[-1].event == "end"
        samples = scrape(server)
        labels = {"graph": "chat", "tenant": "alice"}
        assert value(samples, "lgstream_runs_started_total", **labels) == 1
        assert value(samples, "lgstream_runs_finished_total", **labels, status="completed") == 1
    finally:
        server.stop()
