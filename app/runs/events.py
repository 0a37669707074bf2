"""LangGraph's raw `astream_events(version="v2")` events -> our event vocabulary (API.md).

    on_chain_start   (a graph node)  -> node_start {node, step}
    on_chat_model_stream (text)      -> token      {node, message_id, text}
    on_tool_start / on_tool_end      -> tool_start / tool_end {node, tool, call_id, input|output}
    on_chain_end     (a graph node)  -> update {node, values}, node_end {node, step, elapsed_ms}
    on_chain_stream  (the graph, __interrupt__) -> interrupt {node, value, id}
    on_chat_model_end                -> (no event) token usage, added to the run's record

A "graph node" event is a chain event whose name is the node LangGraph is running
(`metadata.langgraph_node`) and that carries the `graph:step:N` tag; chains nested inside a
node (prompt | model sequences, ToolNode internals) are not nodes and are not reported.
`INCLUDE_TYPES` filters at the source, so LangGraph does not build events nobody reads.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage
from langgraph.types import Command, Interrupt

from app.runs.jsonable import to_jsonable

INCLUDE_TYPES = ["chain", "chat_model", "tool"]
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


class EventMapper:
    """Stateful mapping for one run (it remembers when each node started)."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.interrupted = False
        self._started: dict[str, tuple[str, float]] = {}  # node:run_id -> (node, started)
        # Tool events do not carry the model's tool_call id at start; the model's message does.
        self._pending_calls: dict[str, deque[str]] = {}
        self._call_ids: dict[str, str] = {}

    def map(self, raw: dict[str, Any]) -> Mapped:
        kind = raw["event"]
        if kind == "on_chat_model_stream":
            return self._token(raw)
        metadata = raw.get("metadata") or {}
        node = metadata.get("langgraph_node")
        if kind == "on_chat_model_end":
            output = raw["data"].get("output")
            self.usage.add(getattr(output, "usage_metadata", None))
            for call in getattr(output, "tool_calls", None) or ():
                if call.get("id"):
                    self._pending_calls.setdefault(call["name"], deque()).append(call["id"])
            return []
        if kind in ("on_chain_start", "on_chain_end"):
            if node is None or raw["name"] != node or not _is_step(raw.get("tags")):
                return []
            step = metadata.get("langgraph_step")
            key = f"{node}:{raw['run_id']}"
            if kind == "on_chain_start":
                self._started[key] = (node, time.monotonic())
                return [("node_start", {"node": node, "step": step})]
            _, started = self._started.pop(key, (node, time.monotonic()))
            elapsed = round((time.monotonic() - started) * 1000, 1)
            return [
                ("update", {"node": node, "values": _values(raw["data"].get("output"))}),
                ("node_end", {"node": node, "step": step, "elapsed_ms": elapsed}),
            ]
        if kind == "on_tool_start":
            pending = self._pending_calls.get(raw["name"])
            start_id = pending.popleft() if pending else str(raw["run_id"])
            self._call_ids[raw["run_id"]] = start_id
            return [
                (
                    "tool_start",
                    {
                        "node": node,
                        "tool": raw["name"],
                        "call_id": start_id,
                        "input": to_jsonable(raw["data"].get("input")),
                    },
                )
            ]
        if kind == "on_tool_end":
            output = raw["data"].get("output")
            call_id: str | None = self._call_ids.pop(raw["run_id"], "") or None
            if isinstance(output, ToolMessage):
                call_id = call_id or output.tool_call_id
                output = output.content
            return [
                (
                    "tool_end",
                    {
                        "node": node,
                        "tool": raw["name"],
                        "call_id": call_id or str(raw["run_id"]),
                        "output": to_jsonable(output),
                    },
                )
            ]
        if kind == "on_chain_stream" and not raw.get("parent_ids"):
            return self._interrupts(raw["data"].get("chunk"))
        return []

    def _token(self, raw: dict[str, Any]) -> Mapped:
        chunk = raw["data"]["chunk"]
        text = _text(chunk.content)
        if not text:
            return []
        node = (raw.get("metadata") or {}).get("langgraph_node")
        # Keep these keys and this order, text last: a lagging reader merges tokens on their
        # encoded bytes (app/sse/stream.py, `_take`).
        return [("token", {"node": node, "message_id": chunk.id or raw["run_id"], "text": text})]

    def _interrupts(self, chunk: Any) -> Mapped:
        if not isinstance(chunk, dict) or "__interrupt__" not in chunk:
            return []
        self.interrupted = True
        # The node that called interrupt() started and never ended: the newest open one.
        node = next(reversed(self._started.values()))[0] if self._started else None
        out: Mapped = []
        for item in chunk["__interrupt__"]:
            data = {"node": node, "value": to_jsonable(getattr(item, "value", item))}
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
