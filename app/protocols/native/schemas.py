"""The native API's request bodies (API.md, "Run creation body"), and what they become for the
engine (`RunRequest`) and the subscriber (`Selection`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.engine.errors import InvalidInput, LimitTooHigh
from app.engine.events import ALWAYS
from app.engine.registry import GraphEntry
from app.engine.run import _UNSET, RunRequest
from app.protocols.native.encoder import VISIBLE
from app.settings import Settings
from app.streaming.selection import Selection

DEFAULT_TYPES = VISIBLE - {"values"}  # `values` only when asked for


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    recursion_limit: int | None = Field(default=None, ge=1)


class StreamOptions(BaseModel):
    """What this client receives: event types (`metadata`, `error` and `end` always come), nodes
    by name at any depth, and whether `values` events are sent (also when `events` names
    them)."""

    model_config = ConfigDict(extra="forbid")
    events: list[str] | None = Field(default=None, max_length=32)
    nodes: list[str] | None = Field(default=None, max_length=256)
    values: bool = False


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: dict[str, Any] | None = None
    thread_id: str | None = Field(default=None, min_length=1, max_length=256)
    resume: Any = None
    config: dict[str, Any] | None = None
    limits: Limits | None = None
    on_disconnect: Literal["cancel", "continue"] = "cancel"
    max_rate: float | None = Field(default=None, gt=0, le=1000)
    stream: StreamOptions | None = None


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["interrupt", "rollback"] = "interrupt"


def run_request(body: RunBody, settings: Settings) -> RunRequest:
    limits = body.limits or Limits()
    caps = (
        ("max_tokens", limits.max_tokens, settings.max_tokens_per_run),
        ("timeout_s", limits.timeout_s, settings.run_timeout_s),
        ("recursion_limit", limits.recursion_limit, settings.max_recursion_limit),
    )
    for name, value, cap in caps:
        if value is not None and value > cap:
            raise LimitTooHigh(f"limits.{name}: {value} is above the server's cap of {cap}")
    resume = body.resume if "resume" in body.model_fields_set else _UNSET
    return RunRequest(
        input=body.input,
        thread_id=body.thread_id,
        resume=resume,
        config=body.config or {},
        max_tokens=limits.max_tokens,
        timeout_s=limits.timeout_s,
        recursion_limit=limits.recursion_limit,
    )


def selection(options: StreamOptions | None, graph: GraphEntry | None) -> Selection:
    """The subscriber's selection; `422 invalid_input` naming an unknown event type or node.
    `graph` None: the run's graph is not known here (nodes are then not checked)."""
    if options is None:
        return DEFAULT_SELECTION
    types = DEFAULT_TYPES
    if options.events is not None:
        unknown = sorted(set(options.events) - VISIBLE)
        if unknown:
            known = ", ".join(sorted(VISIBLE))
            raise InvalidInput(f"stream.events: unknown event type {unknown[0]!r} (known: {known})")
        types = frozenset(options.events)
    if options.values:
        types |= {"values"}
    nodes = None
    if options.nodes is not None:
        if graph is not None:
            unknown = sorted(set(options.nodes) - graph.all_nodes)
            if unknown:
                known = ", ".join(sorted(graph.all_nodes))
                raise InvalidInput(
                    f"stream.nodes: graph {graph.name!r} has no node {unknown[0]!r}"
                    f" (nodes: {known})"
                )
        nodes = frozenset(options.nodes)
    return Selection(types | ALWAYS, nodes)


DEFAULT_SELECTION = Selection(DEFAULT_TYPES | ALWAYS)
