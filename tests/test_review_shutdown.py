"""Review of async hygiene at shutdown: what a SIGTERM must not wait for, and what
must not be left behind."""

from __future__ import annotations

import asyncio
import threading
import time

from helpers import until

from device.config import CameraConfig
from device.hw.camera import CameraFeed
from device.workers import STOP_WAIT_S


async def test_a_stop_of_the_daemon_does_not_wait_for_a_camera_stuck_in_its_stop() -> None:
    """SIGTERM while someone talks with the camera on, and the camera's stop hangs (a
    wedged USB camera): the feed is done within a second and a bit, as for a start that
    hangs. It waited out the whole switch limit (10 s, the unit's TimeoutStopSec), and
    systemd killed the box with its LEDs lit."""
    frames: list[bytes] = []
    feed = CameraFeed(
        CameraConfig(source="synthetic", fps=10.0, linger_s=5.0),
        lambda jpeg, _t: frames.append(jpeg),
    )
    gate = threading.Event()
    stop = feed._source.stop

    def stuck_stop() -> None:
        gate.wait(30)
        stop()

    feed._source.stop = stuck_stop  # type: ignore[method-assign]
    try:
        feed.start_frames()
        await until(lambda: frames)
        started = time.monotonic()
        async with asyncio.timeout(15):
            await feed.shutdown()
        assert time.monotonic() - started < STOP_WAIT_S + 0.5
    finally:
        gate.set()
