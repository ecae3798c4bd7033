"""Small helpers the test files share: mock GPIO pins, waiting, the CLI, a journal stand-in,
the doctor's output by check, the names of this process's threads."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def mock_pins(pin_class: Any = None) -> Iterator[Any]:
    """gpiozero on MockFactory pins for the duration; yields the factory (`.pin(n)`)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    previous = Device.pin_factory
    factory = MockFactory(pin_class=pin_class) if pin_class else MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    """Wait until `condition()` holds: a guard against hangs with a deadline, not a timing."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m device ARGS` as an owner would type it; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "device", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class Captured:
    """Stands in for systemd.journal.send: keeps MESSAGE and fields per record."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, message: str, /, **fields: Any) -> None:
        self.records.append({"MESSAGE": message, **fields})


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each check's line by its name, with its fix line (if any) joined on."""
    found: dict[str, str] = {}
    name = None
    for line in result.stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status in ("PASS", "WARN", "FAIL", "SKIP"):
            name = rest.split()[0]
            found[name] = line
        elif line.startswith("      fix: ") and name:
            found[name] += "\n" + line
    assert found, f"no check lines in:\n{result.stdout}\n{result.stderr}"
    return found


def thread_names() -> set[str]:
    """The names the kernel shows (`top -H`) for this process's threads."""
    return {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}
