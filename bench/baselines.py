"""The two baseline apps the throughput case compares the service against.

- `bare_app`: the transport limit. `POST /stream?n=N` yields N `token` events (a frame as large
  as the service's) and an `end` from a plain generator through sse-starlette; no model, no
  graph. Nothing built on sse-starlette can deliver events faster.
- `naive_app`: the obvious implementation. `POST /stream` with the service's body compiles
  graphs/chat.py's graph once, runs it with `astream_events(version="v2")` on `ChatOpenAI` to
  the same fake upstream, and forwards every model chunk straight into `EventSourceResponse` as
  a `token` event: no event log, no merging, no replay, no cancel handling.

- `naive_client_app`: the naive forwarder on the service's own model client
  (graphs/models.py `build_chat_model`) instead of a stock `ChatOpenAI`: what the service adds
  or saves beyond its model client.

All are served by `python -m uvicorn bench.baselines:KIND_app --factory`, like the service.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support.fake_openai import token_text


async def _health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def bare_app() -> Starlette:
    async def stream(request: Request) -> EventSourceResponse:
        n = int(request.query_params.get("n", "1000"))

        def events() -> Iterator[dict[str, Any]]:
            for i in range(n):
                data = {"node": "llm", "message_id": "run-bare", "text": token_text(i)}
                yield {"id": str(i + 1), "event": "token", "data": json.dumps(data)}
            yield {"id": str(n + 1), "event": "end", "data": json.dumps({"status": "completed"})}

        return EventSourceResponse(events(), sep="\n")

    return Starlette(
        routes=[Route("/healthz", _health), Route("/stream", stream, methods=["POST"])]
    )


def naive_app() -> Starlette:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        api_key=os.environ["OPENAI_API_KEY"],
        base_url=os.environ["OPENAI_BASE_URL"],
        model="fake",
        streaming=True,
        stream_usage=True,
        max_retries=0,
    )
    return _naive(llm)


def naive_client_app() -> Starlette:
    from graphs.models import build_chat_model

    llm = build_chat_model(
        api_key=os.environ["OPENAI_API_KEY"],
        base_url=os.environ["OPENAI_BASE_URL"],
        model="fake",
        max_retries=0,
    )
    return _naive(llm)


def _naive(llm: BaseChatModel) -> Starlette:
    from graphs.chat import graph
    from graphs.models import ModelContext

    compiled = graph.compile()
    context = ModelContext(llm=llm)

    async def stream(request: Request) -> EventSourceResponse:
        body = await request.json()

        async def events() -> AsyncIterator[dict[str, Any]]:
            n = 0
            async for raw in compiled.astream_events(body["input"], version="v2", context=context):
                if raw["event"] == "on_chat_model_stream" and raw["data"]["chunk"].content:
                    n += 1
                    data = {"text": raw["data"]["chunk"].content, "message_id": raw["run_id"]}
                    yield {"id": str(n), "event": "token", "data": json.dumps(data)}
            yield {"id": str(n + 1), "event": "end", "data": json.dumps({"status": "completed"})}

        return EventSourceResponse(events(), sep="\n")

    return Starlette(
        routes=[Route("/healthz", _health), Route("/stream", stream, methods=["POST"])]
    )
