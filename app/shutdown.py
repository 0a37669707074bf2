"""Graceful shutdown: on SIGTERM (or Ctrl-C) every open stream gets its `end` before it closes.

uvicorn's own sequence on SIGTERM: stop accepting connections, then wait for the open ones to
finish (forever, with the default CLI), and only then run the lifespan's shutdown. A stream of
a run that goes on would hold that wait open; sse-starlette's default answer is to cut every
stream at once, which loses the `end`. So we take over (`AppStatus` drain disabled) and run
this timeline from the signal, within SHUTDOWN_GRACE_S:

    0                     new runs get 503 `shutting_down`; running runs may end on their own
    grace - 1.5 s         the rest are cancelled: `end {cancelled, shutdown}` is in each log and
                          every stream (all of them read the log) sends it and closes
    grace - 0.75 s        a stream still open (a client that stopped reading) is cut; the
                          sse-starlette poll notices within 0.5 s
    grace - 0.25 s        connections that still cannot close are aborted: a client that reads
                          nothing never takes the bytes queued for it, so its socket never
                          drains and a normal close would wait for it forever
    grace                 uvicorn runs the lifespan shutdown (which writes out every run) and
                          exits

The signal handler is chained in front of uvicorn's (which still does its part) rather than
replacing it, so this works under any server that handles SIGTERM with `signal.signal`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

from sse_starlette.sse import AppStatus

log = logging.getLogger("app.shutdown")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def grace_timeline(grace_s: float) -> tuple[float, float, float]:
    """Seconds from the signal until: running runs are cancelled, open streams are cut, the
    server stops waiting for connections."""
    return max(grace_s - 1.5, 0.0), max(grace_s - 0.75, 0.0), max(grace_s - 0.25, 0.0)


class GracefulShutdown:
    def __init__(self, grace_s: float, drain: Callable[[float], Coroutine[Any, Any, None]]) -> None:
        self._grace_s = grace_s
        self._drain = drain
        self._previous: dict[int, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Chain our handler in front of the server's (main thread only; else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: graceful shutdown of streams is off")
            return
        # We drain; see the module docstring. (sse-starlette leaves this method unannotated.)
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)
        self._previous.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._loop is not None and self._task is None:
            self._loop.call_soon_threadsafe(self._begin, signal.Signals(signum).name)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and signum == signal.SIGINT:
            raise KeyboardInterrupt

    def _begin(self, name: str) -> None:
        if self._task is None:
            log.warning("%s: shutting down within %.1fs", name, self._grace_s)
            self._task = asyncio.create_task(self._run(), name="graceful-shutdown")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        cancel_after, cut_after, force_after = grace_timeline(self._grace_s)
        await self._drain(cancel_after)
        await asyncio.sleep(max(cut_after - (loop.time() - started), 0.0))
        log.warning("shutdown: closing the streams still open")
        AppStatus.should_exit = True
        await asyncio.sleep(max(force_after - (loop.time() - started), 0.0))
        server = self._server()
        stuck = list(getattr(getattr(server, "server_state", None), "connections", ()))
        if stuck:
            log.warning("shutdown: grace period over; aborting %d connections", len(stuck))
        for connection in stuck:
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()

    def _server(self) -> Any:
        """The uvicorn `Server` whose SIGTERM handler we chained, if it is one."""
        owner = getattr(self._previous.get(signal.SIGTERM), "__self__", None)
        return owner if hasattr(owner, "server_state") else None
