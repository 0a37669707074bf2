"""Slow clients never slow the run or other clients, never grow memory without bound, and still
get every token's text (merged) in order."""

from __future__ import annotations

import threading
import time

import httpx

from tests.support.live import (
    SSE,
    LiveServer,
    RawSSEClient,
    parse_sse,
    read_sse,
    tokens_text,
    wait_status,
)


def test_slow_reader_beside_a_fast_one(client: httpx.Client, server: LiveServer) -> None:
    # 10,000 tokens of 400 characters: ~5 MB of frames, more than the kernel's socket buffers
    # (up to 4 MB on loopback here) can absorb, so a reader that does not read really lags.
    tokens = 10_000
    body = {"input": {"query": f"[[tokens={tokens}]] [[size=400]]"}}
    # the same run once unwatched first, so the RSS baseline holds what such a run allocates
    warmup = client.post("/graphs/chat/runs", json=body).json()
    wait_status(client, warmup["run_id"], "completed")
    rss_before = server.rss_kb()
    run = client.post("/graphs/chat/runs", json=body).json()
    slow_clients = [RawSSEClient(server.url, f"/runs/{run['run_id']}/stream") for _ in range(20)]
    try:
        _slow_beside_fast(client, server, run, slow_clients, tokens, rss_before)
    finally:
        for slow_client in slow_clients:
            slow_client.close()


def _slow_beside_fast(
    client: httpx.Client,
    server: LiveServer,
    run: dict[str, str],
    slow_clients: list[RawSSEClient],
    tokens: int,
    rss_before: int,
) -> None:
    fast: list[SSE] = []

    def read_fast() -> None:
        with (
            httpx.Client(base_url=server.url, timeout=30) as c,
            c.stream("GET", run["stream_url"]) as response,
        ):
            fast.extend(read_sse(response))

    fast_thread = threading.Thread(target=read_fast)
    fast_thread.start()
    # The run completes although 20 readers have not read a byte past their tiny windows...
    wait_status(client, run["run_id"], "completed")
    # ...and the fast reader has everything without waiting for them.
    fast_thread.join(timeout=20)
    assert not fast_thread.is_alive()
    assert fast[-1].event == "end" and fast[-1].data["status"] == "completed"
    rss_growth_kb = server.rss_kb() - rss_before
    answer = next(e for e in fast if e.event == "update").data["values"]["answer"]
    assert tokens_text(fast) == answer

    for slow_client in slow_clients:
        slow = slow_client.read_all()
        assert tokens_text(slow) == answer  # the exact text, nothing lost or repeated
        assert slow[-1].event == "end" and slow[-1].id == fast[-1].id
        token_frames = sum(1 for e in slow if e.event == "token")
        assert token_frames < tokens  # it lagged, so tokens were merged
        assert [e.event for e in slow if e.event != "token"] == [
            e.event for e in fast if e.event != "token"
        ]
    # One run's log is ~15 MB here; 20 stalled readers must not each hold a copy of it
    # (that would be 100 MB more): what a reader holds is bounded by one batch.
    assert rss_growth_kb < 40_000, f"RSS grew {rss_growth_kb} KB"


def test_max_rate_caps_frames_and_keeps_the_text(client: httpx.Client) -> None:
    started = time.monotonic()
    with client.stream(
        "POST",
        "/graphs/chat/stream",
        json={"input": {"query": "[[tokens=60]] [[delay=0.01]]"}, "max_rate": 10},
    ) as response:
        events = read_sse(response)
    elapsed = time.monotonic() - started
    assert events[-1].data["status"] == "completed"
    assert len(events) <= 10 * elapsed + 2, (len(events), elapsed)
    assert (
        tokens_text(events)
        == next(e for e in events if e.event == "update").data["values"]["answer"]
    )
    assert sum(1 for e in events if e.event == "token") < 60


def test_client_that_takes_no_bytes_is_dropped_and_can_resume(tight: LiveServer) -> None:
    with httpx.Client(base_url=tight.url, timeout=30) as c:
        run = c.post(
            "/graphs/chat/runs", json={"input": {"query": "[[tokens=12000]] [[size=400]]"}}
        ).json()
        stalled = RawSSEClient(tight.url, f"/runs/{run['run_id']}/stream", rcvbuf=1024)
        try:
            wait_status(c, run["run_id"], "completed")
            deadline = time.monotonic() + 15
            while "dropped client" not in tight.logs() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "dropped client" in tight.logs()
            assert "Traceback" not in tight.logs()
            got = stalled.read_all()
        finally:
            stalled.close()
        assert got and got[-1].event != "end"  # cut off before the end
        last_id = got[-1].id
        # reconnecting with Last-Event-ID gets the rest, exactly
        with c.stream(
            "GET", run["stream_url"], headers={"Last-Event-ID": str(last_id)}
        ) as response:
            rest = list(parse_sse(response.iter_lines()))
        assert rest[-1].event == "end"
        with c.stream("GET", run["stream_url"]) as response:
            full = read_sse(response)
        assert tokens_text(got) + tokens_text(rest) == tokens_text(full)


def test_a_big_event_is_not_copied_for_each_stalled_reader(
    client: httpx.Client, server: LiveServer
) -> None:
    """Regression: the `update` of a long answer (here 2 MB) reached 30 readers whose sockets
    were full; sent as one piece it was copied whole into each connection's buffer (RSS grew
    ~130 MB). Sent in slices, each stalled reader holds at most one slice beyond the
    high-water mark (~13 MB in all)."""
    body = {"input": {"query": "[[tokens=10000]] [[size=200]]"}}
    warmup = client.post("/graphs/chat/runs", json=body).json()
    wait_status(client, warmup["run_id"], "completed")
    rss_before = server.rss_kb()
    run = client.post("/graphs/chat/runs", json=body).json()
    stalled = [RawSSEClient(server.url, f"/runs/{run['run_id']}/stream") for _ in range(30)]
    try:
        wait_status(client, run["run_id"], "completed")
        time.sleep(1.0)  # the readers reach the big event and block on it
        growth_kb = server.rss_kb() - rss_before
        whole = stalled[0].read_all()
    finally:
        for reader in stalled:
            reader.close()
    assert whole[-1].event == "end"
    answer = next(e for e in whole if e.event == "update").data["values"]["answer"]
    assert len(answer) == 2_000_000 and tokens_text(whole) == answer
    assert growth_kb < 40_000, f"RSS grew {growth_kb} KB with 30 stalled readers"
