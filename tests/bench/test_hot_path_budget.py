"""The hot path's cost per token, in CI's short form: two bounds on the service's CPU seconds per
delivered token, each against a floor.

The service (real uvicorn, `ChatOpenAI` to the fake upstream in its own process) streams 2,000
tokens a few times; its CPU per token is read from /proc/<pid>/stat. Each floor is a model
client calling `astream` alone on the same upstream, in this process (`time.process_time()`;
the upstream's CPU is in no figure). Same helpers as `make bench`'s cost case
(bench/cases/cost.py, bench/floor.py), fewer tokens and repetitions. The floors and the service
are measured in turns, round by round, so load from other work on the machine falls on all of
them alike; all figures are CPU time, not wall time.

- Against the service's own model client (graphs/models.py): under 3x. This catches a change
  that makes every token gross in the service's own code (a per-token log line, an extra
  serialisation, a send per event with a new layer in it). The graph through astream_events
  alone is already ~1.65x that floor (LangGraph and LangChain's event stream, not our code), so
  3x is above the worst repetition seen while a regression of that kind lands well past it.
  This floor cannot see the model client itself: it uses the same one.
- Against a stock `ChatOpenAI`: under 0.85x. This catches losing what graphs/models.py does to
  the client (`DictChunkCompletions` reading chunks as dicts, a private-API override that a
  library upgrade or a refactor can silently drop): with it the service costs ~0.55x the stock
  client alone, without it ~1.1-1.7x, so 0.85 leaves room on both sides.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import pytest

from bench.cases.cost import service_cpu_per_token
from bench.floor import cpu_per_token, openai_model, service_model
from bench.harness import Upstream, service

TOKENS = 2000
ROUNDS = 3
GROSS_RATIO = 3.0
STOCK_RATIO = 0.85
QUERY = f"[[tokens={TOKENS}]]"
WARMUP_TOKENS = 200


@dataclass
class Costs:
    """CPU seconds per token, one figure per round for each side."""

    service: list[float] = field(default_factory=list)
    own_client: list[float] = field(default_factory=list)
    stock_client: list[float] = field(default_factory=list)

    def describe(self) -> str:
        def us(values: list[float]) -> list[int]:
            return [round(v * 1e6) for v in values]

        return (
            f"service {us(self.service)} us, own client {us(self.own_client)} us, "
            f"stock ChatOpenAI {us(self.stock_client)} us"
        )


@pytest.fixture(scope="module")
def costs() -> Costs:
    measured = Costs()
    with Upstream().start("/stats") as upstream, service(upstream).start("/readyz") as server:
        base_url = upstream.base_url
        # Warm up each side once (first requests, imports, caches), then measure in turns.
        warmup = f"[[tokens={WARMUP_TOKENS}]]"
        service_cpu_per_token(server, warmup, WARMUP_TOKENS, 0)
        cpu_per_token(service_model(base_url), warmup, WARMUP_TOKENS, 0)
        cpu_per_token(openai_model(base_url), warmup, WARMUP_TOKENS, 0)
        for _ in range(ROUNDS):
            measured.stock_client += cpu_per_token(
                openai_model(base_url), QUERY, TOKENS, 1, warmup=0
            )
            measured.service += service_cpu_per_token(server, QUERY, TOKENS, 1, warmup=0)
            measured.own_client += cpu_per_token(
                service_model(base_url), QUERY, TOKENS, 1, warmup=0
            )
    return measured


def test_cost_per_token_is_not_grossly_above_the_model_client_alone(costs: Costs) -> None:
    ratio = statistics.median(costs.service) / statistics.median(costs.own_client)
    assert ratio < GROSS_RATIO, (
        f"service CPU/token is {ratio:.2f}x its ChatOpenAI's astream alone (gross bound "
        f"{GROSS_RATIO}x): {costs.describe()}"
    )


def test_cost_per_token_is_below_a_stock_chatopenai_alone(costs: Costs) -> None:
    """The median over rounds of service / stock client, each round's pair measured together."""
    ratio = statistics.median(s / f for s, f in zip(costs.service, costs.stock_client, strict=True))
    assert ratio < STOCK_RATIO, (
        f"service CPU/token is {ratio:.2f}x a stock ChatOpenAI's astream alone (bound "
        f"{STOCK_RATIO}x; is graphs/models.py's DictChunkCompletions still in place?): "
        f"{costs.describe()}"
    )
