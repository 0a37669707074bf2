"""Raw `astream_events` events <-> JSON, faithful enough to rebuild an equivalent event.

An event is written with its keys in this order: event, name, run_id, parent_ids, tags,
metadata, data. JSON values (str, int, float, bool, None, lists, dicts with str keys) are
written as they are; everything else as a one-key tagged object:

    {"$lc": <dumpd(obj)>}          a LangChain Serializable (messages, message chunks), rebuilt
                                   with `langchain_core.load.load`
    {"$tuple": [...]}              a tuple, e.g. the `(namespace, mode, data)` chunks
    {"$interrupt": {"value", "id", "response_schema"}}   a `langgraph.types.Interrupt`
    {"$command": {"graph", "update", "resume", "goto"}}  a `langgraph.types.Command`
    {"$dict": {...}}               a dict one of whose keys starts with "$" (escaped)

A `UUID` object is written as its string. Anything else is refused (`TypeError` naming where),
so a LangGraph upgrade that puts a new kind of object in the events is noticed at recording.

`Stabilizer` then replaces what is random in each run by placeholders numbered in order of
appearance, so that re-recording gives identical files: a UUID first seen as a run id (`run_id`,
`parent_ids`) becomes `run-N`, one first seen after a ":" (a checkpoint namespace such as
`outer:<task id>`) `ns-N`, any other `id-N` (message ids given by `add_messages`); an
`Interrupt` id (32 hex digits) `interrupt-N`, other 32-hex strings `hex-N`. The same value gets
the same placeholder everywhere (`lc_run--<run id>` message ids keep pointing at their run).
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core._api import LangChainBetaWarning
from langchain_core.load import dumpd, load
from langchain_core.load.serializable import Serializable
from langgraph.types import Command, Interrupt

JSON = Any  # what `json.loads` returns
EVENT_KEYS = ("event", "name", "run_id", "parent_ids", "tags", "metadata", "data")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX32 = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
_RUN_KEYS = frozenset({"run_id", "parent_ids"})


# -- encoding --------------------------------------------------------------------------------


def encode_event(raw: Mapping[str, Any]) -> dict[str, JSON]:
    """One raw event as JSON (not yet stabilized). Refuses keys it does not know."""
    unknown = set(raw) - set(EVENT_KEYS)
    if unknown:
        raise TypeError(f"event {raw.get('event')!r} has unknown keys {sorted(unknown)}")
    return {key: encode(raw[key], key) for key in EVENT_KEYS if key in raw}


def encode(value: Any, where: str = "$") -> JSON:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where}: a dict with non-str keys: {list(value)!r}")
        items = {k: encode(v, f"{where}.{k}") for k, v in value.items()}
        return {"$dict": items} if any(k.startswith("$") for k in value) else items
    if isinstance(value, Serializable):
        if not value.is_lc_serializable():
            raise TypeError(f"{where}: {type(value).__name__} is not LangChain-serializable")
        return {"$lc": dumpd(value)}
    if isinstance(value, Interrupt):
        schema = value.response_schema
        if schema is not None and not isinstance(schema, dict):
            raise TypeError(f"{where}: an Interrupt whose response_schema is a {type(schema)}")
        return {
            "$interrupt": {
                "value": encode(value.value, f"{where}.value"),
                "id": value.id,
                "response_schema": encode(schema, f"{where}.response_schema"),
            }
        }
    if isinstance(value, Command):
        return {
            "$command": {
                f.name: encode(getattr(value, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(value)
            }
        }
    raise TypeError(f"{where}: cannot encode a {type(value).__module__}.{type(value).__name__}")


# -- decoding --------------------------------------------------------------------------------


def decode_event(encoded: Mapping[str, JSON]) -> dict[str, Any]:
    return {key: decode(value) for key, value in encoded.items()}


def decode(value: JSON) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, body),) = value.items()
        if tag == "$tuple":
            return tuple(decode(v) for v in body)
        if tag == "$lc":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LangChainBetaWarning)
                return load(body, allowed_objects="core")
        if tag == "$interrupt":
            return Interrupt(
                value=decode(body["value"]),
                id=body["id"],
                response_schema=decode(body["response_schema"]),
            )
        if tag == "$command":
            return Command(**{k: decode(v) for k, v in body.items()})
        if tag == "$dict":
            return {k: decode(v) for k, v in body.items()}
    if any(k.startswith("$") for k in value):
        raise ValueError(f"unknown tag in {sorted(value)}")
    return {k: decode(v) for k, v in value.items()}


# -- stable placeholders ---------------------------------------------------------------------


class Stabilizer:
    """Placeholders for the random ids of the encoded events of one recording (see module)."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def _name(self, value: str, kind: str) -> str:
        if value not in self._names:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._names[value] = f"{kind}-{self._counts[kind]}"
        return self._names[value]

    def event(self, encoded: dict[str, JSON]) -> dict[str, JSON]:
        return {key: self._walk(value, key in _RUN_KEYS, False) for key, value in encoded.items()}

    def _walk(self, value: JSON, run: bool, interrupt_id: bool) -> JSON:
        if isinstance(value, str):
            return self._string(value, run, interrupt_id)
        if isinstance(value, list):
            return [self._walk(v, run, False) for v in value]
        if isinstance(value, dict):
            if "$interrupt" in value and len(value) == 1:
                body = value["$interrupt"]
                return {"$interrupt": {k: self._walk(v, False, k == "id") for k, v in body.items()}}
            return {
                self._string(k, False, False): self._walk(v, False, False) for k, v in value.items()
            }
        return value

    def _string(self, text: str, run: bool, interrupt_id: bool) -> str:
        def uuid(match: re.Match[str]) -> str:
            after_colon = match.start() > 0 and text[match.start() - 1] == ":"
            return self._name(match.group(), "run" if run else "ns" if after_colon else "id")

        def hex32(match: re.Match[str]) -> str:
            return self._name(match.group(), "interrupt" if interrupt_id else "hex")

        return _HEX32.sub(hex32, _UUID.sub(uuid, text))


def dumps(events: list[dict[str, JSON]]) -> str:
    """The fixture file's text: one event per top-level item, indent 1, UTF-8 as is."""
    return json.dumps(events, indent=1, ensure_ascii=False) + "\n"
