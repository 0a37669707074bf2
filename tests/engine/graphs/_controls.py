"""The runtime context of the phase tests' graphs: events a test sets or waits on, and a model.

A `_private` module, so `GraphRegistry.load` does not look for a graph in it. Built inside the
test's event loop (one per test), handed to the `RunManager` as its `context`; a graph declares
`context_schema=Controls`, so the manager passes it to the graph's nodes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from langchain_core.language_models.chat_models import BaseChatModel

from graphs.offline import OfflineChatModel


@dataclass
class Controls:
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a node once it is running (the test may cancel from then on)."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the test to let a waiting node return."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a node as it returns (`stubborn`: once it stopped ignoring cancels)."""
    cancels_ignored: int = 0
    """How many cancels `stubborn` caught and ignored."""
    burst: int = 0
    """How many custom events `burst` writes."""
    burst_pause_s: float = 0.0
    """`burst` sleeps this long after every 100 of them (0: as fast as LangGraph goes)."""
    llm: BaseChatModel = field(default_factory=lambda: OfflineChatModel(token_delay_s=0))
    """The model of `streams` (the built-in offline one)."""
