"""The benchmark's cases, one module each; `CASES` maps a case's name to its `run`."""

from __future__ import annotations

from collections.abc import Callable

from bench.cases import (
    cancel,
    cost,
    first_token,
    langgraph_api,
    limits,
    memory,
    scale,
    slow_clients,
    throughput,
    workers,
)
from bench.cases._common import Context
from bench.report import Figure

CASES: dict[str, Callable[[Context], list[Figure]]] = {
    "cost": cost.run,
    "throughput": throughput.run,
    "scale": scale.run,
    "first_token": first_token.run,
    "cancel": cancel.run,
    "slow_clients": slow_clients.run,
    "memory": memory.run,
    "limits": limits.run,
    "workers": workers.run,
    "langgraph_api": langgraph_api.run,
}
