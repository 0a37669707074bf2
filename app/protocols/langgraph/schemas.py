"""The LangGraph API's request bodies, and what a run-create body becomes for the engine.

Fields a client of the reference server may send and this server does not serve are refused
with `422` naming them (never ignored silently, since the run would not be what was asked): a
`checkpoint` to start from, webhooks, delayed runs. Unknown fields are ignored, as the SDKs
add optional ones release by release.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.engine.errors import InvalidInput, LimitTooHigh
from app.engine.registry import GraphEntry
from app.engine.run import _UNSET, RunRequest
from app.protocols.langgraph.encoder import MODES, NOT_SERVED

Strategy = Literal["reject", "interrupt", "rollback", "enqueue"]
RESERVED_CONFIGURABLE = ("thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map")
RESERVED_METADATA = ("langgraph_", "checkpoint_", "ls_", "__")
UNSERVED_FIELDS = ("checkpoint", "checkpoint_id", "webhook", "after_seconds", "checkpoint_during")


class Body(BaseModel):
    """Every body: every value storable as JSON in every store (valid Unicode, integers of at
    most 64 bits, no NUL, which PostgreSQL's JSONB refuses); `422` naming the field if not."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="after")
    def _storable(self) -> Body:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                value = value.model_dump()
            try:
                encoded = orjson.dumps(value)
            except TypeError:
                raise ValueError(
                    f"{name}: cannot be stored (not valid Unicode, or an integer above 64 bits)"
                ) from None
            if b"\\u0000" in encoded:
                raise ValueError(f"{name}: cannot be stored (holds a NUL character)")
        return self


class CommandBody(Body):
    resume: Any = None
    update: Any = None
    goto: Any = None


class RunCreate(Body):
    assistant_id: str = Field(min_length=1, max_length=256)
    input: dict[str, Any] | None = None
    command: CommandBody | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: str | list[str] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    multitask_strategy: Strategy = "enqueue"
    on_disconnect: Literal["cancel", "continue"] | None = None
    if_not_exists: Literal["create", "reject"] = "reject"
    checkpoint: Any = None
    checkpoint_id: Any = None
    webhook: Any = None
    after_seconds: Any = None
    checkpoint_during: Any = None

    @field_validator("stream_mode")
    @classmethod
    def _modes(cls, value: str | list[str]) -> list[str]:
        modes = [value] if isinstance(value, str) else list(value)
        for mode in modes:
            if mode in NOT_SERVED:
                raise ValueError(f"{mode!r} is not served yet (served: {', '.join(MODES)})")
            if mode not in MODES:
                raise ValueError(f"unknown stream mode {mode!r} (served: {', '.join(MODES)})")
        return list(dict.fromkeys(modes)) or ["values"]

    @property
    def modes(self) -> list[str]:
        return self.stream_mode if isinstance(self.stream_mode, list) else [self.stream_mode]


class ThreadCreate(Body):
    thread_id: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadSearch(Body):
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class AssistantSearch(Body):
    graph_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class HistoryBody(Body):
    limit: int = Field(default=10, ge=1, le=1000)
    before: dict[str, Any] | str | None = None


def run_request(
    body: RunCreate,
    entry: GraphEntry,
    *,
    thread_id: str | None,
    tenant: str,
    run_id: str,
    max_recursion_limit: int,
) -> RunRequest:
    """The engine's request for a LangGraph run-create body; `422` for what it may not ask."""
    for name in UNSERVED_FIELDS:
        if getattr(body, name) is not None:
            raise InvalidInput(f"{name}: not served by this server")
    if body.context:
        raise InvalidInput("context: the graphs' runtime context is the server's (its model)")
    if body.input is not None and body.command is not None:
        raise InvalidInput("input: not allowed with command (give one)")
    config = body.config or {}
    configurable = dict(config.get("configurable") or {})
    for key in configurable:
        if key in RESERVED_CONFIGURABLE or key.startswith("__"):
            raise InvalidInput(f"config.configurable.{key}: set by the server")
    recursion_limit = config.get("recursion_limit")
    if recursion_limit is not None:
        if not isinstance(recursion_limit, int) or recursion_limit < 1:
            raise InvalidInput("config.recursion_limit: must be a positive integer")
        if recursion_limit > max_recursion_limit:
            raise LimitTooHigh(
                f"config.recursion_limit: {recursion_limit} is above the server's cap of"
                f" {max_recursion_limit}"
            )
    tags = config.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise InvalidInput("config.tags: must be a list of strings")
    metadata = {**(config.get("metadata") or {}), **(body.metadata or {})}
    for key in metadata:
        if key.startswith(RESERVED_METADATA) or key in ("thread_id", "run_id", "assistant_id"):
            raise InvalidInput(f"metadata.{key}: set by the server")
    extra: dict[str, Any] = {
        "tags": tags,
        "metadata": metadata or None,
        "run_name": config.get("run_name"),
        # The graph's own configurable keys; the reference passes the rest through to a graph
        # that never reads them, so they are dropped here.
        "configurable": {k: v for k, v in configurable.items() if k in entry.configurable_keys}
        or None,
    }
    command = body.command
    resume: Any = _UNSET
    update: Any = _UNSET
    goto: Any = _UNSET
    if command is not None:
        given = command.model_fields_set
        if "resume" in given:
            resume = command.resume
            entry.validate_resume(resume)
        if "update" in given and command.update is not None:
            update = command.update
        if "goto" in given and command.goto is not None:
            goto = command.goto
        if thread_id is None:
            raise InvalidInput("command: needs a thread (the paused thread to resume)")
    if body.input is not None:
        entry.validate_input(body.input)
    return RunRequest(
        input=body.input,
        thread_id=thread_id,
        resume=resume,
        update=update,
        goto=goto,
        config={k: v for k, v in extra.items() if v is not None},
        recursion_limit=recursion_limit,
        tenant=tenant,
        run_id=run_id,
        interrupt_before=_nodes(body.interrupt_before, entry, "interrupt_before"),
        interrupt_after=_nodes(body.interrupt_after, entry, "interrupt_after"),
    )


def _nodes(value: str | list[str] | None, entry: GraphEntry, where: str) -> list[str] | None:
    if value is None:
        return None
    if value == "*":
        return ["*"]
    unknown = sorted(set(value) - set(entry.nodes))
    if unknown:
        raise InvalidInput(
            f"{where}: graph {entry.name!r} has no node {unknown[0]!r} (nodes: "
            f"{', '.join(entry.nodes)})"
        )
    return list(value)
