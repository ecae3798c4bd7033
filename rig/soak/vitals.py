"""What a long-running daemon holds, read from outside it: tasks, threads, descriptors, memory.

Tasks and the loop's worker threads come from its own `ctl status` (asyncio's
count, the control request's own task included, the same at every reading);
threads, file descriptors and resident memory from /proc. The worker pool grows
to the most blocking calls that ever overlapped, up to its bound, and keeps its
threads: that growth is the pool's, not a leak, so a thread leaked is one beyond
the workers. A leak is what is still held after a quiet settle at
the end beyond what was held after the first turns; a reading is the smallest of
a few over a short quiet while, so a request or a thread that is on its way out
is not counted, and what is left is what stays.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from rig.bench.proc import ProcessGone, memory_mb
from rig.daemon import Daemon


@dataclass(frozen=True)
class Vitals:
    tasks: int
    threads: int  # all of the process's, PortAudio's own included
    fds: int
    rss_mb: float
    workers: int = 0  # of `threads`, the loop's pool

    def leaks(self, later: Vitals) -> dict[str, int]:
        """What `later` holds beyond this reading (0 where it holds no more)."""
        return {
            "tasks": max(0, later.tasks - self.tasks),
            "threads": max(0, (later.threads - later.workers) - (self.threads - self.workers)),
            "fds": max(0, later.fds - self.fds),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read(daemon: Daemon) -> Vitals:
    """One reading of the daemon's tasks, threads, file descriptors and RSS."""
    pid = daemon.proc.pid
    status = daemon.status()
    try:
        threads = len(os.listdir(f"/proc/{pid}/task"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as exc:
        raise ProcessGone(f"process {pid}: {exc}") from exc
    return Vitals(
        int(status["tasks"]), threads, fds, memory_mb(pid)["rss"], int(status["workers"])
    )


def settled(daemon: Daemon, readings: int = 5, every_s: float = 1.0) -> Vitals:
    """The smallest of `readings` readings `every_s` apart, each figure on its own
    (threads and workers from one reading: the one with the fewest beside the pool)."""
    seen = []
    for n in range(readings):
        if n:
            time.sleep(every_s)
        seen.append(read(daemon))
    fewest = min(seen, key=lambda v: v.threads - v.workers)  # threads beside the pool
    return Vitals(
        min(v.tasks for v in seen),
        fewest.threads,
        min(v.fds for v in seen),
        min(v.rss_mb for v in seen),
        fewest.workers,
    )


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has had."""
    return memory_mb(pid)["peak"]

