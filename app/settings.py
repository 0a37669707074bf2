"""Service settings, read from the environment and `.env`; validated when the app is built.

There is no module-level instance: `create_app()` builds one (or takes the caller's), so a test
can start a server with its own settings. A bad value stops startup with a message naming the
setting (pydantic-settings names the field; `Settings.load` turns that into one readable line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from limits import RateLimitItem, parse_many
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.forwarded import parse_trusted


class SettingsError(RuntimeError):
    """A setting has a value the service cannot start with; the message names it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # The model. No key: the built-in offline model.
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    offline_token_delay_s: Annotated[float, Field(ge=0, le=5)] = 0.02

    # Storage.
    database_url: str = "sqlite:///./data/langgraph.db"
    graphs_dir: str = "graphs"
    sync_node_threads: Annotated[int, Field(ge=1, le=1024)] = 64

    # Limits.
    max_concurrent_runs: Annotated[int, Field(ge=1)] = 100
    max_tokens_per_run: Annotated[int, Field(ge=1)] = 32768
    run_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    max_recursion_limit: Annotated[int, Field(ge=1)] = 100
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024

    # Limits per key (app/auth/throttle.py); unset: none.
    rate_limit_runs: str | None = None
    max_runs_per_key: Annotated[int, Field(ge=1)] | None = None
    max_streams_per_key: Annotated[int, Field(ge=1)] | None = None
    # Shared state for several workers; today the run-rate windows of RATE_LIMIT_RUNS.
    redis_url: str | None = None
    redis_key_prefix: Annotated[str, Field(min_length=1, max_length=64)] = "lgstream"

    # Streams.
    send_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    ping_interval_s: Annotated[float, Field(gt=0)] = 15.0
    cancel_confirm_s: Annotated[float, Field(gt=0)] = 2.0
    finished_runs_cache_mb: Annotated[float, Field(ge=0)] = 64.0
    finished_runs_cache_s: Annotated[float, Field(ge=0)] = 10.0
    memory_trim_s: Annotated[float, Field(gt=0)] = 5.0
    run_retention_s: Annotated[float, Field(gt=0)] = 7 * 24 * 3600.0
    event_flush_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 8.0

    cors_origins: str = ""
    # Proxies whose X-Forwarded-Proto/-Host/-Prefix are trusted (app/forwarded.py); uvicorn
    # reads the same variable from the environment for X-Forwarded-Proto/-For.
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: str = "INFO"

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
        if value == "memory://" or value.startswith("sqlite:///"):
            return value
        raise ValueError("must be sqlite:///PATH or memory:// (Postgres support is not built yet)")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _known_proxies(cls, value: str) -> str:
        parse_trusted(value)
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
    def graph_dirs(self) -> list[Path]:
        return [Path(p.strip()) for p in self.graphs_dir.split(",") if p.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

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
