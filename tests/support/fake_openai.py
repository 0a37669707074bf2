"""A fake OpenAI-compatible chat completions server, spoken to over real HTTP.

`ChatOpenAI` in the service under test (or in a benchmark) points its `base_url` at this server,
so the real client code path, connection handling and cancellation are exercised.

What a request gets is decided by directives in the *last* message's text, so a test controls
one run without touching server-wide state:

    [[tokens=N]]        answer with N tokens (default: `FakeOpenAI.tokens`)
    [[size=N]]          make each of those tokens N characters long (to fill buffers quickly)
    [[delay=S]]         sleep S seconds before each token (default: `FakeOpenAI.delay`)
    [[first=S]]         sleep S seconds before the first token
    [[fail=500]]        answer with that HTTP status and an OpenAI-style error body
    [[fail_after=N]]    stream N tokens, then drop the connection
    [[error_after=N]]   stream N tokens, then an OpenAI-style `{"error": ...}` event in the stream
    [[filtered]]        precede every token with a choice that has no `delta` (as Azure's
                        content-filter results are sent)
    [[echo]]            the answer is the message text with the directives removed, in small tokens
    [[tool=NAME:ARGS]]  if the request offers tools, call NAME with JSON ARGS (only while the last
                        message is not already a tool result)

The server counts requests that were started, completed and abandoned (the client went away
before the last chunk), and how many tokens it produced after the client left; a test waits on
those counts with `wait_for`.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_DIRECTIVE = re.compile(r"\[\[(\w+)(?:=([^\]]*))?\]\]")
WORDS = (
    "Attention lets a model weigh every input token against every other one, "
    "so the representation of each word is informed by the words that matter to it."
).split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_text(i: int, size: int = 0) -> str:
    """The i-th token of a default answer (deterministic, so tests can predict the text)."""
    word = WORDS[i % len(WORDS)] + " "
    return (word * (size // len(word) + 1))[:size] if size else word


@dataclass
class Stats:
    started: int = 0
    completed: int = 0
    abandoned: int = 0
    failed: int = 0
    active: int = 0
    abandoned_at: list[float] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    text_tokens: list[str]
    delay: float
    first: float
    fail_status: int | None = None
    fail_after: int | None = None
    error_after: int | None = None
    filtered: bool = False
    tool: tuple[str, str] | None = None


def _content_text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _small_tokens(text: str) -> list[str]:
    """Split text into tokens of at most 4 characters, newlines and multi-byte text included."""
    return [text[i : i + 4] for i in range(0, len(text), 4)] or [""]


class FakeOpenAI:
    """The fake server. Run it with `start()` (a background thread) or mount `app` yourself."""

    def __init__(self, tokens: int = 20, delay: float = 0.0) -> None:
        self.tokens = tokens
        self.delay = delay
        self.stats = Stats()
        self._cond = threading.Condition()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- control ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self.port = free_port()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def snapshot(self) -> Stats:
        with self._cond:
            return Stats(
                self.stats.started,
                self.stats.completed,
                self.stats.abandoned,
                self.stats.failed,
                self.stats.active,
                list(self.stats.abandoned_at),
                list(self.stats.requests),
            )

    def wait_for(self, predicate: Callable[[Stats], bool], timeout: float = 10.0) -> Stats:
        """Block until `predicate(stats)` holds; raise AssertionError with the stats if not."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.stats), timeout=timeout):
                raise AssertionError(f"fake OpenAI never reached the condition: {self.stats}")
            return self.snapshot()

    def _update(self, **deltas: int) -> None:
        with self._cond:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)
            self._cond.notify_all()

    # -- planning --------------------------------------------------------------------------

    def plan(self, body: dict[str, Any]) -> Plan:
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        text = _content_text(last)
        directives: dict[str, str] = {}
        for message in messages:
            for key, value in _DIRECTIVE.findall(_content_text(message)):
                directives[key] = value
        tokens = int(directives.get("tokens", self.tokens))
        plan = Plan(
            text_tokens=[token_text(i, int(directives.get("size", 0))) for i in range(tokens)],
            delay=float(directives.get("delay", self.delay)),
            first=float(directives.get("first", 0.0)),
        )
        if "fail" in directives:
            plan.fail_status = int(directives["fail"])
        if "fail_after" in directives:
            plan.fail_after = int(directives["fail_after"])
        if "error_after" in directives:
            plan.error_after = int(directives["error_after"])
        plan.filtered = "filtered" in directives
        if "echo" in directives:
            plan.text_tokens = _small_tokens(_DIRECTIVE.sub("", text).strip())
        if "tool" in directives and body.get("tools") and last.get("role") != "tool":
            name, _, args = directives["tool"].partition(":")
            plan.tool = (name, args or "{}")
        elif last.get("role") == "tool":
            plan.text_tokens = _small_tokens(f"The tool said: {text}")
        return plan

    # -- ASGI ------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] != "/v1/chat/completions":
            await _json(send, 404, {"error": {"message": "not found"}})
            return
        request = json.loads(body)
        with self._cond:
            self.stats.requests.append(request)
        plan = self.plan(request)
        self._update(started=1)
        if plan.fail_status is not None:
            self._update(failed=1)
            await _json(
                send,
                plan.fail_status,
                {"error": {"message": "injected failure", "type": "server_error"}},
            )
            return
        if not request.get("stream"):
            await _json(send, 200, _completion(request, plan))
            self._update(completed=1)
            return
        await self._stream(request, plan, receive, send)

    async def _stream(
        self, request: dict[str, Any], plan: Plan, receive: Receive, send: Send
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        self._update(active=1)
        producer = asyncio.ensure_future(self._produce(request, plan, send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if producer in done and producer.exception() is None:
                self._update(completed=1)
            else:
                with self._cond:
                    self.stats.abandoned += 1
                    self.stats.abandoned_at.append(time.monotonic())
                    self._cond.notify_all()
        finally:
            for task in (producer, watcher):
                task.cancel()
            self._update(active=-1)

    async def _produce(self, request: dict[str, Any], plan: Plan, send: Send) -> None:
        model = request.get("model", "fake")
        created = int(time.time())

        async def event(payload: dict[str, Any]) -> None:
            data = b"data: " + json.dumps(payload).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async def chunk(
            delta: dict[str, Any] | None,
            finish: str | None = None,
            usage: dict[str, int] | None = None,
        ) -> None:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if delta is None:
                choice["content_filter_results"] = {"hate": {"filtered": False}}
            else:
                choice["delta"] = delta
            payload: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice] if usage is None else [],
            }
            if usage is not None:
                payload["usage"] = usage
            await event(payload)

        if plan.first:
            await asyncio.sleep(plan.first)
        await chunk({"role": "assistant", "content": ""})
        produced = 0
        if plan.tool is not None:
            name, args = plan.tool
            await chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": f"call_{produced}",
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            for piece in _small_tokens(args):
                await chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            await chunk({}, finish="tool_calls")
            produced = 1
        else:
            for i, token in enumerate(plan.text_tokens):
                if plan.fail_after is not None and i >= plan.fail_after:
                    raise ConnectionError("injected mid-stream failure")
                if plan.error_after is not None and i >= plan.error_after:
                    await event({"error": {"message": "injected stream error", "type": "server"}})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                if plan.delay:
                    await asyncio.sleep(plan.delay)
                if plan.filtered:
                    await chunk(None)
                await chunk({"content": token})
                produced += 1
            await chunk({}, finish="stop")
        if (request.get("stream_options") or {}).get("include_usage"):
            await chunk(
                {},
                usage={
                    "prompt_tokens": 5,
                    "completion_tokens": produced,
                    "total_tokens": produced + 5,
                },
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


def _completion(request: dict[str, Any], plan: Plan) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.text_tokens)}
    if plan.tool is not None:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": plan.tool[0], "arguments": plan.tool[1]},
                }
            ],
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if plan.tool else "stop"}
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": len(plan.text_tokens),
            "total_tokens": len(plan.text_tokens) + 5,
        },
    }
