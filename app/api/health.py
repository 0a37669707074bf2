"""`GET /healthz` (the process answers) and `GET /readyz` (graphs compiled, store reachable)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.deps import ManagerDep, RegistryDep
from app.errors import error_body

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(
    request: Request, registry: RegistryDep, manager: ManagerDep
) -> dict[str, Any] | JSONResponse:
    try:
        await request.app.state.checkpointer.aget_tuple(
            {"configurable": {"thread_id": "__readyz__", "checkpoint_ns": ""}}
        )
    except Exception as exc:
        return JSONResponse(error_body("store_unavailable", f"checkpointer: {exc}"), 503)
    return {"status": "ready", "graphs": list(registry), "active_runs": manager.active_count}
