"""What the running service uses, measured under real systemd (the unit's limits are
sized from these figures), and that it stays inside the unit's limits."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hilrig import Button, save, show, speak_a_turn, wait_active

pytestmark = pytest.mark.usefixtures("installed")


def sample(pid: int) -> dict[str, float]:
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {
        "threads": int(status["Threads"]),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
        "tasks": int(show("TasksCurrent")),
        "cgroup_memory_mb": int(show("MemoryCurrent")) / 2**20,
    }


def test_threads_fds_and_memory_through_a_turn(server: Any, button: Button,
                                               tmp_path: Path) -> None:
    pid = wait_active()
    idle = sample(pid)
    peaks: dict[str, float] = dict(idle)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for key, value in sample(pid).items():
                peaks[key] = max(peaks[key], value)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        speak_a_turn(server, button, tmp_path)
    finally:
        stop.set()
        watcher.join()
    limits = {
        "MemoryMax": show("MemoryMax"), "MemoryHigh": show("MemoryHigh"),
        "TasksMax": show("TasksMax"), "LimitNOFILE": show("LimitNOFILE"),
    }
    save("resources.json", json.dumps({"idle": idle, "peak": peaks, "limits": limits},
                                      indent=1))
    print(f"\nidle {idle}\npeak {peaks}\nlimits {limits}")
    assert all(value.isdigit() for value in limits.values()), f"the unit sets each: {limits}"
    assert peaks["tasks"] < int(limits["TasksMax"])
    assert peaks["fds"] < int(limits["LimitNOFILE"])
    assert peaks["cgroup_memory_mb"] * 2**20 < int(limits["MemoryHigh"])
