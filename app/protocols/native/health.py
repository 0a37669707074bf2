"""`GET /healthz` (the process answers) and `GET /readyz` (graphs compiled, stores reachable)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.protocols.deps import FanOutDep, ManagerDep, RegistryDep
from app.protocols.doc import errors
from app.protocols.native.errors import error_body

router = APIRouter()


@router.get("/healthz", responses=errors(public=True))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=errors(503, public=True))
async def readyz(
    request: Request, registry: RegistryDep, manager: ManagerDep, fanout: FanOutDep
) -> dict[str, Any] | JSONResponse:
    problem = manager.store_problem or await request.app.state.ready()
    if problem is not None:
        return JSONResponse(error_body("store_unavailable", problem), 503)
    return {
        "status": "ready",
        "graphs": list(registry),
        "active_runs": manager.active_count,
        "open_streams": fanout.open_streams,
        # The process's asyncio tasks: steady when idle, so a leak shows as growth.
        "tasks": len(asyncio.all_tasks()),
    }
