"""Run routes of the LangGraph API: create (streamed, waited for, or in the background), join,
look up, list, cancel. A run here is a run of the engine: the same id, record, log and cancel
as through the native API (`GET /runs/{id}`, `GET /runs/{id}/stream`).

Decisions (README, "LangGraph SDK and agent-chat-ui"):
- `multitask_strategy` defaults to `enqueue`, as the reference's: `reject` is `409` on a busy
  thread, `interrupt` and `rollback` cancel its run first (confirmed), `enqueue` queues
  (app/protocols/langgraph/queue.py).
- `on_disconnect` defaults to `cancel` (no model call runs for nobody), except for a
  `stream_resumable` run, which is meant to be joined again: `continue`.
- Every part carries its event id, resumable or not; a join without `Last-Event-ID` replays the
  run from its start (the reference sends only what comes after the join: nothing is lost this
  way), one with an id we never sent (the reference's `<ms>-<seq>`) too.
- A cancel answers `202` also for a run that has ended (the reference: `404`): cancelling is
  safe to repeat, as in our API.
- `GET` of an unknown run's stream is `404` JSON (the SDK raises `NotFoundError`), not the
  reference's `200` stream holding an `error`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from app.auth.throttle import KeyLimits
from app.engine.errors import Conflict, InvalidInput, NotFound
from app.engine.manager import RunManager
from app.engine.registry import GraphEntry, GraphRegistry
from app.engine.run import Run
from app.protocols.deps import (
    FanOutDep,
    LimitsDep,
    ManagerDep,
    RegistryDep,
    SettingsDep,
    TenantDep,
)
from app.protocols.doc import EventStream, errors
from app.protocols.langgraph import shapes
from app.protocols.langgraph.encoder import HEADERS, MODES, PING, LangGraphEncoder, selection
from app.protocols.langgraph.queue import Queued, RunQueue, wait_ended
from app.protocols.langgraph.schemas import RunCreate, run_request
from app.settings import Settings
from app.streaming.sse import StreamResponse, StreamWatch
from app.streaming.subscriber import FanOut

router = APIRouter()
MODES_KEPT = 10_000
HEARTBEAT_S = 5.0  # the reference's `: heartbeat` interval; PING_INTERVAL_S if that is shorter
SSE_FRAME = {
    "type": "object",
    "description": "one part: `event` is the stream mode (`messages` for messages-tuple, "
    "`updates|outer` from inside subgraph node `outer`), `data` one JSON document, `id` the "
    "event's position in the run's log",
    "required": ["event", "data", "id"],
    "properties": {
        "event": {"type": "string"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
SSE_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the run's parts as Server-Sent Events, in LangGraph's format",
        "content": {"text/event-stream": {"schema": SSE_FRAME}},
    }
}


class Runs:
    """What this API remembers of the runs it created on this worker: their stream modes (a
    join without `stream_mode` gets the modes the run was created with) and strategy."""

    def __init__(self, manager: RunManager) -> None:
        self.queue = RunQueue(manager)
        self._asked: OrderedDict[str, tuple[list[str], bool, str | None]] = OrderedDict()

    def remember(self, run_id: str, modes: list[str], subgraphs: bool, strategy: str) -> None:
        self._asked[run_id] = (modes, subgraphs, strategy)
        while len(self._asked) > MODES_KEPT:
            self._asked.popitem(last=False)

    def asked(self, run_id: str) -> tuple[list[str], bool, str | None]:
        return self._asked.get(run_id, (list(MODES), False, None))


async def _runs(request: Request) -> Runs:
    return request.app.state.langgraph_runs  # type: ignore[no-any-return]


def assistant(registry: GraphRegistry, assistant_id: str) -> GraphEntry:
    """The graph an `assistant_id` names: a graph name, or the assistant id of one."""
    if assistant_id in registry:
        return registry[assistant_id]
    for entry in registry.values():
        if shapes.assistant_id(entry.name) == assistant_id:
            return entry
    names = ", ".join(sorted(registry))
    raise InvalidInput(
        f"assistant_id: invalid assistant {assistant_id!r}: must be a graph name ({names}) or"
        " the assistant id of one",
        code="assistant_not_found",
    )


def check_run_id(run_id: str) -> str:
    try:
        uuid.UUID(run_id)
    except ValueError:
        raise InvalidInput(f"run_id: {run_id!r} is not a UUID") from None
    return run_id


async def _create(
    body: RunCreate,
    thread_id: str | None,
    *,
    tenant: str,
    manager: RunManager,
    registry: GraphRegistry,
    limits: KeyLimits,
    settings: Settings,
    runs: Runs,
) -> Run | Queued:
    """Start the run the body asks for on `thread_id` (None: a new thread of its own), as its
    `multitask_strategy` says; a queued run when it must wait for the thread."""
    entry = assistant(registry, body.assistant_id)
    run_id = str(uuid.uuid4())
    # Checked before anything waits or is cancelled: a bad body changes nothing.
    request = run_request(
        body,
        entry,
        thread_id=thread_id,
        tenant=tenant,
        run_id=run_id,
        max_recursion_limit=settings.max_recursion_limit,
    )
    strategy = body.multitask_strategy
    runs.remember(run_id, body.modes, body.stream_subgraphs, strategy)

    async def start() -> Run:
        run, _ = await manager.start_or_attach(entry, request, limits.admission(tenant))
        return run

    if thread_id is None:
        return await start()
    threads = manager.threads
    if await threads.find(tenant, thread_id) is None:
        if body.if_not_exists != "create":
            raise NotFound(f"no thread with id {thread_id!r}", code="thread_not_found")
        await threads.ensure(tenant, thread_id)
    busy = await threads.busy(tenant, thread_id)
    if busy is None and not runs.queue.on_thread(tenant, thread_id):
        try:
            run = await start()
        except Conflict as exc:
            if exc.code != "thread_busy" or strategy == "reject":
                raise
            busy = await threads.busy(tenant, thread_id)  # taken meanwhile: as if it had been
        else:
            await threads.touch(tenant, thread_id, None)
            return run
    if strategy == "reject":
        raise Conflict(
            "Thread is already running a task. Wait for it to finish or choose a different"
            " multitask strategy.",
            code="thread_busy",
        )
    if strategy in ("interrupt", "rollback") and busy is not None:
        await manager.cancel(busy, roll_back=strategy == "rollback", tenant=tenant)
        run = await start()
        await threads.touch(tenant, thread_id, None)
        return run
    queued = Queued(run_id, thread_id, tenant, entry.name)
    runs.queue.add(queued, start)
    await threads.touch(tenant, thread_id, None)
    return queued


def _paths(request: Request, thread_id: str | None, run_id: str) -> dict[str, str]:
    """`Content-Location` (the run) and `Location` (its stream, where the SDK reconnects), as
    paths relative to the API's root (`/threads/{t}/runs/{r}`, as the reference sends them):
    both SDKs append them to their base URL, prefix included (httpx merges the base URL's path,
    the JS SDK concatenates `${apiUrl}${location}`). An absolute URL breaks the JS SDK: its
    reconnect goes to `${apiUrl}http://...` and its run status check never matches."""
    del request  # the SDKs resolve against their own base URL, not the request's
    run_path = f"/runs/{run_id}" if thread_id is None else f"/threads/{thread_id}/runs/{run_id}"
    return {"Content-Location": run_path, "Location": f"{run_path}/stream"}


async def _nonempty(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The subscriber's sends without the empty ones (events this protocol does not show)."""
    async for part in frames:
        if part:
            yield part


async def _after_start(
    queued: Queued, ping_s: float, then: AsyncIterator[bytes], on_close: Any
) -> AsyncIterator[bytes]:
    """A queued run's stream: heartbeats until it starts, then its frames (nothing if it was
    cancelled before it started). A client gone before it started calls `on_close` here (the
    subscriber, which calls it otherwise, never ran)."""
    try:
        while not queued.started.done():
            try:
                await asyncio.wait_for(asyncio.shield(queued.started), timeout=ping_s)
            except TimeoutError:
                yield PING
    finally:
        if queued.pending and on_close is not None:
            on_close()
    if queued.started.exception() is not None or queued.started.result() is None:
        return
    async for part in then:
        yield part


def _stream(
    run_or_queued: Run | Queued,
    *,
    manager: RunManager,
    fanout: FanOut,
    settings: Settings,
    modes: list[str],
    subgraphs: bool,
    cursor: int,
    headers: dict[str, str],
    slot: Any,
    on_close: Any = None,
    metadata: bool = True,
) -> StreamResponse:
    watch = StreamWatch(fanout)

    def frames(run: Run) -> AsyncIterator[bytes]:
        record = run.record
        encoder = LangGraphEncoder(
            modes,
            subgraphs,
            run_id=record.run_id,
            thread_id=record.thread_id,
            graph=record.graph,
            assistant_id=shapes.assistant_id(record.graph),
            metadata=metadata,
        )
        return _nonempty(
            fanout.frames(
                record.run_id,
                run.reader,
                cursor,
                encoder,
                selection(modes),
                on_close=on_close,
                ping_s=min(settings.ping_interval_s, HEARTBEAT_S),
                on_complete=watch.complete,
            )
        )

    if isinstance(run_or_queued, Run):
        body = frames(run_or_queued)
    else:
        queued = run_or_queued

        async def later() -> AsyncIterator[bytes]:
            run = queued.started.result()
            assert run is not None
            async for part in frames(run):
                yield part

        body = _after_start(queued, min(settings.ping_interval_s, HEARTBEAT_S), later(), on_close)
    return StreamResponse(
        body,
        send_timeout_s=settings.send_timeout_s,
        headers={**HEADERS, **headers},
        on_done=slot,
        watch=watch,
    )


def _cursor(value: str | None) -> int:
    """Our ids are integers; anything else (the reference's `<ms>-<seq>`) replays everything."""
    if value is None or not value.strip().isdigit():
        return 0
    return int(value.strip())


async def _stream_new(
    body: RunCreate,
    thread_id: str | None,
    request: Request,
    tenant: str,
    manager: RunManager,
    registry: GraphRegistry,
    limits: KeyLimits,
    settings: Settings,
    fanout: FanOut,
    runs: Runs,
) -> StreamResponse:
    slot = await limits.open_stream(tenant)
    try:
        made = await _create(
            body,
            thread_id,
            tenant=tenant,
            manager=manager,
            registry=registry,
            limits=limits,
            settings=settings,
            runs=runs,
        )
    except BaseException:
        if slot is not None:
            slot()
        raise
    disconnect = body.on_disconnect or ("continue" if body.stream_resumable else "cancel")

    def on_close() -> None:
        if disconnect != "cancel":
            return
        if isinstance(made, Queued):
            if made.pending:
                runs.queue.cancel(made)
                return
            started = made.started.result()
            if started is not None:
                manager.cancel_soon(started, "client_disconnected")
            return
        manager.cancel_soon(made, "client_disconnected")

    headers = _paths(request, thread_id, made.run_id)
    response = _stream(
        made,
        manager=manager,
        fanout=fanout,
        settings=settings,
        modes=body.modes,
        subgraphs=body.stream_subgraphs,
        cursor=0,
        headers=headers,
        slot=slot,
        on_close=on_close,
    )
    return response


@router.post(
    "/threads/{thread_id}/runs/stream",
    response_model=None,
    response_class=EventStream,
    responses={**SSE_OK, **errors(400, 413, 422, 404, 409, 429, 503)},
)
async def stream_thread_run(
    thread_id: str,
    body: RunCreate,
    request: Request,
    tenant: TenantDep,
    manager: ManagerDep,
    registry: RegistryDep,
    limits: LimitsDep,
    settings: SettingsDep,
    fanout: FanOutDep,
) -> StreamResponse:
    return await _stream_new(
        body,
        thread_id,
        request,
        tenant,
        manager,
        registry,
        limits,
        settings,
        fanout,
        await _runs(request),
    )


@router.post(
    "/runs/stream",
    response_model=None,
    response_class=EventStream,
    responses={**SSE_OK, **errors(400, 413, 422, 409, 429, 503)},
)
async def stream_stateless_run(
    body: RunCreate,
    request: Request,
    tenant: TenantDep,
    manager: ManagerDep,
    registry: RegistryDep,
    limits: LimitsDep,
    settings: SettingsDep,
    fanout: FanOutDep,
) -> StreamResponse:
    return await _stream_new(
        body,
        None,
        request,
        tenant,
        manager,
        registry,
        limits,
        settings,
        fanout,
        await _runs(request),
    )


def _run_body(made: Run | Queued, strategy: str) -> dict[str, Any]:
    if isinstance(made, Run):
        return shapes.run(made.record, strategy=strategy)
    return queued_body(made, strategy)


def queued_body(queued: Queued, strategy: str | None) -> dict[str, Any]:
    status = "interrupted" if queued.cancelled else "pending"
    return {
        "run_id": queued.run_id,
        "thread_id": queued.thread_id,
        "assistant_id": shapes.assistant_id(queued.graph),
        "status": status,
        "metadata": {},
        "multitask_strategy": strategy,
        "kwargs": {},
        "created_at": queued.created_at,
        "updated_at": queued.created_at,
    }


async def _create_background(
    body: RunCreate,
    thread_id: str | None,
    request: Request,
    response: Response,
    tenant: str,
    manager: RunManager,
    registry: GraphRegistry,
    limits: KeyLimits,
    settings: Settings,
) -> dict[str, Any]:
    made = await _create(
        body,
        thread_id,
        tenant=tenant,
        manager=manager,
        registry=registry,
        limits=limits,
        settings=settings,
        runs=await _runs(request),
    )
    response.headers["Content-Location"] = _paths(request, thread_id, made.run_id)[
        "Content-Location"
    ]
    answer = _run_body(made, body.multitask_strategy)
    if isinstance(made, Run):
        answer["status"] = "pending" if made.record.ended_at is None else answer["status"]
    return answer


@router.post("/threads/{thread_id}/runs", responses=errors(400, 413, 422, 404, 409, 429, 503))
async def create_thread_run(
    thread_id: str,
    body: RunCreate,
    request: Request,
    response: Response,
    tenant: TenantDep,
    manager: ManagerDep,
    registry: RegistryDep,
    limits: LimitsDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    return await _create_background(
        body, thread_id, request, response, tenant, manager, registry, limits, settings
    )


@router.post("/runs", responses=errors(400, 413, 422, 409, 429, 503))
async def create_stateless_run(
    body: RunCreate,
    request: Request,
    response: Response,
    tenant: TenantDep,
    manager: ManagerDep,
    registry: RegistryDep,
    limits: LimitsDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    return await _create_background(
        body, None, request, response, tenant, manager, registry, limits, settings
    )


async def _wait(
    body: RunCreate,
    thread_id: str | None,
    request: Request,
    tenant: str,
    manager: RunManager,
    registry: GraphRegistry,
    limits: KeyLimits,
    settings: Settings,
) -> Any:
    """Start the run, wait for its end, answer the thread's values (with `__interrupt__` when
    it paused; `__error__` when it failed), as the reference does."""
    made = await _create(
        body,
        thread_id,
        tenant=tenant,
        manager=manager,
        registry=registry,
        limits=limits,
        settings=settings,
        runs=await _runs(request),
    )
    run: Run | None
    if isinstance(made, Queued):
        run = await asyncio.shield(made.started)
        if run is None:
            return None
    else:
        run = made
    return await _outcome(manager, tenant, run)


async def _outcome(manager: RunManager, tenant: str, run: Run) -> Any:
    """Once `run` has ended: its thread's values, `__interrupt__` if it paused, `__error__` if
    it failed."""
    await wait_ended(run)
    record = await manager.record(run.run_id, tenant=tenant)
    snapshot = await manager.threads.snapshot(tenant, record.thread_id)
    values: Any = {} if snapshot is None else shapes.state(record.thread_id, snapshot)["values"]
    if record.error is not None:
        return {"__error__": {"error": record.error["code"], "message": record.error["message"]}}
    if snapshot is not None and snapshot.interrupts and isinstance(values, dict):
        values["__interrupt__"] = shapes.interrupts_of(snapshot)
    return values


@router.post("/threads/{thread_id}/runs/wait", responses=errors(400, 413, 422, 404, 409, 429, 503))
async def wait_thread_run(
    thread_id: str,
    body: RunCreate,
    request: Request,
    tenant: TenantDep,
    manager: ManagerDep,
    registry: RegistryDep,
    limits: LimitsDep,
    settings: SettingsDep,
) -> Any:
    return await _wait(body, thread_id, request, tenant, manager, registry, limits, settings)


@router.post("/runs/wait", responses=errors(400, 413, 422, 409, 429, 503))
async def wait_stateless_run(
    body: RunCreate,
    request: Request,
    tenant: TenantDep,
    manager: ManagerDep,
    registry: RegistryDep,
    limits: LimitsDep,
    settings: SettingsDep,
) -> Any:
    return await _wait(body, None, request, tenant, manager, registry, limits, settings)


async def _thread_run(manager: RunManager, tenant: str, thread_id: str | None, run_id: str) -> Run:
    run = await manager.get(check_run_id(run_id), tenant=tenant)
    if thread_id is not None and run.record.thread_id != thread_id:
        raise NotFound(f"no run with id {run_id!r} on thread {thread_id!r}", code="run_not_found")
    return run


@router.get("/threads/{thread_id}/runs/{run_id}/join", responses=errors(404, 422, 503))
async def join_thread_run_result(
    thread_id: str, run_id: str, request: Request, tenant: TenantDep, manager: ManagerDep
) -> Any:
    """`runs.join`: wait for the run's end, answer as `runs.wait` does."""
    queued = (await _runs(request)).queue.get(check_run_id(run_id), tenant)
    if queued is not None and queued.pending:
        started = await asyncio.shield(queued.started)
        if started is None:
            return None
    return await _outcome(manager, tenant, await _thread_run(manager, tenant, thread_id, run_id))


@router.get(
    "/threads/{thread_id}/runs/{run_id}", name="lg_get_run", responses=errors(404, 422, 503)
)
async def get_thread_run(
    thread_id: str, run_id: str, request: Request, tenant: TenantDep, manager: ManagerDep
) -> dict[str, Any]:
    return await _get(request, tenant, manager, thread_id, run_id)


@router.get("/runs/{run_id}", name="lg_stateless_run", responses=errors(404, 422, 503))
async def get_stateless_run(
    run_id: str, request: Request, tenant: TenantDep, manager: ManagerDep
) -> dict[str, Any]:
    return await _get(request, tenant, manager, None, run_id)


async def _get(
    request: Request, tenant: str, manager: RunManager, thread_id: str | None, run_id: str
) -> dict[str, Any]:
    runs = await _runs(request)
    queued = runs.queue.get(check_run_id(run_id), tenant)
    if queued is not None and (queued.pending or queued.cancelled):
        if thread_id is not None and queued.thread_id != thread_id:
            raise NotFound(f"no run with id {run_id!r}", code="run_not_found")
        return queued_body(queued, "enqueue")
    record = await manager.record(run_id, tenant=tenant)
    if thread_id is not None and record.thread_id != thread_id:
        raise NotFound(f"no run with id {run_id!r} on thread {thread_id!r}", code="run_not_found")
    return shapes.run(record, strategy=runs.asked(run_id)[2])


@router.get("/threads/{thread_id}/runs", responses=errors(404, 422, 503))
async def list_thread_runs(
    thread_id: str,
    request: Request,
    tenant: TenantDep,
    manager: ManagerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    await manager.threads.require(tenant, thread_id)
    runs = await _runs(request)
    pending = [queued_body(q, "enqueue") for q in reversed(runs.queue.on_thread(tenant, thread_id))]
    records = await manager.threads.runs(tenant, thread_id, limit, offset)
    listed = pending + [shapes.run(r, strategy=runs.asked(r.run_id)[2]) for r in records]
    return listed[:limit]


def _modes(stream_mode: list[str] | None, asked: list[str]) -> list[str]:
    """A join's modes: the ones given, or (none, or the SDK's empty `stream_mode=`) the run's."""
    given = [m for m in (stream_mode or []) if m]
    if not given:
        return asked
    for mode in given:
        if mode not in MODES:
            raise InvalidInput(f"stream_mode: {mode!r} is not served (served: {', '.join(MODES)})")
    return list(dict.fromkeys(given))


async def _join(
    request: Request,
    thread_id: str | None,
    run_id: str,
    tenant: str,
    manager: RunManager,
    limits: KeyLimits,
    settings: Settings,
    fanout: FanOut,
    stream_mode: list[str] | None,
    cancel_on_disconnect: bool,
    last_event_id: str | None,
) -> StreamResponse:
    runs = await _runs(request)
    asked_modes, subgraphs, _ = runs.asked(check_run_id(run_id))
    modes = _modes(stream_mode, asked_modes)
    # The reference: a join that names its modes gets those parts only, not `metadata`.
    metadata = modes is asked_modes
    queued = runs.queue.get(run_id, tenant)
    made: Run | Queued
    if queued is not None and queued.pending:
        made = queued
    else:
        made = await _thread_run(manager, tenant, thread_id, run_id)
    slot = await limits.open_stream(tenant)

    def on_close() -> None:
        if cancel_on_disconnect and isinstance(made, Run):
            manager.cancel_soon(made, "client_disconnected")

    return _stream(
        made,
        manager=manager,
        fanout=fanout,
        settings=settings,
        modes=modes,
        subgraphs=subgraphs,
        cursor=_cursor(last_event_id),
        headers=_paths(request, thread_id, run_id),
        slot=slot,
        on_close=on_close,
        metadata=metadata,
    )


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    name="lg_join",
    response_model=None,
    response_class=EventStream,
    responses={**SSE_OK, **errors(404, 422, 429, 503)},
)
async def join_thread_run(
    thread_id: str,
    run_id: str,
    request: Request,
    tenant: TenantDep,
    manager: ManagerDep,
    limits: LimitsDep,
    settings: SettingsDep,
    fanout: FanOutDep,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    cancel_on_disconnect: Annotated[bool, Query()] = False,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamResponse:
    return await _join(
        request,
        thread_id,
        run_id,
        tenant,
        manager,
        limits,
        settings,
        fanout,
        stream_mode,
        cancel_on_disconnect,
        last_event_id,
    )


@router.get(
    "/runs/{run_id}/stream",
    name="lg_stateless_join",
    response_model=None,
    response_class=EventStream,
    responses={**SSE_OK, **errors(404, 422, 429, 503)},
)
async def join_stateless_run(
    run_id: str,
    request: Request,
    tenant: TenantDep,
    manager: ManagerDep,
    limits: LimitsDep,
    settings: SettingsDep,
    fanout: FanOutDep,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    cancel_on_disconnect: Annotated[bool, Query()] = False,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamResponse:
    return await _join(
        request,
        None,
        run_id,
        tenant,
        manager,
        limits,
        settings,
        fanout,
        stream_mode,
        cancel_on_disconnect,
        last_event_id,
    )


@router.post(
    "/threads/{thread_id}/runs/{run_id}/cancel",
    status_code=202,
    responses=errors(404, 422, 503),
)
async def cancel_thread_run(
    thread_id: str,
    run_id: str,
    request: Request,
    tenant: TenantDep,
    manager: ManagerDep,
    action: Annotated[str, Query(pattern="^(interrupt|rollback)$")] = "interrupt",
    wait: Annotated[bool, Query()] = False,
) -> Response:
    """Stop the run (confirmed: it has ended when this answers, whatever `wait` says)."""
    runs = await _runs(request)
    queued = runs.queue.get(check_run_id(run_id), tenant)
    if queued is not None and queued.pending and queued.thread_id == thread_id:
        runs.queue.cancel(queued)
        return Response(status_code=202)
    run = await _thread_run(manager, tenant, thread_id, run_id)
    await manager.cancel(run.run_id, roll_back=action == "rollback", tenant=tenant)
    return Response(status_code=202)
