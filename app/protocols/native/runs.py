"""Run routes: start (streamed or in the background), stream/replay, look up, cancel.

Per-key limits (app/auth/throttle.py) are decided before anything runs, in this order: the
body and the graph (`4xx`), a stream slot for a request that opens a stream
(`too_many_streams`), then, only if a new run is to be created (not for an idempotent retry
that attaches), a run slot (`too_many_runs`) and a rate token (`rate_limited`). A refused
request starts nothing and holds nothing. Every run-creation response carries the key's
`RateLimit-*` headers when RATE_LIMIT_RUNS is set.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response

from app.auth.throttle import KeyLimits, LimitExceeded
from app.auth.tokens import StreamTokens
from app.engine.admission import Release
from app.engine.errors import InvalidInput
from app.engine.idempotency import IdempotencyKey, check_key, fingerprint
from app.engine.manager import RunManager
from app.engine.registry import GraphEntry, GraphRegistry
from app.engine.run import Run, RunRequest
from app.protocols.deps import (
    FanOutDep,
    LimitsDep,
    ManagerDep,
    RegistryDep,
    SettingsDep,
    StreamTokensDep,
    TenantDep,
)
from app.protocols.doc import EventStream, errors
from app.protocols.native.encoder import HEADERS, NativeEncoder
from app.protocols.native.openapi import SSE_OK
from app.protocols.native.ratelimit import rate_headers
from app.protocols.native.schemas import (
    CancelBody,
    RunBody,
    RunStarted,
    StreamOptions,
    run_request,
    selection,
)
from app.settings import Settings
from app.streaming.selection import Selection
from app.streaming.sse import StreamResponse, StreamWatch
from app.streaming.subscriber import FanOut

router = APIRouter()
ENCODER = NativeEncoder()


IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


def _prepare(
    graph: str,
    body: RunBody,
    registry: GraphRegistry,
    settings: Settings,
    tenant: str,
    key: IdempotencyKey | None,
) -> tuple[GraphEntry, RunRequest, Selection]:
    """The checked request: its graph, the engine's request, and what this client receives."""
    entry = registry.require(graph)
    request = replace(run_request(body, settings, entry), idempotency=key, tenant=tenant)
    if body.input is not None:
        entry.validate_input(body.input)
    if request.resuming:
        entry.validate_resume(body.resume)
    chosen = selection(body.stream, entry)
    return entry, request, chosen


async def _start(
    entry: GraphEntry, request: RunRequest, manager: RunManager, limits: KeyLimits, tenant: str
) -> tuple[Run, bool, dict[str, str]]:
    """The run this request starts, or the one its idempotency key already started (then
    `False`, and no run slot or rate token is taken), with the key's `RateLimit-*` headers."""
    admission = limits.admission(tenant)
    run, created = await manager.start_or_attach(entry, request, admission)
    if admission is None or limits.rate is None:
        return run, created, {}
    quota = admission.quota if created else await limits.quota(tenant)
    return run, created, rate_headers(quota)


def _key(value: str | None, tenant: str, graph: str, body: RunBody) -> IdempotencyKey | None:
    """The request's idempotency key; its fingerprint is the graph and the whole body with its
    defaults, so `{"input": x}` and `{"input": x, "on_disconnect": "cancel"}` are one request,
    whichever of the two endpoints it was sent to."""
    if value is None:
        return None
    return IdempotencyKey(
        tenant, check_key(value), fingerprint(graph, body.model_dump(mode="json"))
    )


def _links(request: Request, run: Run, tokens: StreamTokens | None) -> dict[str, str]:
    """The run's URLs; with API keys the stream's carries a token for that stream only
    (app/auth/tokens.py), for `EventSource`, which cannot send a key."""
    stream_url = request.url_for("stream_run", run_id=run.run_id)
    if tokens is not None:
        record = run.record
        token = tokens.issue(record.run_id, record.tenant, record.created_at)
        stream_url = stream_url.include_query_params(token=token)
    return {
        "stream_url": str(stream_url),
        "cancel_url": str(request.url_for("cancel_run", run_id=run.run_id)),
    }


def _response(
    fanout: FanOut,
    run: Run,
    cursor: int,
    chosen: Selection,
    settings: Settings,
    max_rate: float | None,
    on_close: Any = None,
    headers: dict[str, str] | None = None,
    on_done: Release | None = None,
) -> StreamResponse:
    watch = StreamWatch(fanout)
    frames = fanout.frames(
        run.run_id,
        run.reader,
        cursor,
        ENCODER,
        chosen,
        max_rate=max_rate,
        on_close=on_close,
        ping_s=settings.ping_interval_s,
        on_complete=watch.complete,
    )
    return StreamResponse(
        frames,
        send_timeout_s=settings.send_timeout_s,
        headers={**HEADERS, **(headers or {})},
        on_done=on_done,
        watch=watch,
    )


@router.post(
    "/graphs/{graph}/stream",
    response_model=None,
    response_class=EventStream,
    responses={**SSE_OK, **errors(400, 404, 409, 413, 422, 429, 503)},
)
async def stream_new_run(
    graph: str,
    body: RunBody,
    registry: RegistryDep,
    manager: ManagerDep,
    settings: SettingsDep,
    fanout: FanOutDep,
    tenant: TenantDep,
    limits: LimitsDep,
    idempotency_key: IdempotencyKeyHeader = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamResponse | Response:
    key = _key(idempotency_key, tenant, graph, body)
    cursor = _cursor(last_event_id) if key is not None else 0
    entry, request, chosen = _prepare(graph, body, registry, settings, tenant, key)
    try:
        slot = await limits.open_stream(tenant)
    except LimitExceeded as exc:
        exc.quota = await limits.quota(tenant)  # a run-creation response: its headers too
        raise
    try:
        run, created, headers = await _start(entry, request, manager, limits, tenant)
    except BaseException:
        _free(slot)
        raise
    if created:
        cursor = 0  # a new run: nothing was sent before, whatever the client says
    elif run.reader.closed and cursor >= run.reader.last_id:
        _free(slot)
        return Response(status_code=204, headers=headers)

    def on_close() -> None:
        if body.on_disconnect == "cancel":
            manager.cancel_soon(run, "client_disconnected")

    return _response(
        fanout, run, cursor, chosen, settings, body.max_rate, on_close, headers, on_done=slot
    )


@router.post(
    "/graphs/{graph}/runs",
    status_code=202,
    response_model=RunStarted,
    responses=errors(400, 404, 409, 413, 422, 429, 503),
)
async def start_background_run(
    graph: str,
    body: RunBody,
    request: Request,
    response: Response,
    registry: RegistryDep,
    manager: ManagerDep,
    settings: SettingsDep,
    tenant: TenantDep,
    tokens: StreamTokensDep,
    limits: LimitsDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, Any]:
    key = _key(idempotency_key, tenant, graph, body)
    entry, asked, _ = _prepare(graph, body, registry, settings, tenant, key)
    run, _, headers = await _start(entry, asked, manager, limits, tenant)
    response.headers.update(headers)
    return {
        "run_id": run.run_id,
        "thread_id": run.record.thread_id,
        "status": run.record.status.value,
        **_links(request, run, tokens),
    }


@router.get(
    "/runs/{run_id}/stream",
    name="stream_run",
    response_model=None,
    response_class=EventStream,
    responses={**SSE_OK, **errors(401, 404, 422, 429, 503)},
)
async def stream_run(
    run_id: str,
    manager: ManagerDep,
    registry: RegistryDep,
    settings: SettingsDep,
    fanout: FanOutDep,
    tenant: TenantDep,
    limits: LimitsDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query()] = None,
    max_rate: Annotated[float | None, Query(gt=0, le=1000)] = None,
    events: Annotated[str | None, Query(max_length=1024)] = None,
    nodes: Annotated[str | None, Query(max_length=8192)] = None,
    values: Annotated[bool, Query()] = False,
) -> StreamResponse | Response:
    run = await manager.get(run_id, tenant=tenant)
    options = None
    if events is not None or nodes is not None or values:
        options = StreamOptions(events=_names(events), nodes=_names(nodes), values=values)
    chosen = selection(options, registry.get(run.record.graph))
    cursor = _cursor(last_event_id_header if last_event_id_header is not None else last_event_id)
    reader = run.reader
    if reader.closed and cursor >= reader.last_id:
        return Response(status_code=204)
    slot = await limits.open_stream(tenant)
    return _response(fanout, run, cursor, chosen, settings, max_rate, on_done=slot)


def _free(slot: Release | None) -> None:
    if slot is not None:
        slot()


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


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


@router.get("/runs/{run_id}", responses=errors(404))
async def get_run(run_id: str, manager: ManagerDep, tenant: TenantDep) -> dict[str, Any]:
    return (await manager.record(run_id, tenant=tenant)).as_dict()


@router.post(
    "/runs/{run_id}/cancel",
    name="cancel_run",
    status_code=202,
    responses=errors(400, 404, 413, 422, 503),
)
async def cancel_run(
    run_id: str,
    manager: ManagerDep,
    tenant: TenantDep,
    body: Annotated[CancelBody | None, Body()] = None,
) -> dict[str, Any]:
    action = (body or CancelBody()).action
    record = await manager.cancel(run_id, roll_back=action == "rollback", tenant=tenant)
    return record.as_dict()
