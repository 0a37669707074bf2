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
- Other thresholds, measured the same way (one run each, gc.callbacks; 1,000 streams):

  | thresholds     | p99 gap 500 / 1,000 streams | GC CPU at 1,000 | p99 first token at 1,000 |
  | -------------- | --------------------------- | --------------- | ------------------------ |
  | 700, 10, 10    | 764 / 1,443 ms              | (12.9 s at 500) | 60 s                     |
  | 2000, 10, 2000 | 204 / 325 ms                | 13.2 s          | 46 s                     |
  | 10000, 10, 1000| 389 / 357 ms                | 8.2 s           | 33 s                     |
  | 50000, 20, 100 | 285-344 / 468-689 ms        | 3.7 s           | 9.5-12.5 s               |

  Smaller young generations pause less at a time (2000: at most ~30/60 ms for generations 0/1,
  against ~140-290/420-590 ms here), but at 1,000 live runs each young collection traces all
  in-flight objects, so they cost 2-3.5x the GC CPU, and on a saturated core that delays run
  starts (first token) by tens of seconds. Chosen: least CPU and fastest starts; the p99 gap
  at 1,000 streams sits around its 500 ms target.
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
