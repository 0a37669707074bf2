"""The chat model every shipped graph uses, built once by the app and handed to nodes.

Nodes get it from LangGraph's runtime context (`runtime.context.llm`), so no graph module
reads settings or builds clients at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_core.language_models.chat_models import BaseChatModel

from graphs.offline import OfflineChatModel


@dataclass(frozen=True)
class ModelContext:
    """The runtime context of the shipped graphs (`context_schema=ModelContext`)."""

    llm: BaseChatModel


def build_chat_model(
    *,
    api_key: str | None,
    base_url: str | None,
    model: str,
    max_retries: int = 2,
    offline_delay_s: float = 0.02,
) -> BaseChatModel:
    """`ChatOpenAI(streaming=True)` when there is a key, else the built-in offline model."""
    if not api_key:
        return OfflineChatModel(token_delay_s=offline_delay_s)
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        api_key=api_key,
        base_url=base_url,
        model=model,
        streaming=True,
        stream_usage=True,
        max_retries=max_retries,
    )


def describe_model(llm: BaseChatModel) -> dict[str, object]:
    """What `/graphs` says about the model, so nobody mistakes the offline model for a real one."""
    if isinstance(llm, OfflineChatModel):
        return {
            "provider": "offline",
            "offline": True,
            "note": "built-in deterministic model; set OPENAI_API_KEY for a real one",
        }
    return {
        "provider": "openai-compatible",
        "offline": False,
        "model": getattr(llm, "model_name", None),
    }
