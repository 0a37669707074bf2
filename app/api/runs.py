"""Run routes: start (streamed or in the background), stream/replay, look up, cancel."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.deps import ManagerDep, RegistryDep, SettingsDep
from app.errors import InvalidInput, LimitTooHigh
from app.runs.manager import RunManager
from app.runs.run import _UNSET, Run, RunRequest
from app.settings import Settings
from app.sse.stream import RunEventStream, frames

router = APIRouter()


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    recursion_limit: int | None = Field(default=None, ge=1)


class RunBody(BaseModel):
    """The body of both run-creating endpoints (API.md, "Run creation body")."""

    model_config = ConfigDict(extra="forbid")
    input: dict[str, Any] | None = None
    thread_id: str | None = Field(default=None, min_length=1, max_length=256)
    resume: Any = None
    config: dict[str, Any] | None = None
    limits: Limits | None = None
    on_disconnect: Literal["cancel", "continue"] = "cancel"
    max_rate: float | None = Field(default=None, gt=0, le=1000)


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["interrupt", "rollback"] = "interrupt"


def _request(body: RunBody, settings: Settings) -> RunRequest:
    limits = body.limits or Limits()
    caps = (
        ("max_tokens", limits.max_tokens, settings.max_tokens_per_run),
        ("timeout_s", limits.timeout_s, settings.run_timeout_s),
        ("recursion_limit", limits.recursion_limit, settings.max_recursion_limit),
    )
    for name, value, cap in caps:
        if value is not None and value > cap:
            raise LimitTooHigh(f"limits.{name}: {value} is above the server's cap of {cap}")
    resume = body.resume if "resume" in body.model_fields_set else _UNSET
    return RunRequest(
        input=body.input,
        thread_id=body.thread_id,
        resume=resume,
        config=body.config or {},
        max_tokens=limits.max_tokens,
        timeout_s=limits.timeout_s,
        recursion_limit=limits.recursion_limit,
    )


async def _start(
    graph: str, body: RunBody, registry: RegistryDep, manager: RunManager, settings: Settings
) -> Run:
    entry = registry.require(graph)
    if body.input is not None:
        entry.validate_input(body.input)
    if "resume" in body.model_fields_set:
        entry.validate_resume(body.resume)
    return await manager.start(entry, _request(body, settings))


def _links(request: Request, run: Run) -> dict[str, str]:
    return {
        "stream_url": str(request.url_for("stream_run", run_id=run.run_id)),
        "cancel_url": str(request.url_for("cancel_run", run_id=run.run_id)),
    }


@router.post("/graphs/{graph}/stream", response_model=None)
async def stream_new_run(
    graph: str, body: RunBody, registry: RegistryDep, manager: ManagerDep, settings: SettingsDep
) -> RunEventStream:
    run = await _start(graph, body, registry, manager, settings)

    def on_close() -> None:
        if body.on_disconnect == "cancel":
            manager.cancel_soon(run, "client_disconnected")

    return RunEventStream(
        frames(run.log, 0, body.max_rate, on_close, ping_s=settings.ping_interval_s),
        send_timeout_s=settings.send_timeout_s,
    )


@router.post("/graphs/{graph}/runs", status_code=202)
async def start_background_run(
    graph: str,
    body: RunBody,
    request: Request,
    registry: RegistryDep,
    manager: ManagerDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    run = await _start(graph, body, registry, manager, settings)
    return {
        "run_id": run.run_id,
        "thread_id": run.record.thread_id,
        "status": run.record.status.value,
        **_links(request, run),
    }


@router.get("/runs/{run_id}/stream", name="stream_run", response_model=None)
async def stream_run(
    run_id: str,
    manager: ManagerDep,
    settings: SettingsDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query()] = None,
    max_rate: Annotated[float | None, Query(gt=0, le=1000)] = None,
) -> RunEventStream | Response:
    run = await manager.get(run_id)
    cursor = _cursor(last_event_id_header if last_event_id_header is not None else last_event_id)
    if run.log.closed and cursor >= run.log.last_id:
        return Response(status_code=204)
    return RunEventStream(
        frames(run.log, cursor, max_rate, ping_s=settings.ping_interval_s),
        send_timeout_s=settings.send_timeout_s,
    )


def _cursor(value: str | None) -> int:
    if value is None or value.strip() == "":
        return 0
    try:
        cursor = int(value)
    except ValueError:
        raise InvalidInput(f"last_event_id: {value!r} is not an event id") from None
    if cursor < 0:
        raise InvalidInput("last_event_id: must not be negative")
    return cursor


@router.get("/runs/{run_id}")
async def get_run(run_id: str, manager: ManagerDep) -> dict[str, Any]:
    return (await manager.record(run_id)).as_dict()


@router.post("/runs/{run_id}/cancel", name="cancel_run", status_code=202, response_model=None)
async def cancel_run(
    run_id: str, manager: ManagerDep, body: Annotated[CancelBody | None, Body()] = None
) -> dict[str, Any] | JSONResponse:
    action = (body or CancelBody()).action
    record = await manager.cancel(run_id, roll_back=action == "rollback")
    return record.as_dict()
