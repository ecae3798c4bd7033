"""Small helpers the test files share: mock GPIO pins, waiting for a condition, the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
