"""Hostile and broken input through the real server: what a request's config may reach, bodies
that are too large, too deep or not text, heads that are too large, requests never finished,
runs that would store too much, harmful settings, and what error messages may say."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.graphs.leaky import SECRET_PATH, SECRET_URL
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer, refused_start, stream_run


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


@pytest.fixture(scope="module")
def guarded(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Small bounds: an 8 KiB head, 1 s to send a request, 1 MB of events per run."""
    server = LiveServer(
        tmp_path_factory.mktemp("guarded"),
        {
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": fake.base_url,
            "LLM_MAX_RETRIES": "0",
            "MAX_HEADER_BYTES": "8192",
            "REQUEST_READ_TIMEOUT_S": "1",
            "MAX_RUN_LOG_MB": "1",
            "PING_INTERVAL_S": "0.2",
        },
    ).start()
    yield server
    server.stop()


@pytest.fixture
def guarded_client(guarded: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=guarded.url, timeout=30) as c:
        yield c


# -- config: an allow-list --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"configurable": "str"}, "config.configurable"),  # was a 500
        ({"callbacks": []}, "config.callbacks"),
        ({"configurable": {"__pregel_send": 1}}, "config.configurable.__pregel_send"),
        ({"configurable": {"thread_id": "someone-elses"}}, "config.configurable.thread_id"),
        ({"configurable": {"checkpoint_ns": "x"}}, "config.configurable.checkpoint_ns"),
        ({"configurable": {"checkpoint_id": "x"}}, "config.configurable.checkpoint_id"),
        ({"metadata": {"langgraph_node": "x"}}, "config.metadata"),
        ({"recursion_limit": 10**6}, "config.recursion_limit"),
        ({"model": "gpt-4"}, "config.model"),
    ],
)
def test_config_beyond_the_allow_list_is_422_naming_the_key(
    client: httpx.Client, config: dict[str, Any], field: str
) -> None:
    response = client.post("/graphs/chat/runs", json={"input": {"query": "x"}, "config": config})
    code = "limit_too_high" if field == "config.recursion_limit" else "invalid_input"
    assert _error(response, 422, code).startswith(field)


def test_what_the_allow_list_lets_a_client_set_reaches_the_graph(client: httpx.Client) -> None:
    config = {
        "configurable": {"greeting": "hello"},
        "tags": ["mine"],
        "metadata": {"note": "n1"},
        "run_name": "my-run",
    }
    events = stream_run(client, "configured", {"input": {"query": "x"}, "config": config})
    update = next(e for e in events if e.event == "update").data["values"]
    assert update["answer"] == "hello"
    assert "mine" in update["tags"]
    assert update["metadata_note"] == "n1"
    assert events[-1].data["status"] == "completed"


# -- resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": {"query": "x"}, "resume": None}, "resume"),  # was a node_error
        ({"resume": {"approved": True}}, "resume"),
        ({"input": {"request": "x"}, "resume": {"approved": True}, "thread_id": "t"}, "input"),
    ],
)
def test_resume_needs_a_thread_and_no_input(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    message = _error(client.post("/graphs/approval/stream", json=body), 422, "invalid_input")
    assert message.startswith(field), message


# -- bodies ----------------------------------------------------------------------------------


def _raw(server: LiveServer, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` on a fresh connection; what came back until the server closed it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        # The server may stop reading and close first: its answer is still there.
        with contextlib.suppress(OSError):
            sock.sendall(request)
        return _read_until_closed(sock)


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_chunked_body_over_the_limit_is_413_before_it_is_all_sent(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /graphs/chat/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"x" * 65536
        for _ in range(18):  # 1.1 MiB, over MAX_BODY_BYTES; the body is never finished
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        answer = _read_until_closed(sock)  # a server waiting for the rest would time out here
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"body_too_large"' in answer


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"[" * 200_000 + b"]" * 200_000, 400, "malformed_json"),  # deeper than the parser goes
        (b'{"input": {"query": "\xff\xfe"}}', 400, "malformed_json"),  # not UTF-8
        (b'{"input": {"query": "\\ud800"}}', 422, "invalid_input"),  # a lone surrogate
        (b'{"input": {"query": "x"}, "thread_id": "a\\u0000b"}', 422, "invalid_input"),
        (
            b'{"resume": 1' + b"0" * 40 + b', "thread_id": "t"}',
            422,
            "invalid_input",
        ),  # beyond 64 bits: a 500 schemathesis found
        (b'{"input": {"query": "x"}, "limits": {"timeout_s": 1e999}}', 422, "invalid_input"),
        (
            b'{"input": {"query": "' + b"x" * 900_000 + b'"}, "max_rate": 1e-300}',
            422,
            "invalid_input",
        ),  # a huge string is fine; the stalling rate is not
    ],
)
def test_broken_bodies_are_400_or_422_never_500(
    client: httpx.Client, content: bytes, status: int, code: str
) -> None:
    headers = {"content-type": "application/json", "idempotency-key": f"broken-{len(content)}"}
    _error(client.post("/graphs/chat/runs", content=content, headers=headers), status, code)


def test_a_nul_byte_in_a_string_round_trips(client: httpx.Client) -> None:
    events = stream_run(client, "configured", {"input": {"query": "a\u0000b"}})
    assert events[-1].data["status"] == "completed"


# -- connections -----------------------------------------------------------------------------


def test_a_head_over_max_header_bytes_is_431_and_memory_stays_flat(guarded: LiveServer) -> None:
    before = guarded.rss_kb()
    for _ in range(4):
        big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (20 * 1024 * 1024)
        answer = _raw(guarded, big + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b'"headers_too_large"' in answer
    assert guarded.rss_kb() - before < 30 * 1024  # without the bound: +80 MB per request
    assert httpx.get(f"{guarded.url}/healthz", headers={"X-Fine": "a" * 4000}).status_code == 200


def test_requests_not_sent_whole_in_time_are_closed(guarded: LiveServer) -> None:
    partial = [
        b"",  # a connection that sends nothing
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # a head never finished
        b"POST /graphs/chat/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",  # a body
    ]
    socks = []
    for request in partial * 20:
        sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=10)
        sock.sendall(request)
        socks.append(sock)
    try:
        answers = [_read_until_closed(sock) for sock in socks]  # each ends when closed
    finally:
        for sock in socks:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}


def test_a_stream_longer_than_the_read_timeout_is_not_cut(guarded_client: httpx.Client) -> None:
    started = time.monotonic()
    events = stream_run(
        guarded_client, "chat", {"input": {"query": "[[tokens=30]] [[delay=0.06]]"}}
    )
    assert time.monotonic() - started > 1.5  # past REQUEST_READ_TIMEOUT_S=1
    assert events[-1].data["status"] == "completed"


# -- amplification ---------------------------------------------------------------------------


def test_a_run_whose_events_pass_max_run_log_mb_ends_run_too_large(
    guarded_client: httpx.Client,
) -> None:
    events = stream_run(guarded_client, "flood", {"input": {"chunks": 40, "size": 65536}})
    assert events[-2].event == "error" and events[-2].data["code"] == "run_too_large"
    assert events[-1].data == {**events[-1].data, "status": "failed", "reason": "run_too_large"}
    shown = sum(len(str(e.data)) for e in events if e.event == "custom")
    assert shown < 1.2 * 1024 * 1024  # it stopped near the bound, not after all 2.5 MB


# -- request values and settings -------------------------------------------------------------


def test_a_slow_max_rate_still_pings(guarded_client: httpx.Client) -> None:
    body = {"input": {"query": "[[tokens=5]]"}, "max_rate": 0.5}  # a frame every 2 s
    lines: list[str] = []
    with guarded_client.stream("POST", "/graphs/chat/stream", json=body) as response:
        for line in response.iter_lines():
            lines.append(line)
            if sum(1 for x in lines if x.startswith("event:")) == 2:
                break
    between = lines[lines.index(next(x for x in lines if x.startswith("event:"))) :]
    assert between.count(": ping") >= 3, lines  # PING_INTERVAL_S=0.2 inside the 2 s slot


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PING_INTERVAL_S": "1e-6"}, "PING_INTERVAL_S"),
        ({"SHUTDOWN_GRACE_S": "inf"}, "SHUTDOWN_GRACE_S"),
        ({"RUN_TIMEOUT_S": "nan"}, "RUN_TIMEOUT_S"),
        ({"MAX_RUN_LOG_MB": "0"}, "MAX_RUN_LOG_MB"),
        ({"REQUEST_READ_TIMEOUT_S": "0"}, "REQUEST_READ_TIMEOUT_S"),
        ({"DATABASE_URL": "sqlite:///"}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite:////proc/no-such-dir/x.db"}, "DATABASE_URL"),
    ],
)
def test_a_harmful_setting_stops_startup_with_one_line(
    tmp_path: Path, env: dict[str, str], name: str
) -> None:
    logs = refused_start(tmp_path, env)
    assert name in logs and "Traceback" not in logs, logs


# -- what errors say -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["url", "path"])
def test_a_failure_names_no_url_path_or_key_but_the_log_does(
    client: httpx.Client, server: LiveServer, kind: str
) -> None:
    events = stream_run(client, "leaky", {"input": {"kind": kind}})
    error = events[-2].data
    assert error["code"] == "node_error"
    for secret in (SECRET_URL, "10.9.8.7", "sk-leakedsecret123", SECRET_PATH, "/srv/"):
        assert secret not in error["message"], error
    run_id = events[0].data["run_id"]
    record = client.get(f"/runs/{run_id}").json()
    assert record["error"] == error
    detail = SECRET_URL if kind == "url" else SECRET_PATH
    deadline = time.monotonic() + 10
    while f"run {run_id} failed" not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in server.logs().splitlines() if f"run {run_id} failed" in x)
    assert detail in line


def test_upstream_failures_do_not_name_the_upstream(client: httpx.Client, fake: FakeOpenAI) -> None:
    for query in (
        "[[fail=500]]",
        "[[tokens=10]] [[fail_after=3]]",
        "[[tokens=5]] [[error_after=2]]",
    ):
        error = stream_run(client, "chat", {"input": {"query": query}})[-2].data
        assert fake.base_url not in error["message"] and "127.0.0.1" not in error["message"]
