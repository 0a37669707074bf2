"""Start the real service (uvicorn in a subprocess on a free loopback port) and read its streams.

`LiveServer` runs `python -m uvicorn app.main:app` exactly as a user would, with its own
settings in the environment and its own SQLite file; `stream()` and `read_sse()` read
Server-Sent Events with a real HTTP client, line by line, as they arrive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.fake_openai import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SSE:
    """One received frame: `id`, `event` and the parsed JSON `data`."""

    id: int | None
    event: str
    data: Any


class LiveServer:
    def __init__(
        self, tmp: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.args = args
        self.log_path = tmp / f"server-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
            "DATABASE_URL": f"sqlite:///{tmp}/langgraph-{self.port}.db",
            "GRAPHS_DIR": "graphs,tests/graphs",
            "OFFLINE_TOKEN_DELAY_S": "0.005",
            "LOG_LEVEL": "INFO",
            "SHUTDOWN_GRACE_S": "2",
            "PYTHONMALLOC": "malloc",  # as `make run` serves it (app/memory_trim.py)
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> LiveServer:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.logs()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` (SIGTERM for a graceful stop, SIGKILL for a crash)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()


def parse_sse(lines: Iterator[str]) -> Iterator[SSE]:
    """Parse SSE lines (as `httpx.Response.iter_lines` gives them) into frames."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                raw = "\n".join(data)
                yield SSE(
                    int(fields["id"]) if "id" in fields else None,
                    fields.get("event", "message"),
                    json.loads(raw),
                )
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


def read_sse(response: httpx.Response) -> list[SSE]:
    return list(parse_sse(response.iter_lines()))


def stream_run(client: httpx.Client, graph: str, body: dict[str, Any]) -> list[SSE]:
    """POST /graphs/{graph}/stream and read the whole stream."""
    with client.stream("POST", f"/graphs/{graph}/stream", json=body) as response:
        assert response.status_code == 200, response.read()
        return read_sse(response)


def wait_status(
    client: httpx.Client, run_id: str, status: str, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll `GET /runs/{id}` until the run has `status`; return its record."""
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        record = client.get(f"/runs/{run_id}").json()
        if record["status"] == status:
            return record
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} never reached {status}: {record}")


def tokens_text(events: list[SSE], message_id: str | None = None) -> str:
    return "".join(
        e.data["text"]
        for e in events
        if e.event == "token" and (message_id is None or e.data["message_id"] == message_id)
    )


class RawSSEClient:
    """A deliberately slow client: a raw socket with a tiny receive window that reads only
    when told to. HTTP/1.0, so the body is plain bytes up to the server closing it."""

    def __init__(self, url: str, path: str, rcvbuf: int = 2048) -> None:
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        self.sock.sendall(
            f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self.received = b""

    @property
    def port(self) -> int:
        """This end's (local) port: how the server's socket for this connection is found."""
        return int(self.sock.getsockname()[1])

    def read_all(self, timeout: float = 30.0) -> list[SSE]:
        """Read to EOF (the server closes the connection when the stream ends). The receive
        window opens wide first: the client stops being slow once it starts reading."""
        import socket

        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(65536):
            self.received += chunk
        self.sock.close()
        return _frames(self.received)

    def frames_within(self, nbytes: int) -> list[SSE]:
        """After `read_all`: the frames whose data had arrived whole in the first `nbytes` of
        the response (a frame cut off before the end of its data line is left out)."""
        return _frames(self.received[:nbytes], whole=False)

    def close(self) -> None:
        self.sock.close()


def tcp_queues() -> dict[tuple[int, int], tuple[int, int]]:
    """The queues of this host's established IPv4 TCP connections, from /proc/net/tcp:
    `{(local port, remote port): (send queue, receive queue)}` in bytes. The send queue is what
    the local end has written and the peer has not yet acknowledged (`ss`'s Send-Q); the
    receive queue what has arrived and the local process has not read (Recv-Q)."""
    queues: dict[tuple[int, int], tuple[int, int]] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "01":  # ESTABLISHED
            continue
        local, remote = (int(end.rpartition(":")[2], 16) for end in fields[1:3])
        tx, rx = (int(queue, 16) for queue in fields[4].split(":"))
        queues[(local, remote)] = (tx, rx)
    return queues


def bytes_sent(server: LiveServer, readers: Sequence[RawSSEClient]) -> list[int]:
    """How many bytes of its response the server has written to each reader's connection, as
    long as the readers have not read any: the server socket's send queue plus the reader's
    receive queue (everything the kernel took from the server is in one or the other)."""
    queues = tcp_queues()
    sent = []
    for reader in readers:
        assert reader.received == b"", "the reader has read: its receive queue is not all"
        ends = (server.port, reader.port), (reader.port, server.port)
        assert all(end in queues for end in ends), f"connection {ends[1]} is not open"
        send_queue, _ = queues[ends[0]]
        _, receive_queue = queues[ends[1]]
        sent.append(send_queue + receive_queue)
    return sent


def wait_blocked(
    server: LiveServer,
    readers: Sequence[RawSSEClient],
    quiet: float = 0.5,
    timeout: float = 30.0,
) -> list[int]:
    """Wait until the server has written nothing more to any of `readers` (which read nothing)
    for `quiet` seconds, and return `bytes_sent` then. Call it once the run has completed:
    then a connection the server stops writing to is one whose send is blocked because the
    reader's window and the server's socket buffer are full (check that the server had more to
    send, e.g. `sent < len(reader.received)` after `read_all`)."""
    deadline = time.monotonic() + timeout
    sent = bytes_sent(server, readers)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = bytes_sent(server, readers)
        if now != sent:
            sent, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return sent
    raise AssertionError(f"the server kept writing to the readers for {timeout}s: {sent}")


def _frames(raw: bytes, whole: bool = True) -> list[SSE]:
    """The frames of a raw HTTP response (`whole=False`: one that may be cut off anywhere)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    text = body.decode("utf-8", errors="strict" if whole else "ignore")
    return list(parse_sse(iter(text.split("\n"))))


def _dechunk(body: bytes) -> bytes:
    """The payload of a chunked HTTP/1.1 body (uvicorn chunks even an HTTP/1.0 response)."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end < 0:  # cut off in a chunk's size line
            break
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            break
        out += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
    return bytes(out)


def refused_start(tmp: Path, env: dict[str, str]) -> str:
    """Start a server with `env` that must refuse to start: it exits non-zero; its output."""
    server = LiveServer(tmp, env).start(wait=False)
    try:
        assert server.wait_exit(timeout=30) != 0
    finally:
        server.stop()
    return server.logs()
