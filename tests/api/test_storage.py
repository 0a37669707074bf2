"""A data disk that fills up under a live server: a real tmpfs of its own (mounted as root; the
test fails, never skips, if it cannot mount), filled with a file to the last byte, then freed."""

from __future__ import annotations

import errno
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import _fake_upstream
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import SSE, LiveServer, parse_sse, stream_run, wait_status

DISK_MB = 24  # the database, its WAL, and room for the service's 4 MiB free-space floor


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"this test needs a tmpfs of its own (run as root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        # lazy: a server the test failed to stop must not leave the mount behind
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left."""
    filler = disk / "filler"
    block = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    out.write(block[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def test_a_full_data_disk_is_reported_and_ends_live_runs_and_refuses_new_ones_until_freed(
    fake: FakeOpenAI, small_disk: Path, tmp_path: Path
) -> None:
    """Regression: with the disk full every new run was a 500 and /readyz said ready. Now
    /readyz says `store_unavailable`, new runs get 503 `store_unavailable`, the run in flight
    ends `failed` with that code (its stream gets `error` and `end`), and once space is freed
    the server is ready again and the failed run's record is stored."""
    env = _fake_upstream(fake, DATABASE_URL=f"sqlite:///{small_disk}/data.db", EVENT_FLUSH_S="0.1")
    server = LiveServer(tmp_path, env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert stream_run(client, "chat", {"input": {"query": "hi"}})[-1].data["status"] == (
                "completed"
            )
            run = client.post(
                "/graphs/chat/runs", json={"input": {"query": "[[tokens=3000]] [[delay=0.02]]"}}
            ).json()
            seen: list[SSE] = []

            def watch() -> None:
                with (
                    httpx.Client(base_url=server.url, timeout=30) as watcher,
                    watcher.stream("GET", run["stream_url"]) as response,
                ):
                    seen.extend(parse_sse(response.iter_lines()))

            reader = threading.Thread(target=watch, daemon=True)
            reader.start()
            deadline = time.monotonic() + 10
            while not any(e.event == "token" for e in seen):
                assert time.monotonic() < deadline, "the run did not start streaming"
                time.sleep(0.02)

            filler = _fill(small_disk)
            reader.join(10)
            assert not reader.is_alive(), "the stream did not end"
            assert [e.event for e in seen[-2:]] == ["error", "end"], seen[-3:]
            assert seen[-2].data["code"] == "store_unavailable"
            assert (seen[-1].data["status"], seen[-1].data["reason"]) == (
                "failed",
                "store_unavailable",
            )

            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "store_unavailable"
            refused = client.post("/graphs/chat/runs", json={"input": {"query": "hi"}})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "store_unavailable"
            assert refused.headers["Retry-After"] == "5"
            streamed = client.post("/graphs/chat/stream", json={"input": {"query": "hi"}})
            assert streamed.status_code == 503
            assert streamed.json()["error"]["code"] == "store_unavailable"
            # reads still work
            assert client.get(f"/runs/{run['run_id']}").json()["status"] == "failed"

            filler.unlink()
            deadline = time.monotonic() + 10
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "still not ready after space was freed"
                time.sleep(0.05)
            again = stream_run(client, "chat", {"input": {"query": "hi"}})
            assert again[-1].data["status"] == "completed"
        logs = server.logs()
        assert "store unavailable" in logs and "store writable again" in logs
    finally:
        server.stop()

    second = LiveServer(tmp_path, env).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            record = wait_status(client, run["run_id"], "failed")
            assert record["error"]["code"] == "store_unavailable"
    finally:
        second.stop()
