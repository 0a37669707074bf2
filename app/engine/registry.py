"""Graph discovery: import every module of the graphs directories, compile each `graph` once.

A graph that pauses with `interrupt()` may export `resume_schema` (a TypedDict or model): the
`resume` value of a run is then checked against it before the run starts (422 naming the field).
A graph whose nodes read keys of `config["configurable"]` names them in `configurable_keys` (a
tuple of str): a client may set those, and no other (app/protocols/native/schemas.py).

A module that fails to import, or whose `graph` fails to compile, stops startup with a
`GraphLoadError` naming it: a service silently missing a graph is worse than one that does not
start. Modules without a `graph` attribute (helpers) are skipped; so are `_private` modules.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import TypeAdapter, ValidationError

from app.engine.errors import InvalidInput, NotFound


class GraphLoadError(RuntimeError):
    """A graph module could not be imported or compiled; the message names it."""


@dataclass(frozen=True)
class GraphEntry:
    name: str
    description: str
    compiled: CompiledStateGraph[Any, Any, Any, Any]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    nodes: list[str]
    mermaid: str
    all_nodes: frozenset[str]  # node names at any depth (subgraphs added as nodes included)
    output_keys: frozenset[str] | None
    _input_adapter: TypeAdapter[Any]
    takes_model_context: bool
    resume_schema: dict[str, Any] | None = None
    _resume_adapter: TypeAdapter[Any] | None = None
    configurable_keys: frozenset[str] = frozenset()

    def validate_input(self, value: Any) -> dict[str, Any]:
        """Check `value` against the graph's input schema; 422 naming the field if wrong."""
        _validate(self._input_adapter, value, "input")
        if not isinstance(value, dict):
            raise InvalidInput("input: must be an object")
        return value

    def validate_resume(self, value: Any) -> None:
        """Check a `resume` value against the graph's `resume_schema`, if it declares one."""
        if self._resume_adapter is not None:
            _validate(self._resume_adapter, value, "resume")

    def summary(self) -> dict[str, Any]:
        summary = {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
        }
        if self.resume_schema is not None:
            summary["resume_schema"] = self.resume_schema
        if self.configurable_keys:
            summary["configurable_keys"] = sorted(self.configurable_keys)
        return summary


def _validate(adapter: TypeAdapter[Any], value: Any, root: str) -> None:
    try:
        adapter.validate_python(value, strict=False)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in (root, *err["loc"]))
        raise InvalidInput(f"{where}: {err['msg']}") from None


class GraphRegistry(Mapping[str, GraphEntry]):
    """The compiled graphs, by name. Built once in the lifespan, read-only afterwards."""

    def __init__(self, entries: dict[str, GraphEntry]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> GraphEntry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def require(self, name: str) -> GraphEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise NotFound(f"no graph named {name!r}", code="graph_not_found") from None

    @classmethod
    def load(
        cls, directories: list[Path], checkpointer: BaseCheckpointSaver[Any], context_type: type
    ) -> GraphRegistry:
        entries: dict[str, GraphEntry] = {}
        for directory in directories:
            for name, module in _import_modules(directory):
                builder = getattr(module, "graph", None)
                if builder is None:
                    continue
                if name in entries:
                    raise GraphLoadError(f"graph {name!r} is defined twice ({directory})")
                entries[name] = _compile(name, module, builder, checkpointer, context_type)
        if not entries:
            raise GraphLoadError(f"no graphs found in {', '.join(map(str, directories))}")
        return cls(entries)


def _import_modules(directory: Path) -> Iterator[tuple[str, Any]]:
    directory = directory.resolve()
    if not directory.is_dir():
        raise GraphLoadError(f"graphs directory {directory} does not exist")
    # The package name: walk up while the folders are packages (tests/graphs -> tests.graphs).
    root, parts = directory.parent, [directory.name]
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    package = ".".join(parts)
    for info in sorted(pkgutil.iter_modules([str(directory)]), key=lambda i: i.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        qualified = f"{package}.{info.name}"
        try:
            yield info.name, importlib.import_module(qualified)
        except Exception as exc:
            raise GraphLoadError(
                f"graph module {qualified} failed to import: {type(exc).__name__}: {exc}"
            ) from exc


def _compile(
    name: str, module: Any, builder: Any, checkpointer: BaseCheckpointSaver[Any], context_type: type
) -> GraphEntry:
    if not isinstance(builder, StateGraph):
        raise GraphLoadError(
            f"graph {name!r}: `graph` must be a StateGraph builder, not {type(builder).__name__}"
        )
    try:
        compiled = builder.compile(checkpointer=checkpointer, name=name)
        drawable = compiled.get_graph()
        mermaid = drawable.draw_mermaid()
        nodes = [n for n in drawable.nodes if n not in ("__start__", "__end__")]
        nested = compiled.get_graph(xray=True).nodes
        all_nodes = frozenset(
            part for n in nested for part in n.split(":") if part not in ("__start__", "__end__")
        )
        input_schema = compiled.get_input_jsonschema()
        output_schema = compiled.get_output_jsonschema()
        adapter: TypeAdapter[Any] = TypeAdapter(builder.input_schema)
        resume_type = getattr(module, "resume_schema", None)
        resume_adapter: TypeAdapter[Any] | None = (
            TypeAdapter(resume_type) if resume_type is not None else None
        )
    except Exception as exc:
        raise GraphLoadError(
            f"graph {name!r} failed to compile: {type(exc).__name__}: {exc}"
        ) from exc
    doc = (getattr(module, "description", None) or module.__doc__ or name).strip()
    return GraphEntry(
        name=name,
        description=doc.splitlines()[0],
        compiled=compiled,
        input_schema=input_schema,
        output_schema=output_schema,
        nodes=nodes,
        mermaid=mermaid,
        all_nodes=all_nodes | frozenset(nodes),
        output_keys=output_keys_of(output_schema),
        _input_adapter=adapter,
        takes_model_context=builder.context_schema is context_type,
        resume_schema=resume_adapter.json_schema() if resume_adapter else None,
        _resume_adapter=resume_adapter,
        configurable_keys=_configurable_keys(name, module),
    )


def _configurable_keys(name: str, module: Any) -> frozenset[str]:
    keys = getattr(module, "configurable_keys", ())
    if not all(isinstance(k, str) and k and not k.startswith("__") for k in keys):
        raise GraphLoadError(f"graph {name!r}: `configurable_keys` must be names (str, no `__`)")
    reserved = set(keys) & {"thread_id", "checkpoint_ns", "checkpoint_id", "checkpoint_map"}
    if reserved:
        raise GraphLoadError(f"graph {name!r}: `configurable_keys` names a key the server owns")
    return frozenset(keys)


def output_keys_of(schema: dict[str, Any]) -> frozenset[str] | None:
    """The top-level keys of a graph's output schema (None: not an object schema)."""
    properties = schema.get("properties")
    return frozenset(properties) if isinstance(properties, dict) else None
