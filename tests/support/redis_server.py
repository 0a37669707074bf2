"""A throwaway `redis-server` of a test's own, on a free loopback port: stopped and started again
(empty, nothing saved) to see what the service does when Redis goes away and comes back. The
machine's shared Redis is never touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

START_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server") or shutil.which("/usr/bin/redis-server")
        if binary is None:
            raise RuntimeError("these tests need redis-server (make test-system-deps)")
        self._binary = binary
        self._dir = tmp
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start it (empty) and return once it answers."""
        assert self._process is None, "already running"
        self._process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        conn = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_S
        try:
            while True:
                try:
                    conn.ping()
                    return self
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server on port {self.port} did not start"
                        ) from None
                    time.sleep(0.02)
        finally:
            conn.close()

    def stop(self) -> None:
        """Kill it (what it held is lost) and return once it has exited."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=START_S)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
