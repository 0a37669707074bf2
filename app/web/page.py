"""`GET /` and its two assets. The files need no key (the key is typed into the page, which then
sends it on every API call), so their paths are in the auth middleware's open paths; nothing
else under them is served, so no other file can be reached through them."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
# path -> (file, media type); the auth middleware opens exactly these paths.
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page/page.css": ("page.css", "text/css; charset=utf-8"),
}
PATHS = frozenset(ASSETS)

router = APIRouter(include_in_schema=False)


def _serve(path: str) -> FileResponse:
    name, media_type = ASSETS[path]
    # no-cache: a browser revalidates (ETag) so a new release's page is never mixed with old JS.
    return FileResponse(STATIC / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/")
async def index() -> FileResponse:
    return _serve("/")


@router.get("/page/page.js")
async def script() -> FileResponse:
    return _serve("/page/page.js")


@router.get("/page/page.css")
async def style() -> FileResponse:
    return _serve("/page/page.css")
