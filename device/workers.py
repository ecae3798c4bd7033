"""The event loop's worker threads: PortAudio calls, the camera, JPEG encoding, name lookups.

A pool grows to the most calls that ever overlapped and keeps its threads, so they
are named and counted (`ctl status`): a soak tells that growth from a thread
leaked. A call can get stuck in a driver (a USB sound card pulled in the middle of
one) and no thread can be stopped from outside; a stop must not wait for it, or
systemd kills the box after TimeoutStopSec instead of it stopping cleanly.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

WORKERS = 8
PREFIX = "worker"
#: How long a stop waits for the calls in flight; a normal one takes milliseconds.
STOP_WAIT_S = 1.0


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
