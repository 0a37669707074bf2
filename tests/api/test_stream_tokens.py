"""Signed stream URLs through the real server: `stream_url` carries `?token=`, which reads that
run's stream (reconnects included) with no key, and nothing else; an altered or expired token is
401; the secret kept in the database makes tokens outlive a restart; keys never reach the log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.auth.tokens import StreamTokens
from tests.api.test_auth import bearer
from tests.conftest import ALICE_KEY, AUTH_KEYS, BARE_KEY, BOB_KEY, _fake_upstream
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer, parse_sse, wait_status


def _run(server: LiveServer, key: str = ALICE_KEY, query: str = "hi") -> dict[str, Any]:
    with httpx.Client(base_url=server.url, timeout=30, headers=bearer(key)) as c:
        response = c.post("/graphs/chat/runs", json={"input": {"query": query}})
        assert response.status_code == 202, response.text
        run: dict[str, Any] = response.json()
        wait_status(c, run["run_id"], "completed")
        return run


def _token(run: dict[str, Any]) -> str:
    url: str = run["stream_url"]
    (token,) = parse_qs(urlsplit(url).query)["token"]
    return token


def _unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def _read(url: str, **headers: str) -> list[Any]:
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()
        return list(parse_sse(response.iter_lines()))


def test_the_stream_url_reads_the_run_with_no_key_and_reconnects(auth_server: LiveServer) -> None:
    run = _run(auth_server)
    url = run["stream_url"]
    assert ALICE_KEY not in url
    events = _read(url)
    assert events[0].event == "metadata" and events[-1].event == "end"
    # what EventSource does on a drop: the same URL with Last-Event-ID
    rest = _read(url, **{"Last-Event-ID": str(events[2].id)})
    assert [e.id for e in rest] == [e.id for e in events[3:]]
    assert httpx.get(url, headers={"Last-Event-ID": str(events[-1].id)}).status_code == 204


def test_a_token_grants_nothing_but_its_own_runs_stream(auth_server: LiveServer) -> None:
    a, b = _run(auth_server), _run(auth_server)
    token = {"token": _token(a)}
    base = auth_server.url
    _unauthorized(httpx.get(f"{base}/runs/{b['run_id']}/stream", params=token))
    _unauthorized(httpx.get(f"{base}/runs/{a['run_id']}", params=token))
    _unauthorized(httpx.post(f"{base}/runs/{a['run_id']}/cancel", params=token))
    _unauthorized(httpx.get(f"{base}/threads/{a['thread_id']}", params=token))
    _unauthorized(httpx.post(f"{base}/graphs/chat/runs", params=token, json={"input": {}}))
    _unauthorized(httpx.get(f"{base}/graphs", params=token))


@pytest.mark.parametrize("part", ["tenant", "expiry", "signature"])
def test_an_altered_token_is_401(auth_server: LiveServer, part: str) -> None:
    run = _run(auth_server)
    tenant, expiry, signature = _token(run).rsplit(".", 2)
    if part == "tenant":
        tenant = "bob"  # a real tenant, but not the one it was signed for
    elif part == "expiry":
        expiry = str(int(expiry) + 3600)
    else:
        signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    altered = f"{tenant}.{expiry}.{signature}"
    url = f"{auth_server.url}/runs/{run['run_id']}/stream"
    _unauthorized(httpx.get(url, params={"token": altered}))
    _unauthorized(httpx.get(url, params={"token": "garbage"}))
    assert httpx.get(url, params={"token": _token(run)}).status_code == 200


def test_a_key_is_judged_alone_when_it_is_sent_with_a_token(auth_server: LiveServer) -> None:
    run = _run(auth_server)
    with httpx.Client(headers=bearer(BOB_KEY)) as bob:  # bob's key, alice's token
        response = bob.get(run["stream_url"])
    assert response.status_code == 404 and response.json()["error"]["code"] == "run_not_found"


def test_a_token_expires_after_the_runs_life_plus_the_ttl(fake: FakeOpenAI, tmp_path: Path) -> None:
    """RUN_TIMEOUT_S=1 + STREAM_TOKEN_TTL_S=1: the token works from the run's start and is 401
    about 2 s later, while a key still reads the run."""
    env = _fake_upstream(fake, API_KEYS=AUTH_KEYS, RUN_TIMEOUT_S="1", STREAM_TOKEN_TTL_S="1")
    server = LiveServer(tmp_path, env).start()
    try:
        started = time.monotonic()
        run = _run(server)
        assert httpx.get(run["stream_url"]).status_code == 200
        deadline = started + 10
        while (status := httpx.get(run["stream_url"]).status_code) == 200:
            assert time.monotonic() < deadline, "the token never expired"
            time.sleep(0.1)
        assert status == 401
        assert time.monotonic() - started >= 1.0  # not before the run's life (RUN_TIMEOUT_S)
        with_key = httpx.get(run["stream_url"].partition("?")[0], headers=bearer(ALICE_KEY))
        assert with_key.status_code == 200
    finally:
        server.stop()


def test_the_token_secret_is_kept_in_the_database_so_tokens_survive_a_restart(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    env = _fake_upstream(fake, API_KEYS=AUTH_KEYS, DATABASE_URL=f"sqlite:///{tmp_path}/a.db")
    first = LiveServer(tmp_path, env).start()
    try:
        run = _run(first)
    finally:
        first.stop()
    second = LiveServer(tmp_path, env).start()
    try:
        url = run["stream_url"].replace(f":{first.port}/", f":{second.port}/")
        assert _read(url)[-1].event == "end"
    finally:
        second.stop()


def test_stream_token_secret_is_the_key_tokens_are_signed_with(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    secret = "s3cret-0123456789-0123456789-0123"
    env = _fake_upstream(fake, API_KEYS=AUTH_KEYS, STREAM_TOKEN_SECRET=secret)
    server = LiveServer(tmp_path, env).start()
    try:
        run = _run(server)
    finally:
        server.stop()
    mine = StreamTokens(secret.encode(), lifetime_s=300 + 3600)  # RUN_TIMEOUT_S + the TTL
    assert mine.verify(_token(run), run["run_id"]) == "alice"
    assert StreamTokens(b"x" * 32, 3900).verify(_token(run), run["run_id"]) is None
    assert secret not in server.logs()


def test_keys_never_reach_the_log(auth_server: LiveServer) -> None:
    wrong = "wrong-key-that-must-not-be-logged-42"
    for key in (ALICE_KEY, BOB_KEY, BARE_KEY, wrong):
        httpx.get(f"{auth_server.url}/graphs", headers=bearer(key))
        httpx.get(f"{auth_server.url}/runs/nope", headers={"X-Api-Key": key})
        httpx.post(f"{auth_server.url}/graphs/chat/stream", headers=bearer(key), json={"input": {}})
    _run(auth_server, BARE_KEY)
    logs = auth_server.logs()
    assert "auth: 3 API keys" in logs
    for key in (ALICE_KEY, BOB_KEY, BARE_KEY, wrong):
        assert key not in logs


def test_a_bad_api_keys_setting_stops_startup_without_showing_the_key(
    tmp_path: Path,
) -> None:
    server = LiveServer(tmp_path, {"API_KEYS": "alice=tooShortKeyXY"})
    server.start(wait=False)
    try:
        assert server.wait_exit(30) != 0
    finally:
        server.stop()
    logs = server.logs()
    assert "API_KEYS" in logs and "at least 16" in logs
    assert "tooShortKeyXY" not in logs
