"""A run's own checkpointer: the graph's saver behind a fence the manager closes when it stops
the run, so a cancelled run changes its thread no more once its `end` is written.

Design record
- Why: LangGraph writes checkpoints from tasks of its own, and its loop waits for them on exit.
  A repeated `task.cancel()` (the manager's escalation, app/engine/run.py) interrupts that
  wait, and a node that ignores cancel runs on, detached, after the run's task has ended. Either
  way writes of the run land *after* the manager has rewound the thread (a rollback undone) or
  reported the run cancelled (a thread changing under a run said to be over).
- How: each run gets a `FencedSaver` around the graph's saver, handed to LangGraph as the run's
  checkpointer through the config key LangGraph itself uses to lend a saver to a subgraph
  (`CONFIG_KEY_CHECKPOINTER`; tests/unit/test_overrides.py checks that it is honoured, nested
  graphs included). Every write passes the fence. `close()` refuses writes from then on and
  waits for the ones already inside the saver; a write that comes later is dropped (logged).
- Reads are never fenced. Only the async writes are tracked: the service runs graphs through
  `astream_events`, whose loop calls the async methods; a sync write is only refused once
  closed.
- What a dropped write means: a step whose checkpoint (or task writes) had not started to be
  written when the run was stopped is not kept, as if the process had stopped there; the thread
  stands at an earlier checkpoint, from which `"input": null` continues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)

log = logging.getLogger("app.engine")


class Fence:
    """The state one run's savers share (a saver's `with_allowlist` clone shares it too)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.closed = False
        self.dropped = 0
        self._inside = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def refuses(self, what: str) -> bool:
        """Whether the fence is closed to this write (counted, and logged once per run)."""
        if not self.closed:
            return False
        self.dropped += 1
        if self.dropped == 1:
            log.info(
                "run %s: dropped a checkpoint %s that came after the run was stopped",
                self.run_id,
                what,
            )
        return True

    def enter(self) -> None:
        """A write goes into the saver; `leave()` follows."""
        self._inside += 1
        self._idle.clear()

    def leave(self) -> None:
        self._inside -= 1
        if not self._inside:
            self._idle.set()

    async def close(self, timeout_s: float) -> bool:
        """Refuse every write from now on; wait up to `timeout_s` for those already inside the
        saver. True if none is left."""
        self.closed = True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class FencedSaver(BaseCheckpointSaver[Any]):
    """`saver` for one run: reads pass through, writes pass the run's `Fence`."""

    def __init__(self, saver: BaseCheckpointSaver[Any], fence: Fence) -> None:
        super().__init__(serde=saver.serde)
        self.saver = saver
        self.fence = fence

    # -- reads and helpers: the saver's own ------------------------------------------------

    @property
    def config_specs(self) -> list[Any]:
        return self.saver.config_specs

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.saver.get_next_version(current, channel)

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> FencedSaver:
        inner = self.saver.with_allowlist(extra_allowlist)
        return self if inner is self.saver else FencedSaver(inner, self.fence)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.saver.get_tuple(config)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.saver.aget_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self.saver.list(config, filter=filter, before=before, limit=limit)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self.saver.alist(config, filter=filter, before=before, limit=limit):
            yield item

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self.saver.get_delta_channel_history(config=config, channels=channels)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self.saver.aget_delta_channel_history(config=config, channels=channels)

    # -- writes: through the fence ---------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self.fence.refuses("write"):
            return _dropped(config, checkpoint)
        self.fence.enter()
        try:
            return await self.saver.aput(config, checkpoint, metadata, new_versions)
        finally:
            self.fence.leave()

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self.fence.refuses("task write"):
            return
        self.fence.enter()
        try:
            await self.saver.aput_writes(config, writes, task_id, task_path)
        finally:
            self.fence.leave()

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self.fence.refuses("write"):
            return _dropped(config, checkpoint)
        return self.saver.put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self.fence.refuses("task write"):
            return
        self.saver.put_writes(config, writes, task_id, task_path)

    # A run's graph never deletes, copies or prunes threads; refused, not passed through, so a
    # node cannot get round the fence with them.
    async def adelete_thread(self, thread_id: str) -> None:
        raise NotImplementedError("a run's checkpointer does not delete threads")

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        raise NotImplementedError("a run's checkpointer does not delete runs")

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        raise NotImplementedError("a run's checkpointer does not copy threads")

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        raise NotImplementedError("a run's checkpointer does not prune threads")


def _dropped(config: RunnableConfig, checkpoint: Checkpoint) -> RunnableConfig:
    """What a saver returns for a checkpoint it stored (this one was not)."""
    configurable = config.get("configurable", {})
    return {
        "configurable": {
            "thread_id": configurable.get("thread_id"),
            "checkpoint_ns": configurable.get("checkpoint_ns", ""),
            "checkpoint_id": checkpoint["id"],
        }
    }


def fence_run(config: RunnableConfig, saver: Any, run_id: str) -> Fence | None:
    """Make `config` run the graph on a fenced copy of `saver` (the compiled graph's
    checkpointer); None if the graph has no saver of its own to fence."""
    if not isinstance(saver, BaseCheckpointSaver):
        return None
    fence = Fence(run_id)
    config.setdefault("configurable", {})[CONFIG_KEY_CHECKPOINTER] = FencedSaver(saver, fence)
    return fence
