"""What a protocol gives the subscriber: how to frame one event, and the keep-alive bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.engine.codec import LogEvent, merge_runs


class Encoder(Protocol):
    @property
    def key(self) -> str:
        """Names the wire format (and any state its frames depend on): readers share merged
        sends only with readers of the same one."""

    ping: bytes
    """Sent while a run is quiet."""

    def frame(self, event_id: int, event_type: str, payload: bytes) -> bytes:
        """One event (or merged tokens, with the last merged id) as bytes on the wire."""

    def parts(self, event_id: int, event_type: str, payload: bytes) -> Sequence[bytes]:
        """The same frame as pieces whose concatenation is `frame(...)`, with `payload` itself
        (not a copy) as one of them: a big event is then sliced from the bytes every reader
        shares instead of being copied into a frame per reader."""


BIG = 64 * 1024  # a payload this big is framed in pieces around the shared bytes


def encode_merged(encoder: Encoder, events: Sequence[LogEvent]) -> list[bytes]:
    """`events` framed, consecutive tokens of one message merged (app/engine/codec.py); a big
    event as pieces (`Encoder.parts`), so no reader copies its payload."""
    out: list[bytes] = []
    for event_id, event_type, payload in merge_runs(events):
        if len(payload) > BIG:
            out.extend(encoder.parts(event_id, event_type, payload))
        else:
            out.append(encoder.frame(event_id, event_type, payload))
    return out
