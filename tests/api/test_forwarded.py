"""Behind a reverse proxy: `stream_url` and `cancel_url` point at the proxy (X-Forwarded-Proto,
-Host, -Prefix from FORWARDED_ALLOW_IPS, and the ASGI root_path), and streams pass through a
real nginx with the README's config unbuffered and resumable.

The bug these pin: the URLs were built from `Host` alone, so behind a proxy they pointed at the
backend."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.live import SSE, LiveServer, parse_sse, read_sse, tokens_text
from tests.support.nginx import Nginx, readme_site

PROXIED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "chat.example.com:8443",
    "X-Forwarded-Prefix": "/api/",
}


def _links(client: httpx.Client, headers: dict[str, str], path: str = "/graphs/chat/runs") -> str:
    response = client.post(path, json={"input": {"query": "hi [[tokens=2]]"}}, headers=headers)
    assert response.status_code == 202, response.text
    body = response.json()
    run_id = body["run_id"]
    assert body["cancel_url"] == body["stream_url"].replace("/stream", "/cancel")
    stream_url: str = body["stream_url"]
    assert stream_url.endswith(f"/runs/{run_id}/stream")
    return stream_url.removesuffix(f"/runs/{run_id}/stream")


def test_forwarded_headers_from_a_trusted_peer_set_the_returned_urls(client: httpx.Client) -> None:
    assert _links(client, PROXIED) == "https://chat.example.com:8443/api"
    # one header at a time, each only its part
    base = str(client.base_url).rstrip("/")
    assert _links(client, {"X-Forwarded-Prefix": "/p"}) == f"{base}/p"
    assert _links(client, {"X-Forwarded-Host": "a.example"}) == "http://a.example"
    # several proxies: the first (client-facing) value of each
    assert _links(client, {"X-Forwarded-Host": "a.example, b.internal"}) == "http://a.example"


def test_forwarded_headers_apply_after_uvicorn_took_the_client_from_x_forwarded_for(
    client: httpx.Client,
) -> None:
    """uvicorn (proxy headers on by default) replaces the client address with X-Forwarded-For's
    before the app sees it; the app must still know the peer was trusted (app/forwarded.py)."""
    headers = {**PROXIED, "X-Forwarded-For": "203.0.113.7"}
    assert _links(client, headers) == "https://chat.example.com:8443/api"


def test_malformed_forwarded_values_are_ignored(client: httpx.Client) -> None:
    base = str(client.base_url).rstrip("/")
    for headers in [
        {"X-Forwarded-Host": "evil.example/path"},
        {"X-Forwarded-Host": "a b"},
        {"X-Forwarded-Prefix": "no-slash"},
        {"X-Forwarded-Prefix": "/a b"},
        {"X-Forwarded-Proto": "gopher"},
    ]:
        assert _links(client, headers) == base, headers


@pytest.fixture(scope="module")
def untrusting(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server behind `--root-path /svc` that trusts only a proxy that is not us."""
    server = LiveServer(
        tmp_path_factory.mktemp("untrusting"),
        {"FORWARDED_ALLOW_IPS": "10.255.255.1"},
        args=("--root-path", "/svc"),
    ).start()
    yield server
    server.stop()


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(untrusting: LiveServer) -> None:
    with httpx.Client(base_url=untrusting.url, timeout=30) as client:
        headers = {**PROXIED, "X-Forwarded-For": "203.0.113.7"}
        assert _links(client, headers) == f"{untrusting.url}/svc"


def test_the_asgi_root_path_prefixes_the_returned_urls(untrusting: LiveServer) -> None:
    with httpx.Client(base_url=untrusting.url, timeout=30) as client:
        assert _links(client, {}) == f"{untrusting.url}/svc"


@pytest.fixture(scope="module")
def nginx(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    proxy = Nginx(tmp_path_factory.mktemp("nginx"), readme_site(server.port)).start()
    yield proxy
    proxy.stop()


def _start_via(proxy: httpx.Client, query: str) -> dict[str, str]:
    response = proxy.post("/api/graphs/chat/runs", json={"input": {"query": query}})
    assert response.status_code == 202, response.text
    run: dict[str, str] = response.json()
    return run


def test_through_nginx_the_urls_point_at_the_proxy_and_work(nginx: Nginx) -> None:
    with httpx.Client(base_url=nginx.url, timeout=30) as proxy:
        run = _start_via(proxy, "[[tokens=5]] via nginx")
        assert run["stream_url"] == f"{nginx.url}/api/runs/{run['run_id']}/stream"
        assert run["cancel_url"] == f"{nginx.url}/api/runs/{run['run_id']}/cancel"
        with proxy.stream("GET", run["stream_url"]) as response:
            assert response.status_code == 200
            events = read_sse(response)
    assert events[-1].event == "end" and events[-1].data["status"] == "completed"


def test_through_nginx_tokens_arrive_while_the_run_is_still_running(
    nginx: Nginx, client: httpx.Client
) -> None:
    """Unbuffered: the first token reaches the client through nginx while the run still runs
    (it streams 40 tokens 50 ms apart); a buffering proxy would hold them to the end."""
    with httpx.Client(base_url=nginx.url, timeout=30) as proxy:
        run = _start_via(proxy, "[[tokens=40]] [[delay=0.05]] slowly")
        with proxy.stream("GET", run["stream_url"]) as response:
            events = parse_sse(response.iter_lines())
            first = next(e for e in events if e.event == "token")
            assert first.data["text"]
            status = client.get(f"/runs/{run['run_id']}").json()["status"]
            assert status == "running"
            rest = list(events)
    assert rest[-1].event == "end"


def test_through_nginx_last_event_id_resumes_with_the_missing_events(nginx: Nginx) -> None:
    with httpx.Client(base_url=nginx.url, timeout=30) as proxy:
        run = _start_via(proxy, "[[tokens=30]] [[delay=0.005]] resume via nginx")
        with proxy.stream("GET", run["stream_url"]) as response:
            full = read_sse(response)
        cut = full[len(full) // 2]
        assert cut.id is not None
        headers = {"Last-Event-ID": str(cut.id)}
        with proxy.stream("GET", run["stream_url"], headers=headers) as response:
            assert response.status_code == 200
            rest: list[SSE] = read_sse(response)
        assert rest[0].id is not None and rest[0].id > cut.id
        assert rest[-1].id == full[-1].id
        assert tokens_text(rest) == tokens_text([e for e in full if (e.id or 0) > cut.id])
        headers = {"Last-Event-ID": str(full[-1].id)}
        assert proxy.get(run["stream_url"], headers=headers).status_code == 204
