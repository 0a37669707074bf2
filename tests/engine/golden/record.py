"""Record the golden raw events: run each case's graph in-process and write `raw/<case>.json`.

    .venv/bin/python -m tests.engine.golden.record            # every case
    .venv/bin/python -m tests.engine.golden.record chat agent # some

Each scenario compiles its graph as the app does (`builder.compile(checkpointer=..., name=...)`,
app/registry.py) with an `InMemorySaver`, runs it with the built-in offline model (no delay:
deterministic and fast) and the exact `astream_events` call of the engine (`STREAM_KWARGS`).
A scenario of several runs (approval, then its resume) runs them on one thread and shares one
`Stabilizer`, so ids that cross runs keep one placeholder.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import StateGraph
from langgraph.types import Command

from graphs import offline
from graphs.models import ModelContext
from tests.engine.golden import CASES, RAISES, path
from tests.engine.golden.codec import JSON, Stabilizer, decode_event, dumps, encode_event

# The engine's call: `compiled.astream_events(payload, config, version="v2", context=...,
# **STREAM_KWARGS)`. Why not `include_types=["chain", "chat_model", "tool"]`: LangChain filters
# an `on_custom_event` with its *name* as its type (`self._send(event, name)` in
# langchain_core/tracers/event_stream.py), so an include_types list drops every custom event
# (adding "custom" keeps none) unless it names each one. Excluding the two heavy types keeps
# chain, chat model, tool (and llm, retriever) events, all custom events, and the root graph's
# `on_chain_stream`. Caveat, by the same rule: a custom event named "prompt" or "parser" is
# dropped.
STREAM_KWARGS: dict[str, Any] = {
    "exclude_types": ["prompt", "parser"],
    "stream_mode": ["updates", "values", "custom"],
    "subgraphs": True,
}


class OfflineChatModel(offline.OfflineChatModel):
    """The built-in offline model, its text replies cut to `reply_tokens` tokens if set.

    For the report case: four replies of the same fixed text made a 326 KB file. The class keeps
    the built-in one's name because the events name the model by it (`name`, `ls_provider`).
    """

    reply_tokens: int | None = None

    def _reply(self, messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessageChunk:
        reply = super()._reply(messages, tools)
        if self.reply_tokens is None or reply.tool_call_chunks:
            return reply
        return AIMessageChunk(content="".join(offline.tokenize(reply.text)[: self.reply_tokens]))


@dataclass(frozen=True)
class Scenario:
    module: str  # the graph module (exports `graph`, a StateGraph builder)
    name: str  # the compiled graph's name, as the app names it: its module's
    runs: tuple[tuple[str, Any], ...]  # (case, payload), run in order on one thread
    reply_tokens: int | None = None  # cut the model's text replies (see OfflineChatModel)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("graphs.chat", "chat", (("chat", {"query": "Explain attention"}),)),
    Scenario(
        "graphs.agent",
        "agent",
        (("agent", {"messages": [{"role": "user", "content": "what is 6 * 7?"}]}),),
    ),
    Scenario(
        "graphs.approval",
        "approval",
        (
            ("approval", {"request": "Name a colour"}),
            ("approval_resume", Command(resume={"approved": True})),
        ),
    ),
    Scenario("graphs.report", "report", (("report", {"topic": "tides"}),), reply_tokens=40),
    Scenario(
        "tests.graphs.subgraph_embedded",
        "subgraph_embedded",
        (("subgraph_embedded", {"query": "Inside a subgraph"}),),
    ),
    Scenario(
        "tests.graphs.subgraph_called",
        "subgraph_called",
        (("subgraph_called", {"query": "Called from a node"}),),
    ),
    Scenario(
        "tests.graphs.custom_events",
        "custom_events",
        (("custom_events", {"query": "Report progress"}),),
    ),
    Scenario(
        "tests.graphs.failing_node",
        "failing_node",
        (("failing_node", {"query": "Fail after this"}),),
    ),
)
assert [case for s in SCENARIOS for case, _ in s.runs] == list(CASES), "CASES and SCENARIOS"


async def record_scenario(scenario: Scenario) -> dict[str, list[JSON]]:
    """Each case of `scenario` -> its encoded, stabilized events."""
    builder = importlib.import_module(scenario.module).graph
    assert isinstance(builder, StateGraph)
    compiled = builder.compile(checkpointer=InMemorySaver(), name=scenario.name)
    llm = OfflineChatModel(token_delay_s=0, reply_tokens=scenario.reply_tokens)
    context = ModelContext(llm=llm)
    config: RunnableConfig = {"configurable": {"thread_id": f"golden-{scenario.name}"}}
    stabilizer = Stabilizer()
    recorded: dict[str, list[JSON]] = {}
    for case, payload in scenario.runs:
        events: list[Any] = []
        try:
            async for raw in compiled.astream_events(
                payload, config, version="v2", context=context, **STREAM_KWARGS
            ):
                events.append(raw)
        except Exception as exc:
            expected = RAISES.get(case)
            if expected is None or type(exc) is not expected[0] or str(exc) != expected[1]:
                raise
        else:
            if case in RAISES:
                raise AssertionError(f"{case}: the run did not raise {RAISES[case]}")
        encoded = [encode_event(raw) for raw in events]
        for raw, event in zip(events, encoded, strict=True):
            if decode_event(event) != raw:  # before the placeholders, decoding gives it back
                raise AssertionError(f"{case}: {raw['event']} {raw['name']} does not round-trip")
        recorded[case] = [stabilizer.event(event) for event in encoded]
    return recorded


async def record(cases: Sequence[str] = CASES) -> dict[str, list[JSON]]:
    """The encoded events of `cases` (each scenario run whole, in order)."""
    recorded: dict[str, list[JSON]] = {}
    for scenario in SCENARIOS:
        if any(case in cases for case, _ in scenario.runs):
            recorded.update(await record_scenario(scenario))
    return {case: recorded[case] for case in cases}


def main(argv: Sequence[str]) -> int:
    cases = list(argv) or list(CASES)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}; the cases: {', '.join(CASES)}")
        return 2
    for case, events in asyncio.run(record(cases)).items():
        target = path(case)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = dumps(events)
        target.write_text(text, encoding="utf-8")
        print(f"{target}: {len(events)} events, {len(text.encode()) / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
