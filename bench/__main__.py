"""`make bench`: the streaming core's figures, with the baseline measured in the same run.

Cases (medians over repetitions, min-max in brackets):
- one stream: token events per second a client receives through the service, against the
  floor of `ChatOpenAI.astream` alone, in-process, on the same fake upstream (the ratio is
  service throughput / bare-client throughput);
- cancel: time from `POST /cancel` to the stream's `end` at the client, and to the fake upstream
  seeing its request abandoned.

Writes bench/results/latest.json. This is the start of issue 4's suite, not all of it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from langchain_openai import ChatOpenAI

from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer, parse_sse

TOKENS = 5000
REPEAT = 5


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bare_client_tokens_per_s(fake: FakeOpenAI) -> list[float]:
    llm = ChatOpenAI(
        api_key="k",
        base_url=fake.base_url,
        model="f",
        streaming=True,
        max_retries=0,
    )

    async def once() -> float:
        started = time.perf_counter()
        n = 0
        async for chunk in llm.astream(f"[[tokens={TOKENS}]]"):
            n += bool(chunk.content)
        return n / (time.perf_counter() - started)

    async def all_runs() -> list[float]:
        return [await once() for _ in range(REPEAT)]

    return asyncio.run(all_runs())


def service_tokens_per_s(client: httpx.Client) -> tuple[list[float], list[float]]:
    rates, frames_per_s = [], []
    for _ in range(REPEAT):
        started = time.perf_counter()
        tokens = frames = 0
        with client.stream(
            "POST", "/graphs/chat/stream", json={"input": {"query": f"[[tokens={TOKENS}]]"}}
        ) as response:
            last_id = 0
            for event in parse_sse(response.iter_lines()):
                if event.event == "token":
                    frames += 1
                    tokens += (event.id or 0) - last_id
                last_id = event.id or last_id
        elapsed = time.perf_counter() - started
        rates.append(tokens / elapsed)
        frames_per_s.append(frames / elapsed)
    return rates, frames_per_s


def cancel_latency(client: httpx.Client, fake: FakeOpenAI) -> dict[str, list[float]]:
    to_end: list[float] = []
    to_upstream: list[float] = []
    for _ in range(20):
        run = client.post(
            "/graphs/chat/runs", json={"input": {"query": "[[tokens=2000]] [[delay=0.005]]"}}
        ).json()
        with client.stream("GET", run["stream_url"]) as response:
            events = parse_sse(response.iter_lines())
            for event in events:
                if event.event == "token":
                    break
            abandoned = fake.snapshot().abandoned
            t0 = time.monotonic()
            with httpx.Client(base_url=client.base_url) as other:
                other.post(run["cancel_url"])
            for event in events:
                if event.event == "end":
                    to_end.append((time.monotonic() - t0) * 1000)
                    break
        stats = fake.wait_for(lambda s, a=abandoned: s.abandoned > a)  # type: ignore[misc]
        to_upstream.append((stats.abandoned_at[-1] - t0) * 1000)
    return {"cancel_to_end_ms": to_end, "cancel_to_upstream_closed_ms": to_upstream}


def main() -> int:
    fake = FakeOpenAI().start()
    tmp = Path(tempfile.mkdtemp())
    server = LiveServer(
        tmp,
        {
            "OPENAI_API_KEY": "k",
            "OPENAI_BASE_URL": fake.base_url,
            "LLM_MAX_RETRIES": "0",
            "LOG_LEVEL": "WARNING",
        },
    ).start()
    results: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            floor = bare_client_tokens_per_s(fake)
            rates, frames = service_tokens_per_s(client)
            results["bare_client_tokens_per_s"] = _summary(floor)
            results["service_tokens_per_s"] = _summary(rates)
            results["service_token_frames_per_s"] = _summary(frames)
            results["throughput_ratio_vs_bare_client"] = _summary(
                [r / statistics.median(floor) for r in rates]
            )
            for name, values in cancel_latency(client, fake).items():
                results[name] = _summary(values)
    finally:
        server.stop()
        fake.stop()
    out = Path(__file__).parent / "results" / "latest.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"{'figure':40} {'median':>10} {'min':>10} {'max':>10}")
    for name, s in results.items():
        print(f"{name:40} {s['median']:10.2f} {s['min']:10.2f} {s['max']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
