"""Owning asyncio tasks: every task is cancelled and awaited by its owner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with a loop whose handler of errors no task owns knows a library's
    fault from a bug of the box's (`_unowned_error`)."""
    with asyncio.Runner() as runner:
        runner.get_loop().set_exception_handler(_unowned_error)
        return runner.run(main)


def _unowned_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What asyncio would log with a traceback at ERROR, unless it is a known fault of a
    library's that the box has already said in its own words."""
    if _websockets_proxy_tls(context.get("exception")):
        log.debug("websockets' connection_lost after a failed TLS through the proxy (#1629)")
        return
    loop.default_exception_handler(context)


def _websockets_proxy_tls(exc: object) -> bool:
    """websockets 16-17 (python-websockets/websockets#1629): a connect through HTTPS_PROXY
    whose TLS fails (a proxy that shows its own certificate, a clock far off) hands the
    loss to a connection it never finished building. The connect raises the TLS error,
    which the journal, `ask` and the doctor say; this traceback came beside it each try.
    The connection may be the box's own kind of websockets' (`BoundedClose`)."""
    return (
        isinstance(exc, AttributeError)
        and exc.name == "recv_messages"
        and any(cls.__module__.startswith("websockets.") for cls in type(exc.obj).__mro__)
    )


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
