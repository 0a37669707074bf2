"""The LangGraph Agent Server API (LANGGRAPH_API.md), served from the same engine and event log
as the native API, under `/langgraph`: the official SDKs, `useStream` and agent-chat-ui point at
`http://HOST:PORT/langgraph`. Why a prefix: `GET /threads/{id}` is ours already, with another
shape; under the prefix every LangGraph path is the reference's, unchanged."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from app.protocols.langgraph import assistants, runs, threads

PREFIX = "/langgraph"


def install(app: FastAPI) -> None:
    """Add the LangGraph routes to `app` (errors use the app's handlers: the SDKs read our
    `{"error": {"code", "message"}}` and pick their exception by status)."""
    router = APIRouter(prefix=PREFIX, tags=["langgraph"])
    router.include_router(assistants.router)
    router.include_router(threads.router)
    router.include_router(runs.router)
    app.include_router(router)
