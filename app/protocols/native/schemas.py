"""The native API's request bodies (API.md, "Run creation body"), and what they become for the
engine (`RunRequest`) and the subscriber (`Selection`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.engine.errors import InvalidInput, LimitTooHigh
from app.engine.events import ALWAYS
from app.engine.registry import GraphEntry
from app.engine.run import _UNSET, RunRequest
from app.protocols.native.encoder import VISIBLE
from app.settings import Settings
from app.streaming.selection import Selection

DEFAULT_TYPES = VISIBLE - {"values"}  # `values` only when asked for


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
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


Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Scalar = str | int | float | bool | None
# Metadata keys LangGraph, LangChain or LangSmith set themselves: a client's would shadow them.
RESERVED_METADATA = ("langgraph_", "checkpoint_", "ls_", "__")
RESERVED_METADATA_KEYS = frozenset({"thread_id", "run_id", "graph_id", "assistant_id"})


class ClientConfig(BaseModel):
    """The part of a LangGraph `RunnableConfig` a client may set; everything else in it
    (callbacks, the checkpointer, the thread's `thread_id`/`checkpoint_ns`/`checkpoint_id`,
    LangGraph's `__pregel_*` keys, the model) is the server's, and naming it is `422`.
    `configurable` takes only the keys the graph declares in `configurable_keys`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    tags: list[Name] | None = Field(default=None, max_length=32)
    metadata: dict[Annotated[str, StringConstraints(max_length=64)], Scalar] | None = Field(
        default=None, max_length=32
    )
    run_name: Name | None = None
    recursion_limit: int | None = Field(default=None, ge=1)
    configurable: dict[Name, Scalar] | None = Field(default=None, max_length=32)

    @field_validator("metadata")
    @classmethod
    def _not_reserved(cls, value: dict[str, Scalar] | None) -> dict[str, Scalar] | None:
        for key in value or {}:
            if key in RESERVED_METADATA_KEYS or key.startswith(RESERVED_METADATA):
                raise ValueError(f"key {key!r} is set by the server")
        return value


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    input: dict[str, Any] | None = None
    # Visible text, no control characters: it appears in URLs, logs and the database.
    thread_id: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    resume: Any = None
    config: ClientConfig | None = None
    limits: Limits | None = None
    on_disconnect: Literal["cancel", "continue"] = "cancel"
    # At least one frame every 10 s: a slower rate would hold frames (and pings) back for longer
    # than a client or a proxy waits for a quiet connection.
    max_rate: float | None = Field(default=None, ge=0.1, le=1000)
    stream: StreamOptions | None = None

    @model_validator(mode="after")
    def _encodable(self) -> RunBody:
        for name in ("input", "resume"):
            _check_encodable(getattr(self, name), name)
        if self.config is not None:
            _check_encodable(self.config.model_dump(exclude_none=True), "config")
        return self


class RunStarted(BaseModel):
    """`202` of `POST /graphs/{graph}/runs`."""

    run_id: str
    thread_id: str
    status: str
    stream_url: str
    cancel_url: str


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["interrupt", "rollback"] = "interrupt"


def run_request(body: RunBody, settings: Settings, graph: GraphEntry) -> RunRequest:
    """The engine's request; `422` for what the body may not ask: a limit above the server's
    cap, a `configurable` key the graph does not read, `resume` without a `thread_id` (a new
    thread has nothing to resume) or with an `input` (it would be dropped)."""
    limits = body.limits or Limits()
    config = body.config or ClientConfig()
    recursion_limit = limits.recursion_limit
    if config.recursion_limit is not None:
        if recursion_limit is not None and recursion_limit != config.recursion_limit:
            raise InvalidInput(
                "config.recursion_limit: differs from limits.recursion_limit; give one"
            )
        recursion_limit = config.recursion_limit
    caps = (
        ("limits.max_tokens", limits.max_tokens, settings.max_tokens_per_run),
        ("limits.timeout_s", limits.timeout_s, settings.run_timeout_s),
        ("limits.recursion_limit", limits.recursion_limit, settings.max_recursion_limit),
        ("config.recursion_limit", config.recursion_limit, settings.max_recursion_limit),
    )
    for name, value, cap in caps:
        if value is not None and value > cap:
            raise LimitTooHigh(f"{name}: {value} is above the server's cap of {cap}")
    for key in config.configurable or {}:
        if key not in graph.configurable_keys:
            reads = ", ".join(sorted(graph.configurable_keys)) or "none"
            raise InvalidInput(
                f"config.configurable.{key}: not a key graph {graph.name!r} reads"
                f" (it reads: {reads})"
            )
    resuming = "resume" in body.model_fields_set
    if resuming and body.thread_id is None:
        raise InvalidInput("resume: needs a thread_id (the paused thread to resume)")
    if resuming and body.input is not None:
        raise InvalidInput("input: not allowed with resume (the paused thread is resumed)")
    extra: dict[str, Any] = {
        "tags": config.tags,
        "metadata": config.metadata,
        "run_name": config.run_name,
        "configurable": config.configurable,
    }
    return RunRequest(
        input=body.input,
        thread_id=body.thread_id,
        resume=body.resume if resuming else _UNSET,
        config={k: v for k, v in extra.items() if v is not None},
        max_tokens=limits.max_tokens,
        timeout_s=limits.timeout_s,
        recursion_limit=recursion_limit,
    )


def _check_encodable(value: Any, where: str) -> None:
    """`422` naming the first value JSON can carry but the service cannot store or send: a
    string with a lone surrogate (`"\\ud800"`, not valid Unicode, so not UTF-8) or an integer
    beyond 64 bits. The walk runs only when the whole value fails to encode."""
    try:
        orjson.dumps(value)
        return
    except TypeError:
        pass
    if isinstance(value, str):
        raise InvalidInput(f"{where}: not valid Unicode (a lone surrogate)")
    if isinstance(value, int) and not isinstance(value, bool):
        raise InvalidInput(f"{where}: integer out of range (at most 64 bits)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_encodable(key, f"{where} key")
            _check_encodable(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_encodable(item, f"{where}.{index}")
    raise InvalidInput(f"{where}: cannot be encoded as JSON")


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
