"""The committed deploy/nginx.conf (what compose's `scale` profile runs) really works in front
of two workers on PostgreSQL + Redis: a real nginx with that file (only the upstream addresses
and the listen port swapped) round-robins over two live workers, streams tokens as they come,
and a reconnect or a cancel that lands on the other worker does what it would on the first."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.live import SSE, parse_sse, read_sse, tokens_text
from tests.support.nginx import Nginx, deploy_site
from tests.support.workers import Workers, several_workers


@pytest.fixture(scope="module")
def workers(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    with several_workers(fake, tmp_path_factory.mktemp("workers"), 2) as running:
        yield running


@pytest.fixture(scope="module")
def nginx(workers: Workers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    ports = [server.port for server in workers.servers]
    proxy = Nginx(tmp_path_factory.mktemp("nginx"), deploy_site(ports)).start()
    yield proxy
    proxy.stop()


Says = Callable[[str], bool]


def _which(workers: Workers, says: Says, among: list[int] | None = None) -> int:
    """The one worker (of `among`) whose log says it, waited for: uvicorn logs a request's
    access line as its response starts."""
    among = list(range(len(workers.servers))) if among is None else among
    deadline = time.monotonic() + 60  # a loaded machine writes access lines late
    while time.monotonic() < deadline:
        found = [i for i in among if says(workers.servers[i].logs())]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no worker logged it")


def _started(run_id: str) -> Says:
    return lambda logs: f"run {run_id} started" in logs


def _served(request: str) -> Says:
    return lambda logs: logs.count(f'"{request} HTTP/1.1"') == 1


def _start_via(proxy: httpx.Client, query: str) -> dict[str, str]:
    response = proxy.post("/graphs/chat/runs", json={"input": {"query": query}})
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_through_nginx_a_stream_is_unbuffered_and_a_reconnect_elsewhere_gets_the_rest(
    workers: Workers, nginx: Nginx
) -> None:
    with httpx.Client(base_url=nginx.url, timeout=30) as proxy, workers.client(0) as direct:
        run = _start_via(proxy, "[[tokens=30]] [[delay=0.1]] through nginx")
        run_id = run["run_id"]
        # X-Forwarded-Host from nginx (a trusted peer): the URLs point at nginx
        assert run["stream_url"] == f"{nginx.url}/runs/{run_id}/stream"
        seen: list[SSE] = []
        with proxy.stream("GET", run["stream_url"]) as response:
            assert response.status_code == 200
            for event in parse_sse(response.iter_lines()):
                seen.append(event)
                tokens = sum(1 for e in seen if e.event == "token")
                if event.event == "token" and tokens == 1:
                    # the first token came through while the run still runs: not buffered
                    assert direct.get(f"/runs/{run_id}").json()["status"] == "running"
                if tokens == 10:
                    break  # the client drops
        stream = f"GET /runs/{run_id}/stream"
        first = _which(workers, _served(stream))
        cut = seen[-1].id
        assert cut is not None
        with proxy.stream("GET", run["stream_url"], headers={"Last-Event-ID": str(cut)}) as r:
            assert r.status_code == 200
            rest = read_sse(r)
        # round-robin: the reconnect was served by the other worker (and only by it)
        assert _which(workers, _served(stream), among=[1 - first]) == 1 - first
        assert _served(stream)(workers.servers[first].logs())
        assert rest[-1].event == "end" and rest[-1].data["status"] == "completed"
        assert rest[0].id is not None and rest[0].id > cut
        ids = [e.id or 0 for e in seen + rest]
        assert ids == sorted(set(ids))  # nothing repeated
        with direct.stream("GET", f"/runs/{run_id}/stream") as response:
            whole = read_sse(response)
        assert tokens_text(seen) + tokens_text(rest) == tokens_text(whole)
        assert [e.id for e in whole][-1] == rest[-1].id


def test_a_cancel_through_nginx_on_the_other_worker_ends_the_stream(
    workers: Workers, nginx: Nginx
) -> None:
    with httpx.Client(base_url=nginx.url, timeout=30) as proxy:
        run = _start_via(proxy, "[[tokens=400]] [[delay=0.01]] cancel through nginx")
        run_id = run["run_id"]
        owner = _which(workers, _started(run_id))
        events: list[SSE] = []
        with proxy.stream("GET", run["stream_url"]) as response:
            for event in parse_sse(response.iter_lines()):
                events.append(event)
                if sum(1 for e in events if e.event == "token") == 3:
                    # the next request goes to the other worker than the stream's: send the
                    # cancel from the worker that does not run the run
                    on = _which(workers, _served(f"GET /runs/{run_id}/stream"))
                    if on != owner:
                        assert proxy.get("/healthz").status_code == 200
                    cancelled = proxy.post(run["cancel_url"])
                    assert cancelled.status_code == 202, cancelled.text
        cancel = f"POST /runs/{run_id}/cancel"
        assert _which(workers, _served(cancel)) != owner
        assert events[-1].event == "end" and events[-1].data["status"] == "cancelled"
        assert sum(1 for e in events if e.event == "token") < 400
        assert proxy.get(f"/runs/{run_id}").json()["status"] == "cancelled"
