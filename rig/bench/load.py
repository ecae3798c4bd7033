"""Other work on the machine, on purpose: one busy process per core.

A box does other things now and then (an update, a log rotation); the speaker
must not click when it does. The benchmark runs some of its turns beside one
busy-looping process per core, started and ended here by their own ids.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SPIN = "while True: pass"


@contextmanager
def busy_cores(count: int | None = None) -> Iterator[list[int]]:
    """Run `count` (default: one per core) busy loops at normal priority; yields their ids."""
    procs = [
        subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL)
        for _ in range(count or os.cpu_count() or 1)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
