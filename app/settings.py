"""Service settings, read from the environment and `.env`; validated when the app is built.

There is no module-level instance: `create_app()` builds one (or takes the caller's), so a test
can start a server with its own settings. A bad value stops startup with a message naming the
setting (pydantic-settings names the field; `Settings.load` turns that into one readable line).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Annotated

from limits import RateLimitItem, parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.auth.keys import KeyRing, parse_keys
from app.forwarded import parse_trusted

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class SettingsError(RuntimeError):
    """A setting has a value the service cannot start with; the message names it."""


class Settings(BaseSettings):
    """Every number has a range (README, "Limits and security"): a value outside it, `inf` or
    `nan` stops startup with one line naming the setting."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, allow_inf_nan=False
    )

    # The model. No key: the built-in offline model.
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    offline_token_delay_s: Annotated[float, Field(ge=0, le=5)] = 0.02

    # Storage.
    database_url: str = "sqlite:///./data/langgraph.db"
    # PostgreSQL: connections per worker process (app/store/postgres_pool.py).
    database_pool_size: Annotated[int, Field(ge=2, le=1000)] = 10
    graphs_dir: str = "graphs"
    sync_node_threads: Annotated[int, Field(ge=1, le=1024)] = 64

    # Limits.
    max_concurrent_runs: Annotated[int, Field(ge=1, le=100_000)] = 100
    max_tokens_per_run: Annotated[int, Field(ge=1, le=10_000_000)] = 32768
    run_timeout_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 300.0
    max_recursion_limit: Annotated[int, Field(ge=1, le=10_000)] = 100
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    # What one run may store: past it the run ends failed, `run_too_large`.
    max_run_log_mb: Annotated[float, Field(ge=1, le=4096)] = 32.0
    # What a connection may send before the app sees its request (app/http_guard.py).
    max_header_bytes: Annotated[int, Field(ge=4096, le=1024 * 1024)] = 64 * 1024
    request_read_timeout_s: Annotated[float, Field(ge=0.5, le=600)] = 30.0

    # Limits per key (app/auth/throttle.py); unset: none.
    rate_limit_runs: str | None = None
    max_runs_per_key: Annotated[int, Field(ge=1)] | None = None
    max_streams_per_key: Annotated[int, Field(ge=1)] | None = None
    # Shared state for several workers (with a PostgreSQL DATABASE_URL): live runs' events,
    # cancel requests, per-key limits (README, "Running several workers").
    redis_url: str | None = None
    redis_key_prefix: Annotated[str, Field(min_length=1, max_length=64)] = "lgstream"
    # How long an ended run's events stay in Redis (then PostgreSQL has them).
    redis_events_ttl_s: Annotated[float, Field(ge=1, le=7 * 24 * 3600)] = 300.0
    # A worker whose lease is 3 heartbeats old is lost: its runs end `worker_lost`.
    worker_heartbeat_s: Annotated[float, Field(ge=0.1, le=600)] = 5.0

    # Streams.
    send_timeout_s: Annotated[float, Field(ge=0.1, le=3600)] = 30.0
    ping_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 15.0
    cancel_confirm_s: Annotated[float, Field(ge=0.1, le=600)] = 2.0
    finished_runs_cache_mb: Annotated[float, Field(ge=0, le=1024 * 1024)] = 64.0
    finished_runs_cache_s: Annotated[float, Field(ge=0, le=7 * 24 * 3600)] = 10.0
    memory_trim_s: Annotated[float, Field(ge=0.1, le=24 * 3600)] = 5.0
    run_retention_s: Annotated[float, Field(ge=1, le=10 * 365 * 24 * 3600)] = 7 * 24 * 3600.0
    event_flush_s: Annotated[float, Field(ge=0.01, le=60)] = 0.5
    shutdown_grace_s: Annotated[float, Field(ge=0, le=3600)] = 8.0

    # Keys and tenants (app/auth/). Secrets: never in a repr, a log or an error message.
    api_keys: SecretStr = SecretStr("")
    stream_token_secret: SecretStr | None = None
    stream_token_ttl_s: Annotated[float, Field(ge=0, le=30 * 24 * 3600)] = 3600.0

    cors_origins: str = ""
    # Proxies whose X-Forwarded-Proto/-Host/-Prefix are trusted (app/forwarded.py); uvicorn
    # reads the same variable from the environment for X-Forwarded-Proto/-For.
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: str = "INFO"
    # `text` (readable) or `json` (one object a line); access logs follow it (app/logformat.py).
    log_format: str = "text"

    # GET /metrics: with API_KEYS, a key or this token (Bearer); the tenant as a label if on.
    metrics_token: SecretStr | None = None
    metrics_tenant_label: bool = False

    @field_validator(
        "rate_limit_runs", "max_runs_per_key", "max_streams_per_key", "redis_url", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit_runs")
    @classmethod
    def _known_rate(cls, value: str | None) -> str | None:
        if value is not None:
            _rate(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://")):
            raise ValueError("must be redis://HOST[:PORT][/DB] or rediss://...")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value == "memory://" or value.startswith(POSTGRES_SCHEMES):
            return value
        if value.startswith("sqlite:///"):
            path = value.removeprefix("sqlite:///")
            if not path or path.endswith("/") or "\x00" in path:
                raise ValueError("sqlite:///PATH needs the path of a file")
            return value
        raise ValueError("must be sqlite:///PATH, postgresql://... or memory://")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _known_proxies(cls, value: str) -> str:
        parse_trusted(value)
        return value

    @field_validator("api_keys")
    @classmethod
    def _valid_keys(cls, value: SecretStr) -> SecretStr:
        parse_keys(value.get_secret_value())
        return value

    @field_validator("stream_token_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (or unset: one is kept in the store)")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _explicit_origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",")):
            if origin == "*":
                raise ValueError("list the origins allowed (a wildcard would let any page in)")
            if origin and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
            if origin.endswith("/"):
                raise ValueError(f"{origin!r}: an origin has no path (drop the trailing '/')")
        return value

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value.lower() not in {"text", "json"}:
            raise ValueError("must be text or json")
        return value.lower()

    @field_validator("metrics_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @property
    def run_rate(self) -> RateLimitItem | None:
        return None if self.rate_limit_runs is None else _rate(self.rate_limit_runs)

    @property
    def offline(self) -> bool:
        return not self.openai_api_key

    @property
    def sqlite_path(self) -> Path | None:
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None

    @property
    def postgres_url(self) -> str | None:
        return self.database_url if self.database_url.startswith(POSTGRES_SCHEMES) else None

    @property
    def graph_dirs(self) -> list[Path]:
        return [Path(p.strip()) for p in self.graphs_dir.split(",") if p.strip()]

    @property
    def key_ring(self) -> KeyRing | None:
        """The API keys (None: no auth)."""
        return parse_keys(self.api_keys.get_secret_value())

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def check_database(self) -> None:
        """Open the SQLite file once (creating its folder): `SettingsError` naming
        DATABASE_URL if it cannot be, instead of a traceback from inside the startup."""
        path = self.sqlite_path
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(path)) as conn:
                conn.execute("PRAGMA user_version").fetchone()
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SettingsError(
                f"invalid settings: DATABASE_URL: cannot open {str(path)!r}: {reason}"
            ) from None

    @classmethod
    def load(cls) -> Settings:
        """Read the environment; raise `SettingsError` naming every bad setting."""
        try:
            return cls()
        except ValidationError as exc:
            problems = "; ".join(
                f"{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise SettingsError(f"invalid settings: {problems}") from None


def _rate(value: str) -> RateLimitItem:
    """One `limits` rate, like `60/minute` or `10 per second`, of at least one run."""
    try:
        items = list(parse_many(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a rate like 60/minute, 10/second or 1000/day") from None
    if len(items) != 1:
        raise ValueError(f"{value!r}: one rate only, like 60/minute")
    if items[0].amount < 1:
        raise ValueError(f"{value!r}: at least 1 run per window")
    return items[0]
