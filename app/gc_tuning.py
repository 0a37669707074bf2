"""The garbage collector's thresholds for a streaming server, set once at startup.

Design record
- Measured with gc.callbacks on the bench's scale case (500 paced streams of the report graph
  on the offline model, ~40 s each): with CPython's default thresholds (700, 10, 10) the server
  ran 28 full (generation 2) collections, ~0.5 s each, 12.9 s of a 44 s run, and they collected
  nothing. Each one stops every stream at once: every stream had ~20 gaps over 500 ms, at the
  same token positions, and the p99 inter-token gap was 764 ms.
- Why they fire: what lives for a model call (LangChain keeps every chunk until the call ends,
  the run's event log, LangGraph's task state) outlives two young collections, so it is
  promoted to generation 2 and then freed there by reference counting. CPython runs a full
  collection whenever the objects promoted since the last one exceed 25% of the long-lived
  ones, so this churn triggers one every couple of seconds, each scanning every live object of
  every run.
- With (50_000, 20, 100): young collections are rarer and bigger (objects that die within a
  token's work are freed before promotion), and a full collection is considered after 100 of
  the middle generation's instead of 10. The same case: no full collection in the run, p99 gap
  764 -> 344 ms, the 500 streams finished in 29.5 s instead of 43.5 s.
- What it costs: reference cycles that reach generation 2 wait longer for a full collection
  (still automatic, still bounded by the 25% rule). Asyncio and our code do not make cycles per
  token; the bench's RSS figures are measured with these thresholds.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> tuple[int, int, int]:
    """Set THRESHOLDS; return the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    return previous
