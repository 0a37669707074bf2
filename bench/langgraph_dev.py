"""The reference server: `langgraph dev` (LangGraph's own Agent Server, in-memory runtime) on
the `chat` graph and the bench's fake upstream, so the `langgraph_api` case can measure it in
the same run as the service.

It runs from its own venv under `.bench/langgraph-dev/` (gitignored), made on first use with the
project's uv (`.uv/bin/uv`, else `python -m venv` and pip) from the pins below, the versions
/work/shared/LANGGRAPH_API.md was observed on; a marker file holding the pins says the venv is
complete, so a changed pin rebuilds it. The graph is bench/langgraph_dev_graph.py (graphs/chat.py
with its model built in), named `chat` in a generated langgraph.json. Tracing, telemetry and
the browser are off; it runs in the cache directory (its `.langgraph_api/` state
files land there); the server's CPU is read over its whole process tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.harness import ROOT, Process, Upstream, _base_env, cpu_s
from tests.support.fake_openai import free_port

CACHE = ROOT / ".bench" / "langgraph-dev"
VENV = CACHE / "venv"
PINS = (
    "langgraph-cli[inmem]==0.4.40",
    "langgraph-api==0.16.7",
    "langgraph-runtime-inmem==0.36.7",
    "langgraph==1.2.22",
    "langchain-core==1.7.2",
    "langchain-openai==1.7.3",
)
GRAPH = ROOT / "bench" / "langgraph_dev_graph.py"
_MARKER = VENV / "bench-pins.txt"


def ensure_venv() -> Path:
    """The reference venv's `langgraph` command, installing the pins first if needed."""
    langgraph = VENV / "bin" / "langgraph"
    wanted = "\n".join(PINS) + "\n"
    if langgraph.exists() and _MARKER.exists() and _MARKER.read_text() == wanted:
        return langgraph
    shutil.rmtree(VENV, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    uv = ROOT / ".uv" / "bin" / "uv"
    python = VENV / "bin" / "python"
    if uv.exists():
        subprocess.run([str(uv), "venv", "--python", sys.executable, str(VENV)], check=True)
        subprocess.run([str(uv), "pip", "install", "--python", str(python), *PINS], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINS], check=True)
    _MARKER.write_text(wanted)
    return langgraph


def write_config() -> Path:
    """langgraph.json: the one graph `chat`, no dependencies to install, no env file."""
    config = CACHE / "langgraph.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    doc = {"dependencies": ["."], "graphs": {"chat": f"{GRAPH}:graph"}}
    config.write_text(json.dumps(doc, indent=2) + "\n")
    return config


class LanggraphDev(Process):
    """`langgraph dev` as a bench process; `cpu_s()` counts its children too."""

    def cpu_s(self) -> float:
        return sum(cpu_s(pid) for pid in _tree(self.pid))


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            pids.extend(_tree(int(child)))
    return pids


def langgraph_dev(upstream: Upstream) -> LanggraphDev:
    """`langgraph dev` on a free port, its model on `upstream`; `.start("/ok")` it."""
    langgraph = ensure_venv()
    config = write_config()
    port = free_port()
    argv = [
        str(langgraph),
        "dev",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
        "--no-reload",
        "--server-log-level",
        "WARNING",
    ]
    env = _base_env(
        BENCH_UPSTREAM_BASE_URL=upstream.base_url,
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGSMITH_API_KEY="",
        LANGCHAIN_API_KEY="",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_DISABLE_TELEMETRY="true",
        LOG_LEVEL="WARNING",
        PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    shutil.rmtree(CACHE / ".langgraph_api", ignore_errors=True)  # a fresh server every run
    server = LanggraphDev("langgraph-dev", argv, port, env)
    server.cwd = CACHE  # it keeps its in-memory state in .langgraph_api/ under its cwd
    return server
