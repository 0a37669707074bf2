"""Graceful shutdown: on SIGTERM (or Ctrl-C) runs get SHUTDOWN_GRACE_S to finish, and every
open stream gets its `end` before it closes.

What uvicorn (0.54) does on SIGTERM, from its source: its handler only sets `should_exit`; its
main loop sees that within 0.1 s and then closes the listening socket (new connections are
refused), closes every idle keep-alive connection at once, and lets each connection that is
sending a response finish that response and then closes it (a request sent on it afterwards,
pipelined or not, is never read). It then waits, with no limit under the default CLI, until
every connection has closed, and only then runs the lifespan's shutdown. So a `503
shutting_down` reaches only a request that uvicorn read in the 0.1 s before its loop noticed.

Two things that sequence gets wrong for us, and what we do instead:
- With no connection open (a background run nobody watches) uvicorn reaches the lifespan
  shutdown at once, which would cancel the run 0.1-0.2 s after the signal. So the lifespan
  waits for `drained()`: the runs' grace is the same whether anyone watches or not.
- A stream of a run that goes on would hold uvicorn's wait open forever; sse-starlette's default
  answer is to cut every stream at once, which loses the `end`. So we take over (`AppStatus`
  drain disabled) and run this timeline from the signal:

    0                   new runs are refused (`shutting_down`); running runs may end on their
                        own, and each one's streams send its `end` and close
    grace               the runs still going are cancelled: `end {cancelled, shutdown}` is in
                        each log; `max_rate` pacing stops, so every stream (all of them read
                        the log) sends what it has left and its `end` at once, and closes
    grace + 0.5 s       a stream still open (a client that stopped reading) is cut; the
                        sse-starlette poll notices within 0.5 s
    grace + 1 s         connections that still cannot close are aborted: a client that reads
                        nothing never takes the bytes queued for it, so its socket never drains
                        and a normal close would wait for it forever
    then                uvicorn runs the lifespan shutdown (which writes out every run), exits

A second signal ends the grace at once (the timeline goes on from "grace").

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
CUT_AFTER_S = 0.5  # after the grace: streams still open are cut
ABORT_AFTER_S = 1.0  # after the grace: connections still open are aborted

Drain = Callable[[float, asyncio.Event], Coroutine[Any, Any, None]]
"""`drain(grace_s, hurry)`: refuse new runs, let running ones end within `grace_s` (or until
`hurry` is set), then cancel the rest and return once each has its `end`."""


class GracefulShutdown:
    def __init__(
        self, grace_s: float, drain: Drain, stop_pacing: Callable[[], None] = lambda: None
    ) -> None:
        self._grace_s = grace_s
        self._drain = drain
        self._stop_pacing = stop_pacing
        self._previous: dict[int, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hurry = asyncio.Event()
        self._drained = asyncio.Event()

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

    async def drained(self) -> None:
        """Once a signal has started the timeline: return when every run has ended (on its own
        within the grace, or cancelled at its end). Without a signal: at once."""
        if self._task is not None:
            await self._drained.wait()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin, signal.Signals(signum).name)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and signum == signal.SIGINT:
            raise KeyboardInterrupt

    def _begin(self, name: str) -> None:
        if self._task is None:
            log.warning(
                "%s: runs get %.1fs to finish; the rest are cancelled then", name, self._grace_s
            )
            self._task = asyncio.create_task(self._run(), name="graceful-shutdown")
        elif not self._hurry.is_set():
            log.warning("%s again: cancelling the runs now", name)
            self._hurry.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Pacing stops at the end of the grace even while a run that ignores its cancel holds
        # the drain up: the other streams' ends must not wait for it.
        pacing = loop.call_at(started + self._grace_s, self._stop_pacing)
        try:
            await self._drain(self._grace_s, self._hurry)
        finally:
            self._drained.set()
        grace_over = started + self._grace_s
        if self._hurry.is_set():
            grace_over = min(grace_over, loop.time())
            pacing.cancel()
            self._stop_pacing()
        await asyncio.sleep(max(grace_over + CUT_AFTER_S - loop.time(), 0.0))
        log.warning("shutdown: closing the streams still open")
        AppStatus.should_exit = True
        await asyncio.sleep(max(grace_over + ABORT_AFTER_S - loop.time(), 0.0))
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
