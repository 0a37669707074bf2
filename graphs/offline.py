"""The built-in offline chat model: what the service uses when no OPENAI_API_KEY is set.

It is a real LangChain chat model, so nodes call it exactly as they would call `ChatOpenAI`
(`invoke`, `ainvoke`, `astream`, `bind_tools`), and LangGraph streams its tokens the same way.
Deterministic: the same prompt gives the same tokens. Each token arrives after a small delay
(`token_delay_s`), which is what a real model feels like to a streaming client.

Tool calling: when tools are bound and the last message is the user's,
- an arithmetic expression in the text becomes a `calculator` call,
- a question about the time becomes a `current_time` call;
after a tool result it answers with that result. That is enough for the `agent` loop to turn
reason -> act -> observe -> answer without a network.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolCallChunk,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

_ARITHMETIC = re.compile(r"[-+(]*\d[\d.\s]*(?:[-+*/%]+[\s(]*[\d.]+[\s)]*)+")
_SECTIONS_PROMPT = "section titles"

ANSWER = (
    "This answer comes from the built-in offline model, which needs no key and no network. "
    "It streams a fixed text one token at a time, the way a real model would, so the whole "
    "service can be tried end to end: nodes start and end, tokens arrive live, state updates "
    "and the final answer follow. Set OPENAI_API_KEY to talk to a real model instead."
)
SECTION_TITLES = ("Overview", "How it works", "Why it matters")


def _text(message: BaseMessage) -> str:
    return message.text if isinstance(message.text, str) else str(message.content)


def tokenize(text: str) -> list[str]:
    """Split into word-sized tokens that concatenate back to exactly `text`."""
    return re.findall(r"\S+\s*|\s+", text)


class OfflineChatModel(BaseChatModel):
    """A deterministic streaming chat model that runs without a network."""

    token_delay_s: float = 0.02
    streaming: bool = True

    @property
    def _llm_type(self) -> str:
        return "offline"

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | BaseTool | Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    # -- what to say -----------------------------------------------------------------------

    def _reply(self, messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessageChunk:
        last = messages[-1] if messages else HumanMessage("")
        names = {t["function"]["name"] for t in tools}
        if isinstance(last, ToolMessage):
            return AIMessageChunk(content=f"The {last.name or 'tool'} tool says: {_text(last)}.")
        text = _text(last)
        if "calculator" in names and (match := _ARITHMETIC.search(text)):
            arguments = json.dumps({"expression": match.group().strip()})
            return _tool_call("calculator", arguments)
        if "current_time" in names and "time" in text.lower():
            return _tool_call("current_time", "{}")
        if _SECTIONS_PROMPT in text.lower():
            return AIMessageChunk(content="\n".join(SECTION_TITLES))
        topic = " ".join(text.split()[:12])
        return AIMessageChunk(content=f"You asked: {topic}\n\n{ANSWER}")

    def _chunks(self, messages: list[BaseMessage], **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """The reply's chunks, each built when it is streamed, as a real model's arrive. Why:
        built as a list up front, a whole reply's message objects were made at the start of
        every call, the moment a section starts, which many report-graph runs reach together:
        one stall for all their streams (docs/perf/0009-thousand-stream-gaps.md)."""
        reply = self._reply(messages, kwargs.get("tools") or [])
        texts = [] if reply.tool_call_chunks else tokenize(str(reply.content))
        if reply.tool_call_chunks:
            yield ChatGenerationChunk(message=reply)
        for text in texts:
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        prompt_tokens = sum(len(tokenize(_text(m))) for m in messages)
        output_tokens = 1 if reply.tool_call_chunks else len(texts)
        usage = UsageMetadata(
            input_tokens=prompt_tokens,
            output_tokens=output_tokens,
            total_tokens=prompt_tokens + output_tokens,
        )
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata={"finish_reason": "stop", "model_name": "offline"},
            )
        )

    # -- LangChain's entry points ----------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        merged: ChatGenerationChunk | None = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        assert merged is not None
        return ChatResult(generations=[ChatGeneration(message=merged.message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, **kwargs):
            if self.token_delay_s and chunk.text:
                time.sleep(self.token_delay_s)
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, **kwargs):
            if self.token_delay_s and chunk.text:
                await asyncio.sleep(self.token_delay_s)
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _tool_call(name: str, arguments: str) -> AIMessageChunk:
    call_id = f"call_offline_{name}"
    return AIMessageChunk(
        content="", tool_call_chunks=[ToolCallChunk(name=name, args=arguments, id=call_id, index=0)]
    )
