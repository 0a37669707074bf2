"""The garbage collector's thresholds for a streaming server, set once at startup.

Design record
- THRESHOLDS replaces CPython's (700, 10, 10): young collections are rarer and bigger (objects
  that die within a token's work are freed before promotion), and a full (generation 2)
  collection is considered after 100 of the middle generation's instead of 10.
- Why: what lives for a model call (LangChain keeps every chunk until the call ends, the run's
  event log, LangGraph's task state) outlives two young collections, so it is promoted to
  generation 2 and then freed there by reference counting. CPython runs a full collection
  whenever the objects promoted since the last one exceed 25% of the long-lived ones, so with
  the defaults this churn triggers one every couple of seconds; each scans every live object of
  every run, collects nothing, and stops every stream at once.
- Why not smaller young generations: they pause less at a time, but with many live runs each
  young collection traces all in-flight objects, so they cost more GC CPU in all and, on a
  saturated core, delay run starts; these values spend the least and start runs fastest.
- What it costs: reference cycles that reach generation 2 wait longer for a full collection
  (still automatic, still bounded by the 25% rule). Asyncio and our code do not make cycles per
  token; the bench's RSS figures are measured with these thresholds.
Measurements behind these values, and the other thresholds compared:
docs/perf/0007-gc-thresholds.md.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> tuple[int, int, int]:
    """Set THRESHOLDS; return the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    return previous
