"""Several workers while Redis or PostgreSQL is briefly away: two live workers on a throwaway
PostgreSQL cluster and a throwaway redis-server of the test's own (the machine's shared servers
are never stopped).

Redis stopped: `/readyz` on every worker answers 503 and new runs are refused `503
store_unavailable` while it is down; a run in flight that outlives the outage completes (its
events are published again to the restarted, empty Redis) with every event once, on its own
worker and through another one. PostgreSQL stopped: `/readyz` answers 503, requests answer
within a bound, the run in flight ends `store_unavailable` (never `worker_lost`), and once it is
back the same worker processes (their pools) start runs and continue threads. Meanwhile each
worker retries at a bounded rate, not in a tight loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import _fake_upstream
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import SSE, LiveServer, parse_sse, stream_run, tokens_text
from tests.support.postgres import Cluster
from tests.support.redis_server import RedisServer
from tests.support.workers import Workers
from tests.support.workers import stream_of as _stream

LONG = "[[tokens=700]] [[delay=0.01]]"
BOUND_S = 8.0
"""How long the service may take to notice an outage, or its end (well within the shared
log's 10 s retry bound, so a run in flight outlives a short outage)."""
MAX_CPU = 0.35
"""Of one core, for a worker while a server it needs is down (a retry loop without its
back-off measured above half a core)."""


@dataclass
class Outage:
    workers: Workers
    redis: RedisServer
    postgres: Cluster


pytestmark = pytest.mark.timeout(
    300
)  # two workers start on a fresh cluster: slow on a busy machine


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    """One cluster, one Redis and two workers for the module's tests (each starts once the
    previous one's outage is over)."""
    tmp = tmp_path_factory.mktemp("outage")
    fake = FakeOpenAI(tokens=20).start()
    cluster = Cluster().start()  # its own temp dir: the postgres user must reach it
    redis_server = RedisServer(tmp).start()
    env = _fake_upstream(
        fake,
        DATABASE_URL=cluster.url,
        REDIS_URL=redis_server.url,
        REDIS_KEY_PREFIX="outage",
        WORKER_HEARTBEAT_S="0.5",
        EVENT_FLUSH_S="0.1",
    )
    workers = [LiveServer(tmp, env) for _ in range(2)]
    try:
        workers[0].start(wait=False).wait_ready(120)  # the first one sets the schema up
        workers[1].start(wait=False).wait_ready(120)
        yield Outage(Workers(workers, cluster.url), redis_server, cluster)
    finally:
        for server in workers:
            server.stop()
        redis_server.stop()
        cluster.close()
        fake.stop()


@pytest.fixture
def outage(servers: Outage) -> Outage:
    a_server, b_server = servers.workers.servers
    _until(lambda: _ready(a_server) == 200 and _ready(b_server) == 200, "both workers ready")
    return servers


def _until(check: Callable[[], bool], what: str, timeout: float = BOUND_S) -> float:
    """Wait until `check()` holds; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def _ready(server: LiveServer) -> int:
    return httpx.get(f"{server.url}/readyz", timeout=BOUND_S).status_code


def _start(client: httpx.Client, query: str, thread_id: str | None = None) -> httpx.Response:
    body: dict[str, object] = {"input": {"query": query}}
    if thread_id is not None:
        body["thread_id"] = thread_id
    return client.post("/graphs/chat/runs", json=body)


def _started(client: httpx.Client, query: str, thread_id: str | None = None) -> dict[str, str]:
    response = _start(client, query, thread_id)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _first_tokens(client: httpx.Client, run_id: str, n: int) -> list[SSE]:
    """Read the run's stream until `n` tokens have arrived, then drop the connection."""
    seen: list[SSE] = []
    with client.stream("GET", f"/runs/{run_id}/stream") as response:
        for event in parse_sse(response.iter_lines()):
            seen.append(event)
            if sum(1 for e in seen if e.event == "token") >= n:
                break
    return seen


class Reader(threading.Thread):
    """A whole stream, read in the background."""

    def __init__(self, client: httpx.Client, run_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.run_id = client, run_id
        self.events: list[SSE] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.client.stream("GET", f"/runs/{self.run_id}/stream") as response:
                for event in parse_sse(response.iter_lines()):
                    self.events.append(event)
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float = 60) -> list[SSE]:
        self.join(timeout)
        assert not self.is_alive(), "the stream did not end"
        assert self.error is None, self.error
        return self.events


def _cpu_s(server: LiveServer) -> float:
    """The worker process's user + system CPU time so far."""
    assert server.proc is not None
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ)


def _calm(servers: list[LiveServer], seconds: float = 3.0) -> list[float]:
    """Each worker's share of one core over `seconds`."""
    before = [_cpu_s(s) for s in servers]
    time.sleep(seconds)  # a measurement window, not a wait for state
    return [(_cpu_s(s) - b) / seconds for s, b in zip(servers, before, strict=True)]


def _exactly_once(events: list[SSE], stored: list[SSE]) -> None:
    """`events` are the run's `stored` events (a replay once it has ended, whose tokens a
    catching-up stream merges), each once, in order."""
    ids = [e.id or 0 for e in events]
    assert ids == sorted(set(ids)), "an event repeated or out of order"
    assert tokens_text(events) == tokens_text(stored), "a token missing or repeated"
    others = [(e.id, e.event, e.data) for e in events if e.event != "token"]
    assert others == [(e.id, e.event, e.data) for e in stored if e.event != "token"]


def test_a_short_redis_outage_refuses_new_runs_and_the_runs_in_flight_complete(
    outage: Outage,
) -> None:
    a_server, b_server = outage.workers.servers
    with outage.workers.client(0) as a, outage.workers.client(1) as b:
        on_a = _started(a, f"streamed on A {LONG}")
        via_b = _started(a, f"streamed through B {LONG}")
        whole_a = Reader(a, on_a["run_id"])
        whole_a.start()
        seen_b = _first_tokens(b, via_b["run_id"], 5)  # then the client drops

        outage.redis.stop()
        _until(lambda: _ready(a_server) != 200 and _ready(b_server) != 200, "readyz 503")
        for client in (a, b):
            refused = _start(client, "[[tokens=3]] while Redis is down")
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "store_unavailable"
        cpu = _calm([a_server, b_server], 2.0)
        assert max(cpu) < MAX_CPU, f"a worker spins while Redis is down: {cpu}"
        # both runs are still going: the outage is shorter than the shared log's retry bound
        assert a.get(f"/runs/{on_a['run_id']}").json()["status"] == "running"

        outage.redis.start()  # empty: it kept nothing
        _until(lambda: _ready(a_server) == 200 and _ready(b_server) == 200, "readyz 200 again")

        events = whole_a.result()
        _exactly_once(events, _stream(b, on_a["run_id"]))
        assert events[0].event == "metadata" and events[-1].event == "end", events[-3:]
        assert events[-1].data["status"] == "completed"
        rest = _stream(b, via_b["run_id"], last=seen_b[-1].id)
        assert rest[-1].event == "end" and rest[-1].data["status"] == "completed"
        _exactly_once(seen_b + rest, _stream(a, via_b["run_id"]))
        # new runs work across workers again: created on B, streamed live on A
        run = _started(b, "[[tokens=30]] [[delay=0.01]] after the outage")
        after = _stream(a, run["run_id"])
        assert after[-1].data["status"] == "completed"
        assert len(tokens_text(after)) > 0


def test_a_long_redis_outage_ends_the_runs_in_flight_store_unavailable(
    outage: Outage,
) -> None:
    a_server, b_server = outage.workers.servers
    with outage.workers.client(0) as a, outage.workers.client(1) as b:
        run = _started(a, "[[tokens=3000]] [[delay=0.01]] longer than the bound")
        whole_a = Reader(a, run["run_id"])
        whole_a.start()
        _first_tokens(b, run["run_id"], 3)
        outage.redis.stop()
        events = whole_a.result(timeout=30)  # the shared log's bound is 10 s
        assert [e.event for e in events[-2:]] == ["error", "end"], events[-3:]
        assert events[-2].data["code"] == "store_unavailable"
        assert events[-1].data["status"] == "failed"
        outage.redis.start()
        _until(lambda: _ready(a_server) == 200 and _ready(b_server) == 200, "readyz 200 again")
        _exactly_once(events, _stream(b, run["run_id"]))
        record = b.get(f"/runs/{run['run_id']}").json()
        assert record["status"] == "failed", record
        assert record["error"]["code"] == "store_unavailable"
        again = _started(a, "[[tokens=20]] [[delay=0.01]] back")
        assert _stream(b, again["run_id"])[-1].data["status"] == "completed"


def test_a_postgres_outage_answers_within_a_bound_and_the_workers_recover(
    outage: Outage,
) -> None:
    a_server, b_server = outage.workers.servers
    pids = [s.proc.pid for s in (a_server, b_server) if s.proc is not None]
    with outage.workers.client(0) as a, outage.workers.client(1) as b:
        done = stream_run(a, "chat", {"input": {"query": "[[tokens=3]] one"}, "thread_id": "t"})
        assert done[-1].data["status"] == "completed"
        run = _started(a, f"in flight {LONG}")
        whole_b = Reader(b, run["run_id"])
        whole_b.start()
        _first_tokens(a, run["run_id"], 3)

        outage.postgres.stop()
        _until(lambda: _ready(a_server) != 200 and _ready(b_server) != 200, "readyz 503")
        for client in (a, b):
            asked = time.monotonic()
            answer = _start(client, "[[tokens=3]] while PostgreSQL is down")
            assert time.monotonic() - asked < BOUND_S, "a request hung on the outage"
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "store_unavailable"
        cpu = _calm([a_server, b_server], 2.0)
        assert max(cpu) < MAX_CPU, f"a worker spins while PostgreSQL is down: {cpu}"
        for server in (a_server, b_server):  # a retry is logged per beat or pass, not in a loop
            assert server.logs().count("heartbeat failed") < 20

        # A pool with no connection counts as the store being down after BUSY_BOUND_S (10 s),
        # then the owner ends its live runs (it answers from memory meanwhile).
        _until(
            lambda: a.get(f"/runs/{run['run_id']}").json()["status"] == "failed",
            "the run in flight ends while PostgreSQL is down",
            timeout=30,
        )
        outage.postgres.start()
        _until(lambda: _ready(a_server) == 200 and _ready(b_server) == 200, "readyz 200 again")
        events = whole_b.result()
        assert [e.event for e in events[-2:]] == ["error", "end"], events[-3:]
        assert events[-2].data["code"] == "store_unavailable"  # not `worker_lost`
        _exactly_once(events, _stream(a, run["run_id"]))
        # long enough for a worker to judge the others' leases (3 beats of 0.5 s, and one)
        for client in (a, b):
            ended = client.get(f"/runs/{run['run_id']}")
            assert ended.json()["error"]["code"] == "store_unavailable", ended.json()
        for client, text in ((b, "two"), (a, "three")):
            body = {"input": {"query": f"[[tokens=3]] {text}"}, "thread_id": "t"}
            again = stream_run(client, "chat", body)
            assert again[-1].data["status"] == "completed", again[-3:]
        # a run started once both renew their leases again is nobody's `worker_lost`
        other = _started(b, "[[tokens=20]] [[delay=0.01]] across")
        across = _stream(a, other["run_id"])
        assert across[-1].data["status"] == "completed", across[-3:]
        assert [s.proc.pid for s in (a_server, b_server) if s.proc is not None] == pids
        assert all(s.proc is not None and s.proc.poll() is None for s in (a_server, b_server))
