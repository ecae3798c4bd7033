"""No picture taken after the button came up goes to the service, however late the loop
gets to the release."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fakes import Box, running
from helpers import until

from device.outbox import Item
from device.states import SetupComplete


async def test_a_frame_taken_after_the_release_while_the_loop_was_held_up_is_not_sent(
    tmp_path: Path,
) -> None:
    """A short question asked while the box connected, the loop held up as the button came
    up (the connection's own setup, the collector): the release's edge, setupComplete and
    the camera's next frame wait together. The state change yields to the sender, and the
    frame taken after the person let go went out: a picture of the room with nobody asking.
    The camera feed stops delivering frames once stop_frames() is called, as the fake's
    `framing` says."""
    async with running(tmp_path) as box:
        await box.ctl("press")
        assert box.camera.framing and box.state == "connecting"
        sent: list[Item] = []

        async def sender() -> None:  # the link's: it drains the outbox once connected
            while True:
                sent.append(await box.link.outbox.get())

        draining = asyncio.create_task(sender())
        try:
            await until(lambda: not len(box.link.outbox))
            released = time.monotonic()
            loop = asyncio.get_running_loop()
            loop.call_soon(box.link.deliver, SetupComplete)
            loop.call_soon(box.button.on_edge, "released", released)
            loop.call_soon(_frame, box, b"after the release", released + 0.05)
            await asyncio.sleep(0)  # the three run: the heartbeat goes behind them
            await box.settle()
            await until(lambda: not len(box.link.outbox))
        finally:
            draining.cancel()
        assert box.state == "thinking"
        assert "activity_end" in [item.kind for item in sent]
        assert b"after the release" not in [item.data for item in sent]


def _frame(box: Box, jpeg: bytes, taken: float) -> None:
    """The camera feed's delivery of a frame it took: only while frames are wanted (it
    looks right before it hands one on)."""
    if box.camera.framing:
        box.camera.on_frame(jpeg, taken)
