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
from collections.abc import Iterator
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

    def read_all(self, timeout: float = 30.0) -> list[SSE]:
        """Read to EOF (the server closes the connection when the stream ends). The receive
        window opens wide first: the client stops being slow once it starts reading."""
        import socket

        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(65536):
            self.received += chunk
        self.sock.close()
        head, _, body = self.received.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return list(parse_sse(iter(body.decode("utf-8").split("\n"))))

    def close(self) -> None:
        self.sock.close()


def _dechunk(body: bytes) -> bytes:
    """The payload of a chunked HTTP/1.1 body (uvicorn chunks even an HTTP/1.0 response)."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            break
        out += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
    return bytes(out)
