"""The subscriber's coalescing, which the hot-path budget depends on (app/streaming/):
fast tokens go out in few sends, a token after a pause goes out at once, no text is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from typing import cast

import orjson
import pytest

from app.engine.codec import LogEvent
from app.log.memory import MemoryEventLog
from app.protocols.native.encoder import NativeEncoder
from app.protocols.native.schemas import DEFAULT_SELECTION
from app.streaming import subscriber
from app.streaming.encoder import Encoder, encode_merged
from app.streaming.subscriber import BATCH, COALESCE_MAX_S, COALESCE_MIN_S, FanOut

ENCODER = NativeEncoder()


def frames(
    log: MemoryEventLog, cursor: int, coalesce_s: float | None = None, fanout: FanOut | None = None
) -> AsyncGenerator[bytes, None]:
    # An async generator (it has aclose); the declared type is the looser AsyncIterator.
    return cast(
        AsyncGenerator[bytes, None],
        (fanout or FanOut()).frames(
            "run", log, cursor, ENCODER, DEFAULT_SELECTION, coalesce_s=coalesce_s
        ),
    )


def _texts(chunks: list[bytes]) -> str:
    return "".join(
        orjson.loads(line[6:])["text"]
        for chunk in chunks
        for line in chunk.split(b"\n")
        if line.startswith(b"data: ") and b'"text"' in line
    )


def test_fast_tokens_are_sent_in_few_chunks_and_a_token_after_a_pause_at_once() -> None:
    async def scenario() -> tuple[list[bytes], float]:
        log = MemoryEventLog()
        chunks: list[bytes] = []
        arrived = asyncio.Event()

        async def consume() -> None:
            async for chunk in frames(log, 0, coalesce_s=0.25):
                chunks.append(chunk)
                arrived.set()

        task = asyncio.create_task(consume())
        for i in range(20):  # 20 tokens within ~20 ms: well inside one 250 ms window
            log.append("token", {"message_id": "m", "text": f"{i},"})
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.8)  # a pause longer than two windows
        arrived.clear()
        started = time.monotonic()
        log.append("token", {"message_id": "m", "text": "late"})
        await asyncio.wait_for(arrived.wait(), 1)
        latency = time.monotonic() - started
        log.close()
        await asyncio.wait_for(task, 1)
        return chunks, latency

    chunks, latency = asyncio.run(scenario())
    assert _texts(chunks) == "".join(f"{i}," for i in range(20)) + "late"
    assert len(chunks) <= 5, len(chunks)  # not one send per token
    assert latency < 0.15  # not held back by the 250 ms window (a margin for a noisy machine)


def test_a_backlog_longer_than_a_batch_is_replayed_without_waiting() -> None:
    """A reconnecting client's backlog goes out at full speed: the coalescing pause is only
    taken once the reader has caught up with the log."""

    async def scenario() -> tuple[str, float]:
        log = MemoryEventLog()
        for i in range(BATCH * 4):
            log.append("token", {"node": "llm", "message_id": "m", "text": f"{i},"})
        log.close()
        started = time.monotonic()
        chunks = [chunk async for chunk in frames(log, 0, coalesce_s=0.25)]
        return _texts(chunks), time.monotonic() - started

    text, took = asyncio.run(scenario())
    assert text == "".join(f"{i}," for i in range(BATCH * 4))
    assert took < 0.2  # four batches: not one 250 ms window after each


def test_the_window_grows_with_open_streams_and_shrinks_when_they_close() -> None:
    """100 open subscribers widen the window to its maximum; once they have gone (ended or
    disconnected), a lone stream is back to the minimum: no leaked count holds latency up."""

    fanout = FanOut()

    async def scenario() -> tuple[float, float, float]:
        alone = fanout.window()
        logs = [MemoryEventLog() for _ in range(100)]
        readers = [frames(log, 0, fanout=fanout) for log in logs]

        async def first(reader: AsyncGenerator[bytes, None]) -> bytes:
            return await anext(reader)

        tasks = [asyncio.create_task(first(r)) for r in readers]
        await asyncio.sleep(0.05)  # every reader is now waiting on its empty log
        crowded = fanout.window()
        for task in tasks[:50]:
            task.cancel()  # a client that disconnects mid-wait
        for log in logs[50:]:
            log.close()  # a run that ends
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in readers:
            await r.aclose()
        return alone, crowded, fanout.window()

    alone, crowded, after = asyncio.run(scenario())
    assert alone == COALESCE_MIN_S
    assert crowded == COALESCE_MAX_S
    assert after == COALESCE_MIN_S


def test_readers_of_one_fast_run_share_its_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    """50 readers that keep up with one fast run (more than a BATCH per window, so a window's
    tokens are read in more than one range) wake on the same window boundaries, read the same
    ranges and merge each once: the run's merging costs about what one reader's does, not 50
    times that. Each reader still gets every token, in order."""
    merges = 0
    merge = encode_merged

    def counting(encoder: Encoder, events: Sequence[LogEvent]) -> list[bytes]:
        nonlocal merges
        merges += 1
        return merge(encoder, events)

    monkeypatch.setattr(subscriber, "encode_merged", counting)
    tokens = 6000
    fanout = FanOut()

    async def scenario() -> list[list[bytes]]:
        log = MemoryEventLog()

        async def read() -> list[bytes]:
            chunks = []
            async for chunk in frames(log, 0, coalesce_s=0.02, fanout=fanout):
                chunks.append(chunk)
                await asyncio.sleep(0)  # a send: other readers and the run get a turn
            return chunks

        readers = [asyncio.create_task(read()) for _ in range(50)]
        for i in range(tokens):
            log.append("token", {"node": "llm", "message_id": "m", "text": f"{i},"})
            if i % 3 == 0:
                await asyncio.sleep(0)  # the run yields now and then, between readers' turns
        log.close()
        return await asyncio.gather(*readers)

    received = asyncio.run(scenario())
    expected = "".join(f"{i}," for i in range(tokens))
    assert all(_texts(chunks) == expected for chunks in received)
    # Sends of one reader: about the ranges it read. Measured: ~3x that with the readers
    # sharing (a reader's first reads and late wake-ups merge on their own), ~50x without.
    one_reader = len(received[0])
    assert merges < 12 * one_reader, (merges, one_reader)
