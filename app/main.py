"""The ASGI app: `create_app(settings)` wires settings, lifespan, middleware, routes and
error handlers. `app` is what `uvicorn app.main:app` serves."""

from __future__ import annotations

from app.preflight import refuse_several_workers_on_sqlite

refuse_several_workers_on_sqlite()  # before the slow imports: see app/preflight.py

import sys  # noqa: E402

from fastapi import FastAPI  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402

from app.auth.middleware import AuthMiddleware  # noqa: E402
from app.backends import check_postgres, check_redis  # noqa: E402
from app.body_limit import BodyLimitMiddleware  # noqa: E402
from app.forwarded import ForwardedMiddleware  # noqa: E402
from app.http_guard import install as install_http_guard  # noqa: E402
from app.lifespan import lifespan  # noqa: E402
from app.logformat import configure_logging  # noqa: E402
from app.metrics import Metrics  # noqa: E402
from app.metrics import install as install_metrics  # noqa: E402
from app.protocols import langgraph, native  # noqa: E402
from app.settings import Settings, SettingsError  # noqa: E402
from app.web import page  # noqa: E402


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    settings.check_database()
    check_postgres(settings)
    check_redis(settings)
    configure_logging(settings.log_format, settings.log_level)
    install_http_guard(settings.max_header_bytes, settings.request_read_timeout_s)
    app = FastAPI(title="LangGraph streaming service", version="0.1.0", lifespan=lifespan(settings))
    app.state.settings = settings
    native.install(app)
    langgraph.install(app)
    app.include_router(page.router)
    install_metrics(app, Metrics(tenant_label=settings.metrics_tenant_label))
    # The last added is the outermost: Forwarded -> CORS -> Auth -> BodyLimit -> routes, so a
    # preflight never needs a key, a 401 carries the CORS headers a page needs to read it, and
    # no body is read for a request without a key.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    token = settings.metrics_token
    app.add_middleware(
        AuthMiddleware,
        keys=settings.key_ring,
        metrics_token=token.get_secret_value() if token is not None else None,
    )
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],  # PATCH, DELETE: LangGraph threads
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(ForwardedMiddleware, trusted=settings.forwarded_allow_ips)
    return app


CORS_REQUEST_HEADERS = [
    "Authorization",
    "X-Api-Key",
    "Content-Type",
    "Last-Event-ID",
    "Idempotency-Key",
    "Cache-Control",  # the LangGraph SDKs send it on stream requests
]
CORS_EXPOSED_HEADERS = [
    "Location",
    "Content-Location",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]


def _build() -> FastAPI:
    try:
        return create_app()
    except SettingsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


app = _build()
