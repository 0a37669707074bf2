"""Golden raw events: what `astream_events` yields for each test case, recorded from real runs.

`raw/<case>.json` holds, for one run, the list of raw events exactly as the engine's call
(`record.STREAM_KWARGS`) yields them, encoded by `codec` (messages via `dumpd`, tuples,
`Interrupt`s and `Command`s tagged) with random ids replaced by stable placeholders (`run-1`,
`outer:ns-1`, `interrupt-1`, ...). `load_raw(case)` rebuilds the events: messages and chunks are
LangChain objects again, interrupts `Interrupt`s, the `(namespace, mode, data)` chunks tuples.

Re-record after a deliberate change (a graph, the kwargs, a LangGraph upgrade):

    .venv/bin/python -m tests.engine.golden.record

`tests/engine/test_golden_fixtures.py` fails while the files are not what a fresh recording
gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.engine.golden.codec import decode_event

RAW_DIR = Path(__file__).parent / "raw"

CASES: tuple[str, ...] = (
    "chat",
    "agent",
    "approval",  # the first run: pauses in `review` (interrupt)
    "approval_resume",  # the same thread resumed with Command(resume={"approved": True})
    "report",
    "subgraph_embedded",
    "subgraph_called",
    "custom_events",
    "failing_node",
)

# The cases whose stream ends by raising (after the events in the file): type and message.
RAISES: dict[str, tuple[type[Exception], str]] = {"failing_node": (ValueError, "boom")}


def path(case: str) -> Path:
    if case not in CASES:
        raise KeyError(f"no golden case {case!r}; the cases: {', '.join(CASES)}")
    return RAW_DIR / f"{case}.json"


def load_encoded(case: str) -> list[dict[str, Any]]:
    """The fixture as stored (JSON, tags not decoded)."""
    events: list[dict[str, Any]] = json.loads(path(case).read_text(encoding="utf-8"))
    return events


def load_raw(case: str) -> list[dict[str, Any]]:
    """The recorded raw events of `case`, rebuilt as `astream_events` yielded them."""
    return [decode_event(event) for event in load_encoded(case)]


def raised(case: str) -> Exception | None:
    """The exception the stream of `case` ended with (after its last event), if any."""
    if case not in RAISES:
        path(case)  # an unknown case is an error, not "did not raise"
        return None
    kind, message = RAISES[case]
    return kind(message)
