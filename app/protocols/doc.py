"""What `/openapi.json` says of every protocol's routes: the error body and what each error
status means, and `text/event-stream` for a stream route."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error: `{"error": {"code", "message"}}` (API.md)."""

    error: ErrorDetail


class EventStream(Response):
    """For the schema only: the streams answer `text/event-stream` (app/streaming/sse.py)."""

    media_type = "text/event-stream"


MEANING = {
    400: "the body is not valid JSON (`malformed_json`)",
    401: "with API_KEYS set: no key, a wrong key, a bad or expired stream token (`unauthorized`)",
    404: "no such graph, run or thread",
    409: "`thread_busy`, `thread_graph_mismatch`, `thread_not_paused`, `idempotency_mismatch`",
    413: "the body is larger than MAX_BODY_BYTES (`body_too_large`)",
    422: "the request is not the right shape; the message names the field",
    429: "over MAX_CONCURRENT_RUNS or a per-key limit (`too_many_runs`, `rate_limited`, "
    "`too_many_streams`), with Retry-After",
    500: "an unexpected error (`internal_error`); never a traceback",
    503: "`shutting_down` or `store_unavailable`, with Retry-After",
}


def errors(*statuses: int, public: bool = False) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for these error statuses, and 500, which any route can return, and
    401 unless the route is `public` (needs no key: /healthz, /readyz)."""
    always = {500} if public else {401, 500}
    return {
        status: {"model": ErrorBody, "description": MEANING[status]}
        for status in sorted({*statuses, *always})
    }


__all__ = ["MEANING", "ErrorBody", "ErrorDetail", "EventStream", "errors"]
