"""The internal event vocabulary: what the event log of a run holds, one TypedDict per type.

Every protocol builds its wire format from these. The native protocol shows the *public* types
(API.md's table); the *internal* ones are kept so other protocols can be served from the same
run (LangGraph's `messages` tuples need each model call's metadata, the AI SDK's
`tool-input-delta` needs tool-call argument chunks, per-message usage needs each call's usage).

Node-scoped events carry `node` and `ns`: the list of parent nodes from the root graph down to
the node's own graph (`[]` for the root graph's nodes), so `inner` inside subgraph node `outer`
has `ns: ["outer"]`.

`metadata`, `error` and `end` are built only here (their constructors below): the manager
writes them, nothing else does.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class Metadata(TypedDict):
    run_id: str
    thread_id: str
    graph: str


class NodeStart(TypedDict):
    node: str
    ns: list[str]
    step: int | None


class Token(TypedDict):
    """Keep these keys in this order, text last: tokens are merged on their encoded bytes
    (app/engine/codec.py)."""

    node: str | None
    ns: list[str]
    message_id: str
    text: str


class ToolStart(TypedDict):
    node: str | None
    ns: list[str]
    tool: str
    call_id: str
    input: Any


class ToolEnd(TypedDict):
    node: str | None
    ns: list[str]
    tool: str
    call_id: str
    output: Any


class Custom(TypedDict):
    """`name` is None for what a node wrote with `get_stream_writer()`, the event's name for
    `adispatch_custom_event(name, data)` / `dispatch_custom_event`."""

    node: str | None
    ns: list[str]
    name: str | None
    data: Any


class Update(TypedDict):
    node: str
    ns: list[str]
    values: Any


class Values(TypedDict):
    """The root graph's state after a step, as its output schema shows it."""

    values: Any


class NodeEnd(TypedDict):
    node: str
    ns: list[str]
    step: int | None
    elapsed_ms: float


class InterruptEvent(TypedDict, total=False):
    node: str | None
    ns: list[str]
    value: Any
    id: str


class Error(TypedDict):
    code: str
    message: str


class End(TypedDict):
    status: str
    reason: str
    usage: dict[str, int]
    elapsed_ms: float | None


# -- internal: kept in the log, shown by no protocol of today ----------------------------------


class ModelStart(TypedDict):
    """A model call's first output: which message it makes and the call's tags and LangGraph
    metadata (what `messages` tuples carry). Written once per call, before its first token."""

    node: str | None
    ns: list[str]
    message_id: str
    call_id: str
    tags: list[str]
    metadata: dict[str, Any]


class ModelEnd(TypedDict):
    """A model call's end: its message id, its usage (when the provider reports it), its tool
    calls and finish reason."""

    node: str | None
    ns: list[str]
    message_id: str
    call_id: str
    usage: dict[str, int] | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None


class ToolCallChunk(TypedDict):
    """A streamed piece of a tool call's arguments, as the model produced it."""

    node: str | None
    ns: list[str]
    message_id: str
    index: int | None
    call_id: str | None
    name: str | None
    args: str | None


EventType = Literal[
    "metadata",
    "node_start",
    "token",
    "tool_start",
    "tool_end",
    "custom",
    "update",
    "values",
    "node_end",
    "interrupt",
    "error",
    "end",
    "model_start",
    "model_end",
    "tool_call_chunk",
]

PUBLIC: frozenset[str] = frozenset(
    (
        "metadata",
        "node_start",
        "token",
        "tool_start",
        "tool_end",
        "custom",
        "update",
        "values",
        "node_end",
        "interrupt",
        "error",
        "end",
    )
)
"""The types API.md's event table lists."""

INTERNAL: frozenset[str] = frozenset(("model_start", "model_end", "tool_call_chunk"))
ALWAYS: frozenset[str] = frozenset(("metadata", "error", "end"))
"""Sent to every subscriber whatever it chose."""

NODE_SCOPED: frozenset[str] = (PUBLIC - {"metadata", "values", "error", "end"}) | INTERNAL


def metadata(run_id: str, thread_id: str, graph: str) -> Metadata:
    return {"run_id": run_id, "thread_id": thread_id, "graph": graph}


def error(code: str, message: str) -> Error:
    return {"code": code, "message": message}


def end(status: str, reason: str, usage: dict[str, int], elapsed_ms: float | None) -> End:
    return {"status": status, "reason": reason, "usage": usage, "elapsed_ms": elapsed_ms}
