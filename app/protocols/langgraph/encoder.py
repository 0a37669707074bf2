"""The LangGraph Agent Server's SSE wire format, from our internal events (LANGGRAPH_API.md).

A frame is `event: NAME\\r\\ndata: JSON\\r\\nid: N\\r\\n\\r\\n` (CRLF, that field order), one per
LangGraph stream part; the keep-alive is `: heartbeat`. Ids are always sent (the reference
sends them only for `stream_resumable` runs): our ids are gap-free, so any reconnect resumes.

What each stream mode is made of, from the run's one log (app/engine/events.py):

    metadata           -> metadata {run_id, attempt: 1}                         (always)
    values             -> values <state, output schema>; the one after an interrupt also
                          carries "__interrupt__" (the interrupt events come just before it)
    update / interrupt -> updates {node: update} / {"__interrupt__": [{value, id}]} (updates)
    model_start        -> messages [empty AIMessageChunk, the call's LangGraph metadata]
    token              -> messages [AIMessageChunk {content, id}, {langgraph_node, ...}]
    tool_call_chunk    -> messages [AIMessageChunk {tool_call_chunks: [...]}, ...]
    model_end          -> messages [AIMessageChunk {response_metadata: {finish_reason}}, ...]
    tool_end           -> messages [ToolMessage {content, tool_call_id, name}, ...]
                          (the last five: messages-tuple)
    custom, name null  -> custom <data>                                         (custom)
    error              -> error {error: code, message}                          (always)
    end                -> nothing: the stream closes (the run's status is final by then)

With `stream_subgraphs`, a part from inside subgraph node `outer` is named `updates|outer`
(the reference adds each task's id, `outer:<uuid>`; our events carry node names only), and
without it a subgraph's updates and custom parts are not sent, as LangGraph does; tokens
come from every depth either way (LangGraph's `messages` mode follows nested model calls).

Design record
- Stateless per frame, except one thing: an `interrupt` seen in `values` mode is held until the
  `values` event that follows it. `key` names that state, so readers share merged sends
  (app/streaming/subscriber.py) only when their frames are the same bytes.
- Tokens are framed from their payload bytes (the head parsed once per message, the text
  sliced), never decoded whole: a token is the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from app.engine import codec
from app.engine.codec import dumps, loads, token_head
from app.streaming.selection import Selection

MODES = ("values", "updates", "messages-tuple", "custom")
"""The stream modes served. `messages` (partial/complete messages), `events` and `debug` are
not yet (README, "LangGraph SDK and agent-chat-ui")."""
NOT_SERVED = ("messages", "events", "debug", "tasks", "checkpoints")

ALWAYS = frozenset(("metadata", "error", "end"))
TYPES: dict[str, frozenset[str]] = {
    "values": frozenset(("values", "interrupt")),
    "updates": frozenset(("update", "interrupt")),
    "messages-tuple": frozenset(
        ("model_start", "token", "tool_call_chunk", "model_end", "tool_end")
    ),
    "custom": frozenset(("custom",)),
}
PING = b": heartbeat\r\n\r\n"
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_VALUES_HEAD = b'{"values":'
_CHUNK: dict[str, Any] = {
    "additional_kwargs": {},
    "response_metadata": {},
    "type": "AIMessageChunk",
    "name": None,
    "tool_calls": [],
    "invalid_tool_calls": [],
    "usage_metadata": None,
    "tool_call_chunks": [],
    "chunk_position": None,
}


def _nothing(event_id: int, payload: bytes) -> bytes:
    return b""


def selection(modes: Collection[str]) -> Selection:
    """The internal events a stream of these modes is made of."""
    types = set(ALWAYS)
    for mode in modes:
        types |= TYPES[mode]
    return Selection(frozenset(types))


def frame(event: str, event_id: int, data: bytes) -> bytes:
    return b"event: %s\r\ndata: %s\r\nid: %d\r\n\r\n" % (event.encode(), data, event_id)


class LangGraphEncoder:
    """The subscriber's `Encoder` for one LangGraph stream: its modes, whether subgraphs'
    parts are sent, and the run's ids (put in every `messages` part's metadata). `metadata`:
    whether the `metadata` part is sent (not to a join that names its modes)."""

    ping = PING

    def __init__(
        self,
        modes: Collection[str],
        subgraphs: bool,
        *,
        run_id: str,
        thread_id: str | None,
        graph: str,
        assistant_id: str,
        metadata: bool = True,
    ) -> None:
        self.modes = frozenset(modes)
        self.subgraphs = subgraphs
        self._metadata = dumps({"run_id": run_id, "attempt": 1})
        context = {
            "run_id": run_id,
            "thread_id": thread_id,
            "graph_id": graph,
            "assistant_id": assistant_id,
        }
        self._context = context
        self._context_tail = dumps(context)[1:]  # `"run_id":..}`: closes a metadata object
        self._heads: dict[bytes, tuple[bytes, bytes]] = {}  # token head -> bytes around its text
        self._interrupts: list[Any] = []  # interrupts waiting for the next `values`
        self._by_type: dict[str, Callable[[int, bytes], bytes]] = {
            "metadata": self._metadata_frame if metadata else _nothing,
            "values": self._values,
            "update": self._update,
            "interrupt": self._interrupt,
            "token": self._token,
            "model_start": self._model_start,
            "tool_call_chunk": self._tool_call_chunk,
            "model_end": self._model_end,
            "tool_end": self._tool_end,
            "custom": self._custom,
            "error": self._error,
        }
        self._base_key = (
            f"langgraph:{','.join(sorted(self.modes))}:{int(subgraphs)}:{int(metadata)}"
        )

    @property
    def key(self) -> str:
        return self._base_key + (":held" if self._interrupts else "")

    def frame(self, event_id: int, event_type: str, payload: bytes) -> bytes:
        build = self._by_type.get(event_type)
        return b"" if build is None else build(event_id, payload)

    def parts(self, event_id: int, event_type: str, payload: bytes) -> tuple[bytes, ...]:
        return (self.frame(event_id, event_type, payload),)

    # -- parts --------------------------------------------------------------------------------

    def _metadata_frame(self, event_id: int, payload: bytes) -> bytes:
        return frame("metadata", event_id, self._metadata)

    def _values(self, event_id: int, payload: bytes) -> bytes:
        if "values" not in self.modes:
            return b""
        state = payload[len(_VALUES_HEAD) : -1] if payload.startswith(_VALUES_HEAD) else payload
        if state == b"{}" and not self._interrupts:
            return b""  # the input, filtered to an output schema it has nothing of (as LangGraph)
        if self._interrupts:
            held, self._interrupts = self._interrupts, []
            value = loads(state)
            if isinstance(value, dict):
                state = dumps({**value, "__interrupt__": held})
        return frame("values", event_id, state)

    def _name(self, mode: str, ns: list[str]) -> str | None:
        """The part's event name, None if a subgraph's part is not sent."""
        if not ns:
            return mode
        if not self.subgraphs:
            return None
        return "|".join((mode, *ns))

    def _update(self, event_id: int, payload: bytes) -> bytes:
        data = loads(payload)
        name = self._name("updates", data["ns"])
        if name is None:
            return b""
        return frame(name, event_id, dumps({data["node"]: data["values"]}))

    def _interrupt(self, event_id: int, payload: bytes) -> bytes:
        data = loads(payload)
        item = {"value": data.get("value"), "id": data.get("id"), "response_schema": None}
        if "values" in self.modes:
            self._interrupts.append(item)
        if "updates" not in self.modes:
            return b""
        return frame("updates", event_id, dumps({"__interrupt__": [item]}))

    def _messages(self, event_id: int, ns: list[str], message: bytes, metadata: bytes) -> bytes:
        name = "messages" if not ns or not self.subgraphs else "|".join(("messages", *ns))
        return frame(name, event_id, b"[%s,%s]" % (message, metadata))

    def _node_metadata(self, node: str | None, ns: list[str]) -> bytes:
        return b'{"langgraph_node":%s,"langgraph_ns":%s,%s' % (
            dumps(node),
            dumps(ns),
            self._context_tail,
        )

    def _token(self, event_id: int, payload: bytes) -> bytes:
        head = token_head(payload)
        if head is None:  # not the shape tokens are written in: decode it
            data = loads(payload)
            return self._chunk(event_id, data, content=data["text"])
        around = self._heads.get(head)
        if around is None:
            around = self._heads[head] = self._around(head)
            if len(self._heads) > 64:
                self._heads.pop(next(iter(self._heads)))
        text = payload[len(head) : -2]  # the escaped text, as the payload holds it
        return b"%s%s%s%d\r\n\r\n" % (around[0], text, around[1], event_id)

    def _around(self, head: bytes) -> tuple[bytes, bytes]:
        """The bytes of a token's part before and after its text, for the tokens of one
        message (same head): the text goes between, the event id after."""
        data = loads(head[: -len(b',"text":"')] + b"}")
        ns = data["ns"]
        name = "messages" if not ns or not self.subgraphs else "|".join(("messages", *ns))
        message = dumps(dict(_CHUNK, id=data["message_id"]))[1:]  # `"additional_kwargs":..}`
        metadata = self._node_metadata(data["node"], ns)
        before = b'event: %s\r\ndata: [{"content":"' % name.encode()
        return before, b'",%s,%s]\r\nid: ' % (message, metadata)

    def _chunk(self, event_id: int, data: dict[str, Any], **fields: Any) -> bytes:
        message = dict(_CHUNK, content="", id=data.get("message_id"))
        message.update(fields)
        return self._messages(
            event_id,
            data.get("ns") or [],
            dumps(message),
            self._node_metadata(data.get("node"), data.get("ns") or []),
        )

    def _model_start(self, event_id: int, payload: bytes) -> bytes:
        data = loads(payload)
        message = dumps(dict(_CHUNK, content="", id=data["message_id"]))
        metadata = {
            **(data.get("metadata") or {}),
            "tags": data.get("tags") or [],
            "langgraph_node": data.get("node"),
            "langgraph_ns": data.get("ns") or [],
            **self._context,
        }
        return self._messages(event_id, data.get("ns") or [], message, dumps(metadata))

    def _tool_call_chunk(self, event_id: int, payload: bytes) -> bytes:
        data = loads(payload)
        piece = {
            "name": data.get("name"),
            "args": data.get("args"),
            "id": data.get("call_id"),
            "index": data.get("index"),
            "type": "tool_call_chunk",
        }
        return self._chunk(event_id, data, tool_call_chunks=[piece])

    def _model_end(self, event_id: int, payload: bytes) -> bytes:
        data = loads(payload)
        finish = data.get("finish_reason")
        return self._chunk(
            event_id,
            data,
            response_metadata={"finish_reason": finish} if finish else {},
            usage_metadata=data.get("usage"),
            chunk_position="last",
        )

    def _tool_end(self, event_id: int, payload: bytes) -> bytes:
        data = loads(payload)
        output = data.get("output")
        message = {
            "content": output if isinstance(output, str) else codec.dumps(output).decode(),
            "additional_kwargs": {},
            "response_metadata": {},
            "type": "tool",
            "name": data.get("tool"),
            "id": f"tool-{data.get('call_id')}",
            "tool_call_id": data.get("call_id"),
            "artifact": None,
            "status": "success",
        }
        ns = data.get("ns") or []
        return self._messages(
            event_id, ns, dumps(message), self._node_metadata(data.get("node"), ns)
        )

    def _custom(self, event_id: int, payload: bytes) -> bytes:
        data = loads(payload)
        if data.get("name") is not None:  # `adispatch_custom_event`: LangGraph's `events` mode
            return b""
        name = self._name("custom", data.get("ns") or [])
        if name is None:
            return b""
        return frame(name, event_id, dumps(data.get("data")))

    def _error(self, event_id: int, payload: bytes) -> bytes:
        data = loads(payload)
        return frame(
            "error", event_id, dumps({"error": data.get("code"), "message": data.get("message")})
        )
