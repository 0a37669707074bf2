"""Every bad input gets a clear JSON error with a stable code; failures inside a run end it
with `error` + `end {failed}`; the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI, free_port, token_text
from tests.support.live import LiveServer, refused_start, stream_run


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


def test_unknown_graph_is_404_json_not_a_stream(client: httpx.Client) -> None:
    _error(client.get("/graphs/nope"), 404, "graph_not_found")
    _error(client.post("/graphs/nope/stream", json={"input": {}}), 404, "graph_not_found")
    _error(client.post("/graphs/nope/runs", json={"input": {}}), 404, "graph_not_found")


def test_unknown_run_is_404(client: httpx.Client) -> None:
    _error(client.get("/runs/nope"), 404, "run_not_found")
    _error(client.get("/runs/nope/stream"), 404, "run_not_found")
    _error(client.post("/runs/nope/cancel"), 404, "run_not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": {"question": "x"}}, "input.query"),
        ({"input": {"query": 42}}, "input.query"),
        ({"input": "just text"}, "input"),
        ({"input": {"query": "x"}, "limits": {"max_tokens": 0}}, "limits.max_tokens"),
        ({"input": {"query": "x"}, "on_disconnect": "explode"}, "on_disconnect"),
        ({"input": {"query": "x"}, "inptu": {}}, "inptu"),
    ],
)
def test_wrong_body_is_422_naming_the_field(
    client: httpx.Client, body: dict[str, object], field: str
) -> None:
    message = _error(client.post("/graphs/chat/stream", json=body), 422, "invalid_input")
    assert message.startswith(field), message


def test_missing_input_on_a_new_thread_is_422(client: httpx.Client) -> None:
    message = _error(client.post("/graphs/chat/runs", json={}), 422, "invalid_input")
    assert message.startswith("input")


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/graphs/chat/stream", content=b'{"input": {', headers={"content-type": "application/json"}
    )
    _error(response, 400, "malformed_json")


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    body = b'{"input": {"query": "' + b"x" * (1024 * 1024 + 10) + b'"}}'
    _error(
        client.post(
            "/graphs/chat/stream", content=body, headers={"content-type": "application/json"}
        ),
        413,
        "body_too_large",
    )


def test_limits_above_the_caps_are_422(client: httpx.Client) -> None:
    for limits in ({"max_tokens": 10**9}, {"timeout_s": 10**6}, {"recursion_limit": 10**4}):
        message = _error(
            client.post("/graphs/chat/runs", json={"input": {"query": "x"}, "limits": limits}),
            422,
            "limit_too_high",
        )
        assert message.startswith(f"limits.{next(iter(limits))}")


def test_second_run_on_a_busy_thread_is_409(client: httpx.Client) -> None:
    first = client.post(
        "/graphs/chat/runs",
        json={"input": {"query": "[[tokens=300]] [[delay=0.02]]"}, "thread_id": "busy-thread"},
    ).json()
    try:
        _error(
            client.post(
                "/graphs/chat/runs", json={"input": {"query": "x"}, "thread_id": "busy-thread"}
            ),
            409,
            "thread_busy",
        )
    finally:
        client.post(first["cancel_url"])
    # once the first has ended, the thread takes runs again
    again = client.post(
        "/graphs/chat/runs", json={"input": {"query": "[[tokens=1]]"}, "thread_id": "busy-thread"}
    )
    assert again.status_code == 202


def _failed(events: list, code: str) -> str:  # type: ignore[type-arg]
    assert events[-2].event == "error", events[-3:]
    assert events[-2].data["code"] == code
    assert events[-1].event == "end"
    assert events[-1].data["status"] == "failed" and events[-1].data["reason"] == code
    message = str(events[-2].data["message"])
    assert "Traceback" not in message and 'File "' not in message
    return message


def test_upstream_500_fails_the_run_and_the_server_keeps_serving(client: httpx.Client) -> None:
    events = stream_run(client, "chat", {"input": {"query": "[[fail=500]]"}})
    assert "500" in _failed(events, "upstream_error")
    assert (
        stream_run(client, "chat", {"input": {"query": "[[tokens=2]]"}})[-1].data["status"]
        == "completed"
    )


def test_upstream_dropping_mid_stream_fails_the_run(client: httpx.Client) -> None:
    events = stream_run(client, "chat", {"input": {"query": "[[tokens=10]] [[fail_after=3]]"}})
    _failed(events, "upstream_unavailable")
    assert any(e.event == "token" for e in events)


def test_upstream_error_sent_in_the_stream_fails_the_run(client: httpx.Client) -> None:
    events = stream_run(client, "chat", {"input": {"query": "[[tokens=10]] [[error_after=3]]"}})
    assert "injected stream error" in _failed(events, "upstream_error")
    assert "".join(e.data["text"] for e in events if e.event == "token") == "".join(
        token_text(i) for i in range(3)
    )


def test_tool_that_raises_fails_the_run(client: httpx.Client) -> None:
    message = _failed(stream_run(client, "faulty_tool", {"input": {"query": "boom"}}), "tool_error")
    assert "explode refused" in message


def test_token_limit_stops_the_model(client: httpx.Client, fake: FakeOpenAI) -> None:
    abandoned = fake.snapshot().abandoned
    events = stream_run(
        client,
        "chat",
        {"input": {"query": "[[tokens=200]] [[delay=0.01]]"}, "limits": {"max_tokens": 5}},
    )
    _failed(events, "token_limit")
    fake.wait_for(lambda s: s.abandoned >= abandoned + 1, timeout=5)


def test_timeout_fails_the_run(client: httpx.Client) -> None:
    events = stream_run(
        client,
        "chat",
        {"input": {"query": "[[tokens=200]] [[delay=0.02]]"}, "limits": {"timeout_s": 0.3}},
    )
    _failed(events, "timeout")


def test_recursion_limit_fails_the_run(client: httpx.Client) -> None:
    body = {
        "input": {
            "messages": [{"role": "user", "content": '[[tool=calculator:{"expression": "1+1"}]]'}]
        },
        "limits": {"recursion_limit": 2},
    }
    _failed(stream_run(client, "agent", body), "recursion_limit")


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("unreachable"),
        {
            "OPENAI_API_KEY": "k",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
            "LLM_MAX_RETRIES": "0",
        },
    ).start()
    yield server
    server.stop()


def test_connection_refused_fails_the_run(unreachable: LiveServer) -> None:
    with httpx.Client(base_url=unreachable.url, timeout=30) as c:
        _failed(stream_run(c, "chat", {"input": {"query": "hi"}}), "upstream_unavailable")
        assert c.get("/healthz").status_code == 200


def test_over_max_concurrent_runs_is_429_with_retry_after(tight: LiveServer) -> None:
    with httpx.Client(base_url=tight.url, timeout=30) as c:
        slow = {"input": {"query": "[[tokens=500]] [[delay=0.02]]"}}
        running = [c.post("/graphs/chat/runs", json=slow).json() for _ in range(2)]
        try:
            response = c.post("/graphs/chat/runs", json=slow)
            _error(response, 429, "too_many_runs")
            assert response.headers["retry-after"] == "1"
            _error(c.post("/graphs/chat/stream", json=slow), 429, "too_many_runs")
        finally:
            for run in running:
                c.post(run["cancel_url"])
        assert c.post("/graphs/chat/runs", json={"input": {"query": "x"}}).status_code == 202


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MAX_CONCURRENT_RUNS": "zero"}, "MAX_CONCURRENT_RUNS"),
        ({"SEND_TIMEOUT_S": "-1"}, "SEND_TIMEOUT_S"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"GRAPHS_DIR": "graphs,tests/graphs_broken"}, "tests.graphs_broken.broken"),
    ],
)
def test_bad_setting_or_broken_graph_stops_startup_naming_it(
    tmp_path: Path, env: dict[str, str], name: str
) -> None:
    assert name in refused_start(tmp_path, env)
