"""The image, built by `make image` (buildah, no Docker daemon) and run with its own command:
`/healthz` answers (and its HEALTHCHECK passes), a run streams, SIGTERM gives every open stream
its `end`, and a non-root start with a DATABASE_URL it cannot write stops with one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _fake_upstream
from tests.support.fake_openai import FakeOpenAI, free_port
from tests.support.live import ROOT, SSE, parse_sse, stream_run

IMAGE = "localhost/langgraph-stream:latest"
SUDO = [] if os.geteuid() == 0 else ["sudo", "-n"]
BUILDAH = [*SUDO, "buildah", "--storage-driver", "vfs"]

pytestmark = pytest.mark.timeout(900)  # a build from nothing takes ~4 min on 2 cores


def _have_tools() -> bool:
    return all(
        shutil.which(t, path=f"{os.environ['PATH']}:/usr/sbin") for t in ("buildah", "debootstrap")
    )


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    if not _have_tools():
        subprocess.run(["make", "test-system-deps"], cwd=ROOT, check=False)
    if not _have_tools():
        pytest.skip(
            "SKIPPED LOUDLY: buildah/debootstrap missing and apt-get could not install them"
        )
    subprocess.run(["make", "image"], cwd=ROOT, check=True)
    out = subprocess.run(
        [*BUILDAH, "inspect", "--type", "image", IMAGE], check=True, capture_output=True
    )
    config: dict[str, Any] = json.loads(out.stdout)["Docker"]["config"]
    return config


class Container:
    """`buildah run` of the image's CMD in a fresh container, on the host's network."""

    def __init__(self, config: dict[str, Any], tmp: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.config = config
        self.env = {"UVICORN_PORT": str(self.port), **env}
        self.log_path = tmp / f"image-{self.port}.log"
        name = subprocess.run(
            [*BUILDAH, "from", "--quiet", IMAGE], check=True, capture_output=True, text=True
        )
        self.name = name.stdout.strip()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        envs = [f"--env={k}={v}" for k, v in self.env.items()]
        return subprocess.Popen(
            [
                *BUILDAH,
                "run",
                "--isolation",
                "chroot",
                "--network",
                "host",
                *envs,
                self.name,
                "--",
                *command,
            ],
            **kwargs,
        )

    def start(self) -> Container:
        self._log = self.log_path.open("wb")
        self.proc = self.run(self.config["Cmd"], stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"no /healthz within {timeout} s:\n{self.logs()}")

    def uvicorn_pid(self) -> int:
        """The image's process (PID 1 in a container): the descendant of `buildah run` that
        runs uvicorn; the signal goes to it, as `docker stop` sends it."""
        assert self.proc is not None
        todo, seen = [self.proc.pid], []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            # Every thread's children: buildah is Go, and any of its threads may fork.
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    kids = (task / "children").read_text().split()
                except OSError:
                    continue
                todo.extend(int(k) for k in kids if int(k) not in seen)
        for pid in seen:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"uvicorn" in cmdline and b"buildah" not in cmdline[0]:
                return pid
        raise AssertionError(f"no uvicorn under {self.proc.pid}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def remove(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()
        subprocess.run([*BUILDAH, "rm", self.name], check=False, capture_output=True)


@pytest.fixture
def container(image: dict[str, Any], tmp_path: Path, fake: FakeOpenAI) -> Iterator[Container]:
    # The fake model on the host's loopback, which the container shares (--network host).
    box = Container(image, tmp_path, _fake_upstream(fake, SHUTDOWN_GRACE_S="1"))
    try:
        yield box.start()
    finally:
        box.remove()


def test_the_image_serves_streams_and_ends_every_stream_on_sigterm(
    container: Container, image: dict[str, Any]
) -> None:
    container.wait_ready()
    # The image's own HEALTHCHECK command, run inside it.
    check = container.run(image["Healthcheck"]["Test"][1:])
    assert check.wait(timeout=30) == 0
    with httpx.Client(base_url=container.url, timeout=30) as client:
        events = stream_run(client, "chat", {"input": {"query": "[[tokens=20]]"}})
        assert [e.event for e in events][-1] == "end"
        assert events[-1].data["status"] == "completed"

        streams: list[list[SSE]] = [[] for _ in range(3)]
        started = threading.Barrier(len(streams) + 1)

        def read(out: list[SSE]) -> None:
            body = {"input": {"query": "[[tokens=2000]] [[delay=0.02]]"}}
            with (
                httpx.Client(base_url=container.url, timeout=30) as c,
                c.stream("POST", "/graphs/chat/stream", json=body) as response,
            ):
                for n, frame in enumerate(parse_sse(response.iter_lines())):
                    out.append(frame)
                    if n == 2:
                        started.wait()

        readers = [threading.Thread(target=read, args=(s,)) for s in streams]
        for reader in readers:
            reader.start()
        started.wait(timeout=30)
        os.kill(container.uvicorn_pid(), signal.SIGTERM)
        for reader in readers:
            reader.join(timeout=30)
        assert container.proc is not None
        assert container.proc.wait(timeout=30) is not None
    for stream in streams:
        assert stream[-1].event == "end", stream[-3:]
        assert stream[-1].data == {**stream[-1].data, "status": "cancelled", "reason": "shutdown"}
    assert "Traceback" not in container.logs(), container.logs()
    # The image logs JSON (LOG_FORMAT=json), one object per line, the access log included.
    logged = [json.loads(line) for line in container.logs().splitlines() if line.startswith("{")]
    assert logged and all({"ts", "level", "logger", "msg"} <= set(x) for x in logged)
    assert any(x["logger"].startswith("uvicorn.access") for x in logged), logged[-5:]


def test_a_database_url_the_user_cannot_write_stops_with_one_line(
    image: dict[str, Any], tmp_path: Path
) -> None:
    # /srv belongs to root; the image's user may write /srv/data only.
    box = Container(image, tmp_path, {"DATABASE_URL": "sqlite:////srv/nope/x.db"})
    try:
        box.start()
        assert box.proc is not None
        assert box.proc.wait(timeout=60) != 0
        lines = [x for x in box.logs().splitlines() if x.strip()]
        errors = [x for x in lines if "DATABASE_URL" in x]
        assert len(errors) == 1 and "Permission denied" in errors[0], lines
        assert "Traceback" not in box.logs(), lines
    finally:
        box.remove()
