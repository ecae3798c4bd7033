"""Owning asyncio tasks: every task is cancelled and awaited by its owner."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[object] | None) -> None:
    """Cancel `task` and wait until it has finished; a no-op for None or a finished task.

    `asyncio.wait` neither raises the task's CancelledError nor swallows the caller's
    own cancellation. A task that had already failed is logged, not re-raised, so a
    shutdown always runs to its end.
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task %s had failed: %r", task.get_name(), exc, exc_info=exc)
