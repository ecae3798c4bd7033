"""The event loop's worker threads: PortAudio calls, the camera, JPEG encoding.

A pool grows to the most calls that ever overlapped and keeps its threads, so they
are named and counted (`ctl status`): a soak tells that growth from a thread
leaked. A call can get stuck in a driver (a USB sound card pulled in the middle of
one) and no thread can be stopped from outside; a stop must not wait for it, or
systemd kills the box after TimeoutStopSec instead of it stopping cleanly.

Name lookups are not the pool's (`lookups_apart`): with the internet down behind a
working Wi-Fi, each one waits on a silent resolver long after its connect gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

WORKERS = 8
PREFIX = "worker"
#: How long a stop waits for the calls in flight; a normal one takes milliseconds.
STOP_WAIT_S = 1.0
#: Name lookups in flight at most on a loop (threads: one a lookup); a further one
#: waits for a place, within its connect's timeout. A try makes two (its connect's, and
#: the DNS check after a timeout): room for two tries, while a dead resolver holds its
#: threads for 15-25 s each, well within the unit's TasksMax=64.
LOOKUPS = 4


class Workers(ThreadPoolExecutor):
    """The loop's default executor: named threads, and a shutdown that waits a while for
    calls in flight (asyncio.run waits for it at the end), not for ever."""

    def __init__(self) -> None:
        super().__init__(WORKERS, thread_name_prefix=PREFIX)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=cancel_futures)
        if wait:
            deadline = time.monotonic() + STOP_WAIT_S
            for thread in threads():
                thread.join(max(0.0, deadline - time.monotonic()))


def threads() -> list[threading.Thread]:
    """The workers alive in this process."""
    return [t for t in threading.enumerate() if t.name.startswith(f"{PREFIX}_")]


def exit_past_stuck(status: int) -> int:
    """`status`, for the caller to exit with; or, with a worker still stuck in a call,
    the process ends here with it: the interpreter's own exit joins every worker."""
    stuck = threads()
    if not stuck:
        return status
    log.warning("stopping with %d call(s) still unfinished (a driver, a name lookup)", len(stuck))
    logging.shutdown()
    os._exit(status)


async def in_own_thread(
    function: Callable[[], T], name: str, threads: set[threading.Thread] | None = None
) -> T:
    """Run `function` in a daemon thread of its own (added to `threads`) and await it.

    Not the pool: a call that may hang for good (a tool on a stalled SD card, a wedged
    sound card's driver) must neither take a worker from the camera and the audio
    keepers nor hold up the process's exit, which joins the pool's threads. Cancelling
    the await (a timeout) abandons the thread; it finishes alone.
    """
    return await own_thread(function, name, threads)


def own_thread(
    function: Callable[[], T], name: str, threads: set[threading.Thread] | None = None
) -> asyncio.Future[T]:
    """Start `function` as `in_own_thread` does; the future it settles. A future, not a
    task: one its caller keeps for later waiters (a call that may outlast the daemon's
    stop) is no task left pending at shutdown, unnamed and nobody's."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return  # timed out or cancelled meanwhile
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = function(), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    if threads is not None:
        threads.add(thread)
    return done


def lookups_apart(loop: asyncio.AbstractEventLoop) -> None:
    """Name lookups on `loop` (every connect's, the DNS checks') in daemon threads of their
    own, LOOKUPS at most in flight, not in the pool. A router with no uplink leaves glibc's
    resolver waiting 15-25 s (5 s a try, 2 tries, each nameserver), past the connect's
    timeout: presses through an outage left the pool's threads all in lookups, and the
    next press's key lookup, the camera's start (then "stuck") and the audio keeper's
    calls queued behind them; a doctor run waited for them at its end."""
    if getattr(loop.getaddrinfo, "__self__", None) is not loop:
        return  # done already
    places = asyncio.Semaphore(LOOKUPS)

    async def getaddrinfo(
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:  # as socket.getaddrinfo's
        await places.acquire()
        ran = False

        def lookup() -> list[Any]:
            nonlocal ran
            ran = True
            try:
                return socket.getaddrinfo(host, port, family, type, proto, flags)
            finally:  # the place is the thread's: a connect that gave up leaves it taken
                with contextlib.suppress(RuntimeError):  # the loop closed
                    loop.call_soon_threadsafe(places.release)

        try:
            return await in_own_thread(lookup, "lookup")
        except Exception:
            if not ran:  # no thread could start (TasksMax): the place is not its to give back
                places.release()
            raise

    loop.getaddrinfo = getaddrinfo
