"""Checks that must run before the app's slow imports: refuse `--workers N` on SQLite at once.

uvicorn's `--workers` supervisor never imports the app; each worker does, and until now each one
reached the single-writer guard in the lifespan only after every graph had been imported and
compiled, and then the supervisor, seeing its workers fail, stopped with exit status 0. An
operator (or an orchestrator's restart policy) saw a clean exit ~10 s later. Here a worker that
sees the command line (uvicorn spawns its workers with the parent's `sys.argv`) ask for several
workers on a SQLite store prints the advice and stops before the heavy imports; if its parent is
uvicorn's supervisor it stops that too with SIGKILL, the one way a worker can make it exit
non-zero (it catches every other terminating signal and then exits 0). The single-writer guard
(app/store/single_writer.py) still refuses any other second process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from pathlib import Path

from app.settings import Settings, SettingsError
from app.store.single_writer import ADVICE, requested_workers

STARTUP_FAILURE = 3  # uvicorn's status for a worker that could not start


def refuse_several_workers_on_sqlite() -> None:
    workers = requested_workers()
    if workers <= 1:
        return
    try:
        settings = Settings.load()
    except SettingsError:
        return  # reported, with the setting's name, when the app is built
    if settings.sqlite_path is None:
        return
    print(f"ERROR: cannot start: {workers} workers requested: {ADVICE}", file=sys.stderr)
    sys.stderr.flush()
    _stop_uvicorn_supervisor()
    raise SystemExit(STARTUP_FAILURE)


def _stop_uvicorn_supervisor() -> None:
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid != os.getppid() or parent.pid is None:
        return
    try:
        cmdline = Path(f"/proc/{parent.pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"uvicorn" in cmdline:
        os.kill(parent.pid, signal.SIGKILL)
