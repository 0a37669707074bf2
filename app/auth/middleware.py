"""Every request is someone's: this middleware puts its tenant on `request.state.tenant`, or
answers `401 unauthorized` before the app sees it.

- No `API_KEYS`: every request is the default tenant's (app/engine/tenancy.py).
- With them, every path but `/healthz`, `/readyz` and the live page's three files (the key
  is typed into the page) needs a key (unknown paths and the OpenAPI schema too), as
  `Authorization: Bearer KEY` or `X-Api-Key: KEY` (the LangGraph SDKs' header).
  A request with a key is judged by the key alone. `/metrics` also takes METRICS_TOKEN, the
  same ways. Without one, `GET /runs/{id}/stream` may
  carry `?token=` (app/auth/tokens.py), checked against that run id.
- `401` has the API's error body and `WWW-Authenticate: Bearer`; it never repeats what was
  sent. CORS preflights are answered by the CORS middleware outside this one, so they need no
  key; a `401` passes back through it, so a page can read it.
"""

from __future__ import annotations

import hmac
import re
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.keys import KeyRing
from app.auth.tokens import StreamTokens
from app.engine.tenancy import DEFAULT_TENANT
from app.web.page import PATHS as PAGE_PATHS

OPEN_PATHS = frozenset({"/healthz", "/readyz"}) | PAGE_PATHS
METRICS_PATH = "/metrics"
STREAM_PATH = re.compile(r"/runs/([^/]+)/stream")


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, keys: KeyRing | None, metrics_token: str | None = None
    ) -> None:
        self.app = app
        self.keys = keys
        self.metrics_token = metrics_token.encode() if metrics_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if self.keys is None:
            state["tenant"] = DEFAULT_TENANT
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _presented_key(scope)
        if path == METRICS_PATH and self._metrics_token(presented):
            state["tenant"] = DEFAULT_TENANT
            await self.app(scope, receive, send)
            return
        if presented is not None:
            tenant = self.keys.tenant_of(presented)
            problem = "the API key is not valid"
        else:
            tenant = self._token_tenant(scope, path)
            problem = (
                "the stream token is not valid for this run, or has expired"
                if tenant is None and _query_token(scope) is not None
                else "an API key is required: send Authorization: Bearer KEY or X-Api-Key: KEY"
            )
        if tenant is None:
            await _unauthorized(send, problem)
            return
        state["tenant"] = tenant
        await self.app(scope, receive, send)

    def _metrics_token(self, presented: str | None) -> bool:
        """`presented` is METRICS_TOKEN (which opens `/metrics` and nothing else)."""
        if self.metrics_token is None or presented is None:
            return False
        return hmac.compare_digest(presented.encode(), self.metrics_token)

    def _token_tenant(self, scope: Scope, path: str) -> str | None:
        assert self.keys is not None
        token = _query_token(scope)
        match = STREAM_PATH.fullmatch(path)
        if token is None or match is None or scope["method"] != "GET":
            return None
        tokens: StreamTokens | None = getattr(scope["app"].state, "stream_tokens", None)
        if tokens is None:
            return None
        tenant = tokens.verify(token, match.group(1))
        return tenant if tenant in self.keys.tenants else None


def _route_path(scope: Scope) -> str:
    """The path the app routes on: without the root path (a proxy's prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def _presented_key(scope: Scope) -> str | None:
    api_key = bearer = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                bearer = credentials.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return bearer if bearer is not None else api_key


def _query_token(scope: Scope) -> str | None:
    query = scope.get("query_string", b"").decode("latin-1")
    if "token=" not in query:
        return None
    values = parse_qs(query).get("token")
    return values[-1] if values else None


async def _unauthorized(send: Send, message: str) -> None:
    body = orjson.dumps({"error": {"code": "unauthorized", "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
