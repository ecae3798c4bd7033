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
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
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
    fd_kinds: tuple[str, ...] = ()  # what each descriptor is: a socket, /dev/snd/pcmC0D0c...

    def leaks(self, later: Vitals) -> dict[str, int]:
        """What `later` holds beyond this reading (0 where it holds no more)."""
        return {
            "tasks": max(0, later.tasks - self.tasks),
            "threads": max(0, (later.threads - later.workers) - (self.threads - self.workers)),
            "fds": max(0, later.fds - self.fds),
        }

    def fds_beyond(self, later: Vitals) -> list[str]:
        """What the descriptors `later` holds beyond this reading's are (a leak, named)."""
        return sorted((Counter(later.fd_kinds) - Counter(self.fd_kinds)).elements())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read(daemon: Daemon) -> Vitals:
    """One reading of the daemon's tasks, threads, file descriptors and RSS.

    /proc first, then `ctl status`: the daemon closes its end of a status request's
    connection only after the client has gone, so read the other way round, that
    socket was sometimes still open (or closing: "closed") and counted as a leak.
    """
    pid = daemon.proc.pid
    try:
        threads = len(os.listdir(f"/proc/{pid}/task"))
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError as exc:
        raise ProcessGone(f"process {pid}: {exc}") from exc
    sockets = _sockets(pid)
    kinds = tuple(sorted(_kind(pid, fd, sockets) for fd in fds))
    status = daemon.status()
    return Vitals(
        int(status["tasks"]), threads, len(fds), memory_mb(pid)["rss"], int(status["workers"]),
        kinds,
    )


#: /proc/net/tcp's connection states, by their hex code.
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "06": "TIME_WAIT", "07": "CLOSE",
              "08": "CLOSE_WAIT", "0A": "LISTEN", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "09": "LAST_ACK", "0B": "CLOSING"}


def _sockets(pid: int) -> dict[str, str]:
    """Socket inode -> "tcp CLOSE_WAIT", "udp", "unix", from the process's /proc/net."""
    kinds: dict[str, str] = {}
    for table in ("tcp", "tcp6", "udp", "udp6", "unix"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if table == "unix" and len(fields) >= 7:
                kinds[fields[6]] = "unix"
            elif table != "unix" and len(fields) >= 10:
                state = f" {TCP_STATES.get(fields[3], fields[3])}" if "tcp" in table else ""
                kinds[fields[9]] = table.rstrip("6") + state
    return kinds


def _kind(pid: int, fd: str, sockets: dict[str, str]) -> str:
    """socket:[123] -> "socket tcp ESTABLISHED"; a path stays a path; "closed" if gone."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return "closed"
    if inode := re.fullmatch(r"socket:\[(\d+)\]", target):
        return f"socket {sockets.get(inode.group(1), 'other')}"
    return re.sub(r":\[\d+\]$", "", target)


def settled(daemon: Daemon, readings: int = 5, every_s: float = 1.0) -> Vitals:
    """The smallest of `readings` readings `every_s` apart, each figure on its own
    (threads and workers from one reading: the one with the fewest beside the pool)."""
    seen = []
    for n in range(readings):
        if n:
            time.sleep(every_s)
        seen.append(read(daemon))
    fewest = min(seen, key=lambda v: v.threads - v.workers)  # threads beside the pool
    fewest_fds = min(seen, key=lambda v: v.fds)
    return Vitals(
        min(v.tasks for v in seen),
        fewest.threads,
        fewest_fds.fds,
        min(v.rss_mb for v in seen),
        fewest.workers,
        fewest_fds.fd_kinds,
    )


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has had."""
    return memory_mb(pid)["peak"]

