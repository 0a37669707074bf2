"""The service's ChatOpenAI (graphs/models.py) against the fake upstream over real HTTP: what
its two speed choices must not cost, a silent upstream is still cut off and its request closed."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from langchain_core.language_models.chat_models import BaseChatModel

from app.engine.failures import classify
from graphs.models import build_chat_model
from tests.support.fake_openai import FakeOpenAI, token_text


def _model(fake: FakeOpenAI, read_timeout_s: float) -> BaseChatModel:
    return build_chat_model(
        api_key="k",
        base_url=fake.base_url,
        model="fake",
        max_retries=0,
        read_timeout_s=read_timeout_s,
    )


async def _text(llm: BaseChatModel, prompt: str) -> str:
    try:
        return "".join([chunk.text async for chunk in llm.astream(prompt)])
    finally:
        await llm.root_async_client.close()  # type: ignore[attr-defined]  # its pooled connection


def test_upstream_silent_longer_than_the_read_timeout_fails_and_is_closed(fake: FakeOpenAI) -> None:
    before = fake.snapshot().abandoned
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as raised:
        asyncio.run(_text(_model(fake, 0.5), "[[tokens=3]] [[first=5]]"))
    assert time.monotonic() - started < 3
    assert classify(raised.value) == (
        "upstream_unavailable",
        "the model server sent nothing for too long",
    )
    fake.wait_for(lambda s: s.abandoned > before)


def test_the_read_timeout_bounds_silence_not_the_whole_answer(fake: FakeOpenAI) -> None:
    """Ten tokens 0.2 s apart take 2 s, four times the 0.5 s read timeout, and all arrive."""
    text = asyncio.run(_text(_model(fake, 0.5), "[[tokens=10]] [[delay=0.2]]"))
    assert text == "".join(token_text(i) for i in range(10))
