"""The service's error hierarchy: every error a client can see, each with a stable `code`.

    ServiceError                 500 internal_error
    ├── BadRequest               400 malformed_json
    ├── NotFound                 404 graph_not_found / run_not_found / thread_not_found
    ├── InvalidInput             422 invalid_input (names the field)
    ├── LimitTooHigh             422 limit_too_high
    ├── PayloadTooLarge          413 body_too_large
    ├── Conflict                 409 thread_busy / thread_graph_mismatch / thread_not_paused
    ├── TooManyRuns              429 too_many_runs (with Retry-After)
    └── ShuttingDown             503 shutting_down (with Retry-After)

`install_handlers` maps them (and FastAPI's own validation errors, and anything unexpected) to
`{"error": {"code", "message"}}` in one place. No traceback ever reaches a client.

Errors *inside* a run are not HTTP errors: `run_error_code` names them for the `error` event.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("app.errors")


class ServiceError(Exception):
    """Base class: an error with an HTTP status and a stable machine-readable code."""

    status = 500
    code = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ServiceError):
    """The body is not JSON at all."""

    status = 400
    code = "malformed_json"


class NotFound(ServiceError):
    """No such graph or run (or it belongs to someone else)."""

    status = 404
    code = "not_found"


class InvalidInput(ServiceError):
    """The body is JSON but not the right shape; the message names the field."""

    status = 422
    code = "invalid_input"


class LimitTooHigh(ServiceError):
    """A per-run limit asks for more than the server allows."""

    status = 422
    code = "limit_too_high"


class PayloadTooLarge(ServiceError):
    """The body is larger than MAX_BODY_BYTES."""

    status = 413
    code = "body_too_large"


class Conflict(ServiceError):
    """The thread's state forbids this run: one is in progress on it (`thread_busy`), it belongs
    to another graph (`thread_graph_mismatch`), or `resume` was sent to a thread that is not
    paused (`thread_not_paused`)."""

    status = 409
    code = "thread_busy"


class TooManyRuns(ServiceError):
    """MAX_CONCURRENT_RUNS runs are in progress; retry later."""

    status = 429
    code = "too_many_runs"
    headers = {"Retry-After": "1"}


class ShuttingDown(ServiceError):
    """The server received SIGTERM and takes no new runs; retry on another instance."""

    status = 503
    code = "shutting_down"
    headers = {"Retry-After": "5"}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse(error_body("malformed_json", "the body is not valid JSON"), 400)
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        message = f"{_field(tuple(first.get('loc', ())))}: {first.get('msg', 'invalid')}"
        return JSONResponse(error_body("invalid_input", message), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
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
