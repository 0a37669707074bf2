"""The chat model every shipped graph uses, built once by the app and handed to nodes.

Nodes get it from LangGraph's runtime context (`runtime.context.llm`), so no graph module
reads settings or builds clients at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from openai import AsyncStream, Timeout

from graphs.offline import OfflineChatModel

READ_TIMEOUT_S = 120.0  # LangChain's default `stream_chunk_timeout`, which this replaces


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
    read_timeout_s: float = READ_TIMEOUT_S,
) -> BaseChatModel:
    """`ChatOpenAI(streaming=True)` when there is a key, else the built-in offline model.

    Two choices make each streamed token cheaper (docs/perf/0010-model-client.md), without
    changing what the model call does:
    - chunks are read as dicts (`DictChunkCompletions`);
    - a silent upstream is caught by the HTTP read timeout (`read_timeout_s` without a byte)
      instead of LangChain's `stream_chunk_timeout`, which on Python 3.11 wraps every chunk's
      read in `asyncio.wait_for`, a task and a timer per token. Both default to 120 s; the
      difference is that an upstream sending only keep-alive comments is then bounded by the
      run's own timeout (`RUN_TIMEOUT_S`) instead.
    """
    if not api_key:
        return OfflineChatModel(token_delay_s=offline_delay_s)
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        api_key=api_key,
        base_url=base_url,
        model=model,
        streaming=True,
        stream_usage=True,
        max_retries=max_retries,
        stream_chunk_timeout=0,
        timeout=Timeout(600.0, connect=5.0, read=read_timeout_s),
    )
    llm.async_client = DictChunkCompletions(llm.async_client)
    return llm


class DictChunkCompletions:
    """The OpenAI client's `chat.completions`, except that a streamed `create` yields each chunk
    as the JSON object the server sent (a dict), not as a `ChatCompletionChunk` model.

    `ChatOpenAI._astream` turns every model chunk straight back into a dict (`model_dump`), and
    takes a dict as it is. Building the model was the largest single cost per token: the SDK's
    `construct` runs a runtime-checkable Protocol `isinstance` for each nested model of each
    chunk (docs/perf/0010-model-client.md). The request, retries, SSE
    decoding, errors sent in the stream and closing the response on cancel stay the SDK's: the
    stream is its own `AsyncStream`, parsed with `object` as the chunk type.

    Everything else (a non-streamed `create`, `with_raw_response`, ...) is the wrapped client's.
    """

    def __init__(self, completions: Any) -> None:
        self._completions = completions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)

    async def create(self, **params: Any) -> Any:
        if not params.get("stream"):
            return await self._completions.create(**params)
        raw = await self._completions.with_raw_response.create(**params)
        return raw.parse(to=_DictChunks)


class _DictChunks(AsyncStream[object]):
    """Chunks as dicts; a choice without `delta` gets `delta: None`, as the SDK's model had
    (some servers send such choices, e.g. content-filter results; LangChain skips them)."""

    async def __aiter__(self) -> AsyncIterator[object]:
        async for chunk in super().__aiter__():
            if isinstance(chunk, dict):
                for choice in chunk.get("choices") or ():
                    if isinstance(choice, dict) and "delta" not in choice:
                        choice["delta"] = None
            yield chunk


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
