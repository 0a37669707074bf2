"""LangGraph's raw `astream_events(version="v2")` events -> internal events (app/engine/events.py).

The run is streamed with `stream_mode=["updates", "values", "custom"], subgraphs=True`
(`STREAM_KWARGS`), so the root graph's `on_chain_stream` chunks are `(ns, mode, data)`. What a
node writes with `get_stream_writer()` arrives through that stream, after the callbacks the node
made meanwhile (it is queued): a write made just before the node returns arrives after the
node's end.

    on_chain_start (a graph node)        -> node_start  {node, ns, step}
    on_chat_model_stream (text)          -> model_start (first chunk of a call), token
                                            {node, ns, message_id, text}
    on_chat_model_stream (tool call)     -> model_start, tool_call_chunk {.., index, call_id,
                                            name, args}
    on_chat_model_end                    -> model_end   {.., usage, tool_calls, finish_reason}
    on_tool_start / on_tool_end          -> tool_start / tool_end {node, ns, tool, call_id, ..}
    on_custom_event                      -> custom      {node, ns, name, data}
    root chunk (ns, "custom", data)      -> custom      {node, ns, name: None, data}
    on_chain_end (a graph node)          -> update {node, ns, values}, node_end {.., elapsed_ms}
    root chunk ((), "values", state)     -> values      {values} (output schema keys only)
    root chunk ((), "updates", {"__interrupt__": ...}) -> interrupt {node, ns, value, id}

A "graph node" event is a chain event whose name is the node LangGraph is running
(`metadata.langgraph_node`) and that carries the `graph:step:N` tag; chains nested inside a node
(prompt | model sequences, ToolNode internals, a subgraph's own chain) are not nodes.
`ns` comes from the task's checkpoint namespace (`outer:<id>|inner:<id>` -> `["outer"]`).
A model call tagged `nostream` (LangGraph's convention) streams no tokens for anyone; its
`model_start`/`model_end` are still kept.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage
from langgraph.types import Command, Interrupt

from app.engine.jsonable import to_jsonable

STREAM_KWARGS: dict[str, Any] = {
    "stream_mode": ["updates", "values", "custom"],
    "subgraphs": True,
    # Not `include_types`: LangChain filters a custom event by its *name* as its type, so no
    # type list lets `adispatch_custom_event` through. Prompt and parser events are not needed.
    "exclude_types": ["prompt", "parser"],
}
NOSTREAM = "nostream"
Mapped = list[tuple[str, dict[str, Any]]]


class Usage:
    __slots__ = ("input_tokens", "output_tokens", "total_tokens")

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.total_tokens = 0

    def add(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.input_tokens += int(usage.get("input_tokens") or 0)
            self.output_tokens += int(usage.get("output_tokens") or 0)
            self.total_tokens += int(usage.get("total_tokens") or 0)

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") if isinstance(p, dict) else str(p)
            for p in content
            if isinstance(p, str) or (isinstance(p, dict) and p.get("type") == "text")
        )
    return ""


def namespace(task_ns: str | None) -> list[str]:
    """The parent nodes of a task from its checkpoint namespace: `a:<id>|b:<id>` -> `["a"]`."""
    if not task_ns:
        return []
    return [part.split(":", 1)[0] for part in task_ns.split("|")[:-1]]


def _chunk_ns(ns: tuple[str, ...]) -> list[str]:
    """A stream chunk's namespace (the graph that wrote it): `("a:<id>",)` -> `["a"]`."""
    return [part.split(":", 1)[0] for part in ns]


_LOCAL_METADATA = ("langgraph_triggers", "langgraph_path")


class EventMapper:
    """Stateful mapping for one run: when each node started, which model calls have begun,
    which tool calls the model announced. `output_keys`: the keys of the graph's output
    schema (None: all of the state)."""

    def __init__(self, output_keys: Collection[str] | None = None) -> None:
        self.usage = Usage()
        self.interrupted = False
        self._output_keys = frozenset(output_keys) if output_keys is not None else None
        # node run_id -> (node, ns, started, task ns of the node's graph)
        self._started: dict[str, tuple[str, list[str], float, str]] = {}
        self._last_in_graph: dict[str, str] = {}  # graph ns -> the node that last started there
        self._calls: dict[str, str] = {}  # model call run_id -> its message id
        # Tool events do not carry the model's tool_call id at start; the model's message does.
        self._pending_calls: dict[str, deque[str]] = {}
        self._call_ids: dict[str, str] = {}

    def map(self, raw: dict[str, Any]) -> Mapped:
        kind = raw["event"]
        if kind == "on_chat_model_stream":
            return self._chunk(raw)
        if kind in ("on_chain_start", "on_chain_end"):
            return self._node(raw, kind == "on_chain_start")
        if kind == "on_chain_stream":
            if raw.get("parent_ids"):
                return []
            return self._root_chunk(raw["data"].get("chunk"))
        if kind == "on_chat_model_end":
            return self._model_end(raw)
        if kind == "on_tool_start":
            return self._tool_start(raw)
        if kind == "on_tool_end":
            return self._tool_end(raw)
        if kind == "on_custom_event":
            node, ns = self._where(raw)
            data = {"node": node, "ns": ns, "name": raw["name"], "data": to_jsonable(raw["data"])}
            return [("custom", data)]
        return []

    # -- nodes -----------------------------------------------------------------------------

    def _node(self, raw: dict[str, Any], starting: bool) -> Mapped:
        metadata = raw.get("metadata") or {}
        node = metadata.get("langgraph_node")
        if node is None or raw["name"] != node or not _is_step(raw.get("tags")):
            return []
        step = metadata.get("langgraph_step")
        task_ns = metadata.get("langgraph_checkpoint_ns") or ""
        graph_ns = task_ns.rpartition("|")[0]
        if starting:
            ns = namespace(task_ns)
            self._started[raw["run_id"]] = (node, ns, time.monotonic(), graph_ns)
            self._last_in_graph[graph_ns] = node
            return [("node_start", {"node": node, "ns": ns, "step": step})]
        _, ns, started, _ = self._started.pop(
            raw["run_id"], (node, namespace(task_ns), time.monotonic(), graph_ns)
        )
        elapsed = round((time.monotonic() - started) * 1000, 1)
        return [
            ("update", {"node": node, "ns": ns, "values": _values(raw["data"].get("output"))}),
            ("node_end", {"node": node, "ns": ns, "step": step, "elapsed_ms": elapsed}),
        ]

    def _where(self, raw: dict[str, Any]) -> tuple[str | None, list[str]]:
        metadata = raw.get("metadata") or {}
        return metadata.get("langgraph_node"), namespace(metadata.get("langgraph_checkpoint_ns"))

    # -- model calls -----------------------------------------------------------------------

    def _chunk(self, raw: dict[str, Any]) -> Mapped:
        chunk = raw["data"]["chunk"]
        out: Mapped = []
        call_id = raw["run_id"]
        message_id = self._calls.get(call_id)
        if message_id is None:
            message_id = self._calls[call_id] = chunk.id or call_id
            out.append(("model_start", self._model_start(raw, message_id)))
        if NOSTREAM in (raw.get("tags") or ()):
            return out
        node, ns = self._where(raw)
        for piece in getattr(chunk, "tool_call_chunks", None) or ():
            out.append(
                (
                    "tool_call_chunk",
                    {
                        "node": node,
                        "ns": ns,
                        "message_id": message_id,
                        "index": piece.get("index"),
                        "call_id": piece.get("id"),
                        "name": piece.get("name"),
                        "args": piece.get("args"),
                    },
                )
            )
        text = _text(chunk.content)
        if text:
            # Keep these keys and this order, text last: tokens merge on their bytes.
            out.append(("token", {"node": node, "ns": ns, "message_id": message_id, "text": text}))
        return out

    def _model_start(self, raw: dict[str, Any], message_id: str) -> dict[str, Any]:
        node, ns = self._where(raw)
        metadata = {
            k: v for k, v in (raw.get("metadata") or {}).items() if k not in _LOCAL_METADATA
        }
        return {
            "node": node,
            "ns": ns,
            "message_id": message_id,
            "call_id": raw["run_id"],
            "tags": list(raw.get("tags") or ()),
            "metadata": to_jsonable(metadata),
        }

    def _model_end(self, raw: dict[str, Any]) -> Mapped:
        output = raw["data"].get("output")
        usage = getattr(output, "usage_metadata", None)
        self.usage.add(usage)
        tool_calls = list(getattr(output, "tool_calls", None) or ())
        for call in tool_calls:
            if call.get("id"):
                self._pending_calls.setdefault(call["name"], deque()).append(call["id"])
        out: Mapped = []
        call_id = raw["run_id"]
        message_id = self._calls.pop(call_id, None)
        if message_id is None:  # nothing was streamed (a model that does not stream)
            message_id = getattr(output, "id", None) or call_id
            out.append(("model_start", self._model_start(raw, message_id)))
        node, ns = self._where(raw)
        finish = (getattr(output, "response_metadata", None) or {}).get("finish_reason")
        out.append(
            (
                "model_end",
                {
                    "node": node,
                    "ns": ns,
                    "message_id": message_id,
                    "call_id": call_id,
                    "usage": dict(usage) if usage else None,
                    "tool_calls": [
                        {"id": c.get("id"), "name": c["name"], "args": to_jsonable(c["args"])}
                        for c in tool_calls
                    ],
                    "finish_reason": finish,
                },
            )
        )
        return out

    # -- tools -----------------------------------------------------------------------------

    def _tool_start(self, raw: dict[str, Any]) -> Mapped:
        pending = self._pending_calls.get(raw["name"])
        start_id = pending.popleft() if pending else str(raw["run_id"])
        self._call_ids[raw["run_id"]] = start_id
        node, ns = self._where(raw)
        data = {
            "node": node,
            "ns": ns,
            "tool": raw["name"],
            "call_id": start_id,
            "input": to_jsonable(raw["data"].get("input")),
        }
        return [("tool_start", data)]

    def _tool_end(self, raw: dict[str, Any]) -> Mapped:
        output = raw["data"].get("output")
        call_id: str | None = self._call_ids.pop(raw["run_id"], "") or None
        if isinstance(output, ToolMessage):
            call_id = call_id or output.tool_call_id
            output = output.content
        node, ns = self._where(raw)
        data = {
            "node": node,
            "ns": ns,
            "tool": raw["name"],
            "call_id": call_id or str(raw["run_id"]),
            "output": to_jsonable(output),
        }
        return [("tool_end", data)]

    # -- the root graph's stream -----------------------------------------------------------

    def _root_chunk(self, chunk: Any) -> Mapped:
        if not (isinstance(chunk, tuple) and len(chunk) == 3):
            return []
        ns, mode, data = chunk
        if mode == "custom":
            graph_ns = "|".join(ns)
            node = self._open_in(graph_ns)
            return [("custom", {"node": node, "ns": _chunk_ns(ns), "name": None, "data": data})]
        if ns:
            return []  # a subgraph's own values and updates: its nodes' events say it already
        if mode == "values":
            return [("values", {"values": self._output(data)})]
        if mode == "updates":
            return self._interrupts(data)
        return []

    def _open_in(self, graph_ns: str) -> str | None:
        """The node of graph `graph_ns` that wrote a stream-writer chunk: the newest one still
        running there (a write is delivered after the node's own callbacks, so a node that writes
        and returns at once may have ended: then the last one that started there)."""
        for node, _, _, where in reversed(self._started.values()):
            if where == graph_ns:
                return node
        return self._last_in_graph.get(graph_ns)

    def _output(self, state: Any) -> Any:
        """The state as the output schema shows it; a pending interrupt (LangGraph puts it in
        the values too) is the `interrupt` event's, not part of the state."""
        if isinstance(state, dict):
            keys = self._output_keys
            state = {
                k: v
                for k, v in state.items()
                if k != "__interrupt__" and (keys is None or k in keys)
            }
        return to_jsonable(state)

    def _interrupts(self, chunk: Any) -> Mapped:
        if not isinstance(chunk, dict) or "__interrupt__" not in chunk:
            return []
        self.interrupted = True
        # The node that called interrupt() started and never ended: the newest open one.
        node: str | None = None
        ns: list[str] = []
        if self._started:
            node, ns, _, _ = next(reversed(self._started.values()))
        out: Mapped = []
        for item in chunk["__interrupt__"]:
            data = {"node": node, "ns": ns, "value": to_jsonable(getattr(item, "value", item))}
            if isinstance(item, Interrupt):
                data["id"] = item.id
            out.append(("interrupt", data))
        return out


def _is_step(tags: list[str] | None) -> bool:
    return bool(tags) and any(t.startswith("graph:step:") for t in tags or ())


def _values(output: Any) -> Any:
    if isinstance(output, Command):
        return to_jsonable(output.update)
    if isinstance(output, BaseMessage):
        return to_jsonable(output)
    return to_jsonable(output)
