"""Turn what LangGraph nodes return (messages, pydantic models, Commands) into plain JSON data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from pydantic import BaseModel


def message_to_dict(message: BaseMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _role(message), "content": message.content}
    if message.id:
        out["id"] = message.id
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = [
            {"id": c.get("id"), "name": c["name"], "args": c["args"]} for c in tool_calls
        ]
    tool_call_id = getattr(message, "tool_call_id", None)
    if tool_call_id:
        out["tool_call_id"] = tool_call_id
        out["name"] = getattr(message, "name", None)
    return out


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant", "AIMessageChunk": "assistant"}.get(
        message.type, message.type
    )


def to_jsonable(value: Any) -> Any:
    """Best-effort conversion; values already JSON-able come back unchanged."""
    if isinstance(value, BaseMessage):
        return message_to_dict(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return value
