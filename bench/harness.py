"""Processes the benchmark measures: uvicorn servers and the fake upstream, each its own process.

Every server runs as `python -m uvicorn TARGET` on a free loopback port, exactly as a user runs
the service, so its CPU time and RSS can be read from /proc/<pid> without counting the client,
the fake upstream or the benchmark itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx

from tests.support.fake_openai import free_port

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS:")


def peak_rss_kb(pid: int) -> int:
    """The process's high-water RSS (VmHWM) since it started."""
    return _status_kb(pid, "VmHWM:")


class Process:
    """A subprocess serving HTTP on `port`; `start()` returns once `ready_path` answers 200."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.argv = argv
        self.env = env
        self.log_path = Path(tempfile.gettempdir()) / f"bench-{name}-{port}.log"
        self.cwd = ROOT
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def peak_rss_kb(self) -> int:
        return peak_rss_kb(self.pid)

    def start(self, ready_path: str, timeout: float = 60.0) -> Self:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _uvicorn(target: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        "4096",
        *extra,
    ]


def _base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(extra)
    return env


class Upstream(Process):
    """The fake OpenAI server (bench/upstream.py) in its own process."""

    def __init__(self) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "bench.upstream", str(port)]
        super().__init__("upstream", argv, port, _base_env())

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(self.url + "/stats", timeout=10).json()
        return result

    def wait_stats(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.005)


def service(upstream: Upstream | None, **settings: str) -> Process:
    """The service (`app.main:app`); ChatOpenAI to `upstream`, or the offline model if None."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    model = (
        {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": upstream.base_url, "LLM_MODEL": "fake"}
        if upstream is not None
        else {}
    )
    defaults = {
        "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "GRAPHS_DIR": "graphs",
        "LLM_MAX_RETRIES": "0",
        "LOG_LEVEL": "WARNING",
        "MAX_CONCURRENT_RUNS": "5000",
        "OFFLINE_TOKEN_DELAY_S": "0",
        "PYTHONMALLOC": "malloc",  # as `make run` serves it (app/memory_trim.py)
    }
    env = _base_env(**{**defaults, **model, **settings})
    return Process("service", _uvicorn("app.main:app", port), port, env)


def baseline(kind: str, upstream: Upstream) -> Process:
    """A baseline app of bench/baselines.py: `bare` (transport limit), `naive` (forwarder) or
    `naive_client` (forwarder on the service's model client)."""
    port = free_port()
    env = _base_env(OPENAI_API_KEY="k", OPENAI_BASE_URL=upstream.base_url)
    argv = _uvicorn(f"bench.baselines:{kind}_app", port, "--factory")
    return Process(kind, argv, port, env)


def run_floor(*args: str, service_gc: bool = False) -> Any:
    """`python -m bench.floor ARGS` in a fresh process (so the floor shares nothing with this
    one); the JSON it prints last. With `service_gc`, the floor's process first takes the
    service's GC thresholds (app/gc_tuning.py)."""
    env = dict(os.environ, BENCH_FLOOR_GC="service" if service_gc else "")
    out = subprocess.run(
        [sys.executable, "-m", "bench.floor", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
