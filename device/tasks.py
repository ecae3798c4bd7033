"""Owning asyncio tasks: every task is cancelled and awaited by its owner."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

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


def failure_seen(call: asyncio.Future[Any]) -> None:
    """A done-callback for a call whose waiter may give up on it (a timeout, a cancel, a
    shield's outer) while it goes on in its thread: its failure, when it comes, has been
    said already, or is the next call's to meet. Unseen, asyncio put "exception was never
    retrieved" and a traceback in the journal at ERROR, a bug's words for it."""
    if not call.cancelled():
        call.exception()
