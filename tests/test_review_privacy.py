"""Review: the microphone and the camera reach the service only while someone talks to the
box and the LEDs say so: at a stop signal, at a hang-up over a box that thinks, and in a
conversation a hook's words opened."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from fakes import CHUNK, DeviceFreeCapture, RealCaptureParts, config, running
from helpers import until

from device.states import SetupComplete, ToolsAtWork


async def test_a_stop_signal_mid_conversation_sends_nothing_more_from_the_microphone_or_camera(
    tmp_path: Path,
) -> None:
    """SIGTERM while someone talks hands-free, the camera taking its time to switch off (a
    second or two on a Pi): the microphone went on streaming to the service, and the frame
    waiting went out, until the connection closed after the camera."""
    async with running(tmp_path, config(button={"mode": "toggle"})) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        assert box.state == "listening" and box.camera.framing
        box.camera.on_frame(b"jpeg", 0.0)  # the newest frame, waiting for an idle link
        box.camera.hang = asyncio.Event()  # switching the camera off takes a while
        box.appliance._on_stop_signal(signal.SIGTERM)
        await until(lambda: not box.control.serving)  # stopping: the camera is next
        await asyncio.sleep(0.05)
        box.mic.record(CHUNK)  # the person still talking as the box stops
        waiting = [item.kind for item in box.link.sent()]
        box.camera.hang.set()
    assert waiting == [], f"still to go to the service after the stop signal: {waiting}"


async def test_the_leds_go_idle_only_once_the_microphone_and_camera_have_stopped(
    tmp_path: Path,
) -> None:
    """Hands-free, the person presses to end while a tool works (the box thinking): the LEDs
    turned idle first, and stopping the thinking pattern yields to the loop, where the
    microphone's chunks and the camera's frames still went to the service; only then did
    the capture stop."""
    async with running(tmp_path, config(button={"mode": "toggle"})) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ToolsAtWork, calls=1)
        await box.settle()
        assert box.state == "thinking" and box.mic.forwarding and box.camera.framing
        leds = box.appliance.leds
        assert leds is not None
        show = leds.show
        seen: dict[str, object] = {}

        async def show_and_look(state: str) -> None:
            if state == "idle":  # what the microphone records while the pattern changes
                box.mic.record(CHUNK)
                seen["sent"] = [item.kind for item in box.link.sent()]
                seen["frames"] = box.camera.framing
            await show(state)

        leds.show = show_and_look  # type: ignore[method-assign]
        await box.ctl("press")
        assert box.state == "idle"
    assert seen == {"sent": [], "frames": False}, seen


async def test_a_hooks_words_opening_a_hands_free_conversation_send_nothing_said_before_them(
    tmp_path: Path,
) -> None:
    """`ctl text` opens a hands-free conversation nobody asked for by a press: the capture's
    pre-roll (up to `preroll_ms`, a second at most) of what the room said before the words
    went to the service with them, though no button's edge was there to reach back from."""
    async with running(
        tmp_path, config(button={"mode": "toggle"}), parts_class=RealCaptureParts
    ) as box:
        mic = box.mic
        assert isinstance(mic, DeviceFreeCapture)
        now = time.monotonic()
        for n in range(10):  # the room talking, up to the moment the hook speaks
            mic.record(CHUNK, now - 0.4 + 0.04 * (n + 1))
        await box.settle()
        assert (await box.ctl("text", text="The washing machine is done."))["ok"]
        assert [item.kind for item in box.link.sent()] == ["text"]
