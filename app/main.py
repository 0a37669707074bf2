"""The ASGI app: `create_app(settings)` wires settings, lifespan, middleware, routes and
error handlers. `app` is what `uvicorn app.main:app` serves."""

from __future__ import annotations

from app.preflight import refuse_several_workers_on_sqlite

refuse_several_workers_on_sqlite()  # before the slow imports: see app/preflight.py

import logging  # noqa: E402
import sys  # noqa: E402

from fastapi import FastAPI  # noqa: E402
from fastapi.middleware.cors import CORSMiddleware  # noqa: E402

from app.backends import check_redis  # noqa: E402
from app.body_limit import BodyLimitMiddleware  # noqa: E402
from app.forwarded import ForwardedMiddleware  # noqa: E402
from app.lifespan import lifespan  # noqa: E402
from app.protocols import native  # noqa: E402
from app.settings import Settings, SettingsError  # noqa: E402


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    check_redis(settings)
    _configure_logging(settings)
    app = FastAPI(title="LangGraph streaming service", version="0.1.0", lifespan=lifespan(settings))
    app.state.settings = settings
    native.install(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Retry-After"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ForwardedMiddleware, trusted=settings.forwarded_allow_ips)
    return app


def _configure_logging(settings: Settings) -> None:
    logger = logging.getLogger("app")
    logger.setLevel(settings.log_level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _build() -> FastAPI:
    try:
        return create_app()
    except SettingsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


app = _build()
