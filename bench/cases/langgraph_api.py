"""Case 10, the LangGraph Agent Server API: the cost, first-token and one-stream throughput
measurements of the native cases, through three targets in the same run, on the same `chat`
graph and the same fake upstream (bench/upstream.py):

- `native`: the service's own API, `POST /graphs/chat/stream`;
- `lg-api`: the service's LangGraph API (app/protocols/langgraph/), `POST /langgraph/runs/stream`
  with `stream_mode: "messages-tuple"` and the body the SDK sends (/work/shared/LANGGRAPH_API.md);
- `langgraph-dev`: LangGraph's own server (`langgraph dev`, langgraph-api 0.16.7,
  bench/langgraph_dev.py) with the same request, on bench/langgraph_dev_graph.py.

`native` and `lg-api` are one service process; `langgraph-dev` is its own. Every target is read
by the same client, plain httpx as the SDK reads a stream (every event's JSON parsed), in this
process, so the client's cost weighs on all three alike. A stream of N tokens (`[[tokens=N]]`)
gives two figures: the server's CPU seconds over the stream / N (its process tree, from /proc),
and N / wall seconds from sending the request to the stream's close. First token: from sending
the request to the first event carrying text, minus the upstream's own first-token delay. The
targets take turns, round by round, so load from elsewhere falls on all of them alike.

Ratios: lg-api / native (goal within 1.1x: CPU and first token <= 1.1x, tokens/s >= 1/1.1x) and
lg-api / langgraph-dev (goal: ahead, <= 1x or >= 1x). On a service without the LangGraph API
(`assistants.search` not 200), `lg-api` is reported as not measured and the other two run.

Caveat when reading lg-api / langgraph-dev: the service's model client (graphs/models.py) is
cheaper per token than the stock `ChatOpenAI` the reference graph builds (docs/perf/0010).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.cases._common import Context, aio, chat
from bench.harness import Process, service
from bench.langgraph_dev import langgraph_dev
from bench.report import Figure, Target, percentile
from tests.support.fake_openai import token_text

FIRST_S = 0.05
# langgraph dev's worker picks queued runs up about once a second: requests sent back to back
# lock onto that phase and all wait ~1 s. A random pause before each measured stream, the same
# for every target, samples the phase instead (the reference's 0.53 s to first token is such
# an average).
PHASE_S = 1.0
WITHIN = 1.1
# Where the service mounts the LangGraph API (app/protocols/langgraph/__init__.py's PREFIX).
LG_PREFIX = "/langgraph"
NATIVE, OURS, REFERENCE = "native", "lg-api", "langgraph-dev"
CASE = "langgraph_api"


@dataclass
class Api:
    """One way to stream the `chat` graph: the server and the request."""

    name: str
    server: Process
    path: str
    langgraph: bool

    def body(self, query: str) -> dict[str, Any]:
        if not self.langgraph:
            return chat(query)
        return {
            "assistant_id": "chat",
            "input": {"query": query},
            "stream_mode": "messages-tuple",
            "stream_resumable": False,
            "stream_subgraphs": False,
        }


@dataclass
class Streamed:
    sent_at: float
    first_text_at: float | None
    closed_at: float
    text_chars: int
    text_events: int


async def read(http: httpx.AsyncClient, target: Api, query: str) -> Streamed:
    """One stream read to its close, as the SDK reads it: every event's data parsed as JSON.
    Native `token` events and LangGraph `messages` events carry the text; an `error` event, a
    native `end` other than `completed`, or a non-200 answer fails the stream."""
    url = target.server.url + target.path
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    sent_at = time.monotonic()
    first: float | None = None
    chars = events = 0
    async with http.stream("POST", url, json=target.body(query), headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{target.name}: {response.status_code} {response.text[:300]}")
        pending = b""
        async for chunk in response.aiter_bytes():
            buf = (pending + chunk).replace(b"\r\n", b"\n")
            *frames, pending = buf.split(b"\n\n")
            for frame in frames:
                event, data = _parse(frame)
                if event is None:
                    continue
                if event == "error":
                    raise RuntimeError(f"{target.name}: error event {data}")
                text = ""
                if event == "messages":
                    text = data[0].get("content") or ""
                elif event == "token":
                    text = data["text"]
                elif event == "end" and data.get("status") != "completed":
                    raise RuntimeError(f"{target.name}: end {data}")
                if text:
                    chars += len(text)
                    events += 1
                    if first is None:
                        first = time.monotonic()
    return Streamed(sent_at, first, time.monotonic(), chars, events)


def _parse(frame: bytes) -> tuple[str | None, Any]:
    event: str | None = None
    data: Any = None
    for line in frame.split(b"\n"):
        if line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data = json.loads(line[5:])
    return (event or "message", data) if data is not None else (None, None)


def _chars(tokens: int) -> int:
    return sum(len(token_text(i)) for i in range(tokens))


def lg_api_available(server: Process) -> str:
    """'' if the service answers the SDK's first call (`assistants.search`), else why not."""
    try:
        r = httpx.post(
            f"{server.url}{LG_PREFIX}/assistants/search", json={"limit": 100, "offset": 0}
        )
    except httpx.HTTPError as exc:
        return f"assistants.search failed: {exc!r}"
    return "" if r.status_code == 200 else f"assistants.search answered {r.status_code}"


@dataclass
class Samples:
    """Per round: CPU us/token and tokens/s of one long stream (also from its first text on),
    the p50 of the first-token ms, and that long stream's text-bearing events per token
    (below 1 where the server merged tokens for a reader that lags)."""

    cpu_us: list[float]
    tok_s: list[float]
    first_ms: list[float]
    streaming_tok_s: list[float]
    events_per_token: list[float]


def measure(targets: list[Api], tokens: int, repeat: int, first_samples: int) -> dict[str, Samples]:
    long_query = f"[[tokens={tokens}]]"
    short_query = f"[[tokens=5]] [[first={FIRST_S}]]"
    want = _chars(tokens)
    got = {t.name: Samples([], [], [], [], []) for t in targets}

    rng = random.Random(0)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
            for t in targets:  # warm up: imports, the graph, connection pools
                for _ in range(3):
                    await read(http, t, short_query)
                await read(http, t, "[[tokens=200]]")
            for _ in range(repeat):
                for t in targets:
                    await asyncio.sleep(rng.uniform(0, PHASE_S))
                    cpu = t.server.cpu_s()
                    s = await read(http, t, long_query)
                    used = t.server.cpu_s() - cpu
                    assert s.text_chars == want, (t.name, s.text_chars, want)
                    got[t.name].cpu_us.append(used / tokens * 1e6)
                    got[t.name].tok_s.append(tokens / (s.closed_at - s.sent_at))
                    assert s.first_text_at is not None, t.name
                    got[t.name].streaming_tok_s.append(tokens / (s.closed_at - s.first_text_at))
                    got[t.name].events_per_token.append(s.text_events / tokens)
                for t in targets:
                    added = []
                    for _ in range(first_samples):
                        await asyncio.sleep(rng.uniform(0, PHASE_S))
                        s = await read(http, t, short_query)
                        assert s.first_text_at is not None, t.name
                        added.append((s.first_text_at - s.sent_at - FIRST_S) * 1000)
                    got[t.name].first_ms.append(percentile(added, 50))

    aio(main())
    return got


def run(ctx: Context) -> list[Figure]:
    tokens = ctx.pick(5000, 2000)
    repeat = ctx.pick(5, 3)
    first_samples = ctx.pick(10, 5)
    with (
        service(ctx.upstream).start("/readyz") as ours,
        langgraph_dev(ctx.upstream).start("/ok", timeout=180) as reference,
    ):
        targets = [Api(NATIVE, ours, "/graphs/chat/stream", langgraph=False)]
        missing = lg_api_available(ours)
        if missing:
            print(f"langgraph_api: {OURS} not measured ({missing})", file=sys.stderr)
        else:
            targets.append(Api(OURS, ours, f"{LG_PREFIX}/runs/stream", langgraph=True))
        targets.append(Api(REFERENCE, reference, "/runs/stream", langgraph=True))
        got = measure(targets, tokens, repeat, first_samples)
    empty = Samples([], [], [], [], [])
    return figures(got[NATIVE], got.get(OURS, empty), got[REFERENCE], tokens, missing)


def figures(
    native: Samples, ours: Samples, reference: Samples, tokens: int, missing: str = ""
) -> list[Figure]:
    """Per measure: native alone, ours / native, ours / langgraph-dev, langgraph-dev / native.
    A first-token value is a round's p50, so min-max is over rounds."""
    note = f"not measured: {missing}" if missing else ""
    lower, higher = Target("<=", WITHIN), Target(">=", round(1 / WITHIN, 3))
    specs: list[tuple[str, str, str, Target | None, Target | None]] = [
        ("cpu_us", f"CPU/token, 1 stream of {tokens}", "us", lower, Target("<=", 1.0)),
        ("tok_s", f"tokens/s, 1 stream of {tokens}", "tok/s", higher, Target(">=", 1.0)),
        ("streaming_tok_s", "  same, from the first token on", "tok/s", None, None),
        ("first_ms", "first token added, 1 stream", "ms", lower, Target("<=", 1.0)),
        ("events_per_token", "text events per token, the long stream", "ev/tok", None, None),
    ]
    out: list[Figure] = []
    for attr, name, unit, within, ahead in specs:
        nat, lg, ref = (getattr(x, attr) for x in (native, ours, reference))
        prefix = "    " if name.startswith("  ") else "  "
        out += [
            Figure(CASE, f"{name}: native API", unit, nat),
            Figure(CASE, f"{prefix}LangGraph API, ours", unit, lg, nat, NATIVE, within, note),
            Figure(
                CASE,
                f"{prefix}LangGraph API, ours vs langgraph dev",
                unit,
                lg,
                ref,
                REFERENCE,
                ahead,
                note,
            ),
            Figure(
                CASE,
                f"{prefix}langgraph dev 0.16.7",
                unit,
                ref,
                nat,
                NATIVE,
                note="context: LangGraph's own server on the same graph and upstream",
            ),
        ]
    return out
