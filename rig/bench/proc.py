"""What a process costs, read from outside it: CPU time and resident memory.

CPU comes from the process's own CPU-time clock (`clock_getcpuclockid`): the
kernel's exact run time of all its threads, living and exited, in nanoseconds.
`/proc/PID/stat`'s utime+stime say the same in 10 ms ticks, too coarse for an
idle daemon that should use well under 0.1 s a minute. Where it goes, thread by
thread, comes from each thread's schedstat (nanoseconds too) and its name.
Memory comes from `/proc/PID/status`: VmRSS now and VmHWM, the peak the kernel
has seen.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import time
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class ProcessGone(RuntimeError):
    """The process ended while it was being measured."""


def cpu_clock(pid: int) -> int:
    """The clock id of the CPU time of process `pid` (any process we may see)."""
    clock = ctypes.c_int()
    error = _libc.clock_getcpuclockid(pid, ctypes.byref(clock))
    if error:
        raise ProcessGone(f"no CPU clock for process {pid}: {os.strerror(error)}")
    return clock.value


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    try:
        return time.clock_gettime(cpu_clock(pid))
    except OSError as exc:
        raise ProcessGone(f"process {pid}: {exc}") from exc


def memory_mb(pid: int) -> dict[str, float]:
    """{"rss": VmRSS, "peak": VmHWM} of process `pid`, in MB (2**20 bytes)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise ProcessGone(f"process {pid}: {exc}") from exc
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {
        name: int(fields[key].split()[0]) / 1024
        for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))
    }


def cpu_per_minute(pid: int, seconds: float, windows: int) -> list[float]:
    """CPU seconds per minute of process `pid` in each of `windows` windows of `seconds`."""
    return cpu_per_minute_each([pid], seconds, windows)[0]


def cpu_per_minute_each(pids: list[int], seconds: float, windows: int) -> list[list[float]]:
    """`cpu_per_minute` of several processes in the same windows: whatever else the
    machine does then falls on all of them alike."""
    rates: list[list[float]] = [[] for _ in pids]
    for _ in range(windows):
        start_cpu, start = [cpu_seconds(pid) for pid in pids], time.monotonic()
        time.sleep(seconds)
        took = time.monotonic() - start
        for rate, pid, used in zip(rates, pids, start_cpu, strict=True):
            rate.append((cpu_seconds(pid) - used) / took * 60)
    return rates


def cpu_with_threads(
    pid: int, seconds: float, windows: int
) -> tuple[list[float], dict[str, float]]:
    """`cpu_per_minute`, and the split by thread over all the windows together."""
    return cpu_with_threads_each([pid], seconds, windows)[0]


def cpu_with_threads_each(
    pids: list[int], seconds: float, windows: int
) -> list[tuple[list[float], dict[str, float]]]:
    """`cpu_with_threads` of several processes in the same windows."""
    before, start = [thread_cpu(pid) for pid in pids], time.monotonic()
    rates = cpu_per_minute_each(pids, seconds, windows)
    took = time.monotonic() - start
    return [
        (rate, thread_split(was, thread_cpu(pid), took))
        for rate, was, pid in zip(rates, before, pids, strict=True)
    ]


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """{thread id: (name, CPU seconds so far)} for every living thread of process `pid`.

    From each thread's schedstat (its exact run time in nanoseconds) and comm;
    the main thread, whose id is the process id, is named "main".
    """
    threads = {}
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread ended
                ran_ns = int((task / "schedstat").read_text().split()[0])
                name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
                threads[int(task.name)] = (name, ran_ns / 1e9)
    except OSError as exc:
        raise ProcessGone(f"process {pid}: {exc}") from exc
    return threads


def thread_split(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float
) -> dict[str, float]:
    """CPU s/min per thread name between two `thread_cpu` readings, busiest first.

    Threads of one name are summed; threads that ended in between are left out,
    new ones count from zero.
    """
    used: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        start = before.get(tid, (name, 0.0))[1]
        used[name] = used.get(name, 0.0) + (cpu - start) / seconds * 60
    return dict(sorted(used.items(), key=lambda item: -item[1]))
