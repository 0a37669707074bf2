"""What `/openapi.json` says about the native API beyond FastAPI's defaults: every status a
route can return with the error body, `text/event-stream` for the streams, and the real graphs'
names and input schemas (so a generated client or a fuzzer can build valid bodies).

The graphs are compiled in the lifespan, after the routes exist, so their part is added when
the schema is first asked for (`install`)."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.engine.registry import GraphRegistry
from app.protocols.doc import MEANING
from app.protocols.native.encoder import VISIBLE
from app.settings import Settings

# One frame of the stream (README, "The event stream"); `: ping` comments are not frames.
SSE_FRAME = {
    "type": "object",
    "description": "one frame: `data` is one JSON object, `id` the event's position in the log",
    "required": ["event", "data", "id"],
    "properties": {
        "event": {"type": "string", "enum": sorted(VISIBLE)},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
SSE_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the run's events as Server-Sent Events",
        "content": {"text/event-stream": {"schema": SSE_FRAME}},
    },
    204: {"description": "the run's `end` was already delivered: nothing to send"},
}

STREAM_ROUTES = ("/graphs/{graph}/stream", "/graphs/{graph}/runs")


def install(app: FastAPI) -> None:
    """Make `app.openapi()` add the graphs' names and input schemas to the generated schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=app.description
        )
        _error_bodies(schema)
        registry: GraphRegistry | None = getattr(app.state, "registry", None)
        if registry is not None:
            _add_graphs(schema, registry, app.state.settings)
            app.openapi_schema = schema  # cached once the graphs are known
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error_bodies(schema: dict[str, Any]) -> None:
    """Every error status as the body it really has: `ErrorBody`, JSON (FastAPI gives a
    stream route's errors its `text/event-stream` and its own 422 model, which we never send)."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for item in schema["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    response["content"] = copy.deepcopy(error)
                    response["description"] = MEANING.get(int(status), response["description"])
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def _add_graphs(schema: dict[str, Any], registry: GraphRegistry, settings: Settings) -> None:
    """Per graph, a run body whose `input` is the graph's input schema and whose
    `config.configurable` takes the keys the graph reads; the server's caps as maximums; the
    path's `graph` as the names that exist."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    limits = components["Limits"]["properties"]
    for name, cap in (
        ("max_tokens", settings.max_tokens_per_run),
        ("timeout_s", settings.run_timeout_s),
        ("recursion_limit", settings.max_recursion_limit),
    ):
        limits[name]["anyOf"][0]["maximum"] = cap
    events = components["StreamOptions"]["properties"]["events"]["anyOf"][0]["items"]
    events["enum"] = sorted(VISIBLE)
    components["ClientConfig"]["properties"]["recursion_limit"]["anyOf"][0]["maximum"] = (
        settings.max_recursion_limit
    )
    names = sorted(registry)
    for name in names:
        entry = registry[name]
        graph_input = _relocate(entry.input_schema, f"{name}_")
        for key, definition in graph_input.pop("$defs", {}).items():
            components[f"{name}_{key}"] = definition
        components[f"{name}_input"] = graph_input
        body = copy.deepcopy(components["RunBody"])
        body["title"] = f"RunBody for graph {name!r}"
        body["properties"]["input"] = {
            "anyOf": [{"$ref": f"#/components/schemas/{name}_input"}, {"type": "null"}]
        }
        # `resume` continues a paused thread: it needs the thread, and replaces `input`.
        body["dependentRequired"] = {"resume": ["thread_id"]}
        # A new thread needs an `input`; only an existing thread continues without one.
        body["anyOf"] = [
            {"required": ["input"], "properties": {"input": {"type": "object"}}},
            {"required": ["thread_id"]},
        ]
        body["not"] = {
            "required": ["resume", "input"],
            "properties": {"input": {"type": "object"}},
        }
        config = copy.deepcopy(components["ClientConfig"])
        config["properties"]["configurable"] = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {key: {} for key in sorted(entry.configurable_keys)},
                    "additionalProperties": False,
                },
                {"type": "null"},
            ]
        }
        components[f"ClientConfig_{name}"] = config
        body["properties"]["config"] = {
            "anyOf": [{"$ref": f"#/components/schemas/ClientConfig_{name}"}, {"type": "null"}]
        }
        components[f"RunBody_{name}"] = body
    # The run routes as one path per graph, each with that graph's body: a client generator or
    # a fuzzer then pairs each graph with its own input.
    paths = schema["paths"]
    for template in STREAM_ROUTES:
        item = paths.pop(template)
        for name in names:
            concrete = copy.deepcopy(item)
            operation = concrete["post"]
            operation["operationId"] = f"{operation['operationId']}_{name}"
            operation["summary"] = f"{operation.get('summary', '')} ({name})".strip()
            operation["parameters"] = [
                p for p in operation.get("parameters", ()) if p["name"] != "graph"
            ]
            content = operation["requestBody"]["content"]["application/json"]
            content["schema"] = {"$ref": f"#/components/schemas/RunBody_{name}"}
            paths[template.replace("{graph}", name)] = concrete
    for item in paths.values():
        for operation in item.values():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "path" and parameter["name"] == "graph":
                    parameter["schema"] = {"type": "string", "enum": names}


def _relocate(value: Any, prefix: str) -> Any:
    """A copy of a graph's JSON Schema whose `#/$defs/X` refs point at components."""
    if isinstance(value, dict):
        out = {k: _relocate(v, prefix) for k, v in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = "#/components/schemas/" + prefix + ref.removeprefix("#/$defs/")
        return out
    if isinstance(value, list):
        return [_relocate(v, prefix) for v in value]
    return value
