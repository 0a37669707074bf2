"""Errors as the native API shows them: `{"error": {"code", "message"}}` with the right status.

The engine raises `EngineError`s that carry a code only (app/engine/errors.py); this module is
the one place that gives each code its HTTP status and headers. FastAPI's own validation errors
and anything unexpected get the same body; no traceback ever reaches a client.

    400 malformed_json          413 body_too_large
    429 too_many_runs / rate_limited / too_many_streams (Retry-After; rate_limited also with
        RateLimit-Limit / -Remaining / -Reset)
    404 graph_not_found / run_not_found / thread_not_found / not_found
    409 thread_busy / thread_graph_mismatch / thread_not_paused / idempotency_mismatch
    422 invalid_input / limit_too_high / unsupported_action / invalid_idempotency_key
    503 shutting_down / store_unavailable (Retry-After)     500 internal_error
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth.throttle import LimitExceeded
from app.engine.errors import (
    Conflict,
    EngineError,
    InvalidInput,
    LimitTooHigh,
    NotFound,
    NotOpen,
    ShuttingDown,
    StoreUnavailable,
    TooManyRuns,
    Unsupported,
)
from app.protocols.native.ratelimit import rate_headers
from app.protocols.native.schemas import ClientConfig

log = logging.getLogger("app.protocols.native")
PARSE_ERROR = "There was an error parsing the body"
CLIENT_CONFIG = ", ".join(ClientConfig.model_fields)

STATUS: dict[type[EngineError], int] = {
    NotFound: 404,
    InvalidInput: 422,
    LimitTooHigh: 422,
    Unsupported: 422,
    Conflict: 409,
    TooManyRuns: 429,
    LimitExceeded: 429,
    ShuttingDown: 503,
    StoreUnavailable: 503,
    NotOpen: 503,
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def status_of(exc: EngineError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def response_for(exc: EngineError) -> JSONResponse:
    headers: dict[str, str] | None = None
    if exc.retry_after_s is not None:
        headers = {"Retry-After": str(math.ceil(exc.retry_after_s))}
    if isinstance(exc, LimitExceeded) and exc.quota is not None:
        headers = {**(headers or {}), **rate_headers(exc.quota)}
    return JSONResponse(error_body(exc.code, exc.message), status_of(exc), headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError) -> JSONResponse:
        if isinstance(exc, LimitExceeded | TooManyRuns):
            metrics = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                metrics.refused(
                    exc.code if isinstance(exc, LimitExceeded) else "max_concurrent_runs"
                )
        return response_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse(error_body("malformed_json", "the body is not valid JSON"), 400)
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        reason = str(first.get("msg", "invalid"))
        if first.get("type") == "extra_forbidden" and field.startswith("config."):
            reason = f"a client may not set this (it may set: {CLIENT_CONFIG})"
        return JSONResponse(error_body("invalid_input", f"{field}: {reason}"[:500]), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == PARSE_ERROR:
            # FastAPI's answer to a body json.loads cannot read at all: not UTF-8, nested
            # deeper than the parser's recursion limit.
            return JSONResponse(error_body("malformed_json", "the body is not valid JSON"), 400)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal server error"), 500)
