"""Which events one subscriber receives: event types, and nodes at any depth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.engine.codec import LogEvent
from app.engine.events import NODE_SCOPED


@dataclass(frozen=True)
class Selection:
    """`types`: the event types sent (a protocol adds the ones it always sends). `nodes`: only
    node-scoped events of these nodes, or of anything inside them (a subgraph node's inner
    nodes), at any depth; None: every node."""

    types: frozenset[str]
    nodes: frozenset[str] | None = None

    def keep(self, events: Sequence[LogEvent]) -> Sequence[LogEvent]:
        types, nodes = self.types, self.nodes
        if nodes is None:
            return [e for e in events if e.type in types]
        return [e for e in events if e.type in types and self._node_kept(e, nodes)]

    @staticmethod
    def _node_kept(event: LogEvent, nodes: frozenset[str]) -> bool:
        if event.type not in NODE_SCOPED:
            return True
        data = event.data
        return data.get("node") in nodes or any(n in nodes for n in data.get("ns") or ())
