"""A person who speaks softly, or a HAT with a low capture gain: what the box hears of them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from fakes import running

from device.states import SetupComplete

#: 40 ms of a soft voice, or a normal one through a low-gain HAT: -46 dBFS, under the
#: default `speech_dbfs` (-40) and above the default `pause_below_dbfs` (-50).
SOFT = np.full(640, 164, dtype=np.int16).tobytes()


async def test_a_soft_long_question_is_not_taken_for_a_long_press_hang_up(tmp_path: Path) -> None:
    """Push-to-talk with the defaults: a child asking softly (-46 dBFS) with the button down
    past `long_press_s` (10 s) was hung up on, the question dropped, as if the room were
    silent; the release ends their turn, as it does for a louder voice."""
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        for _ in range(20):
            box.mic.record(SOFT)
        await box.settle()
        box.appliance._on_button("long_press", time.monotonic())  # ButtonInput's timer
        await box.settle()
        assert box.state == "listening" and box.mic.forwarding and not box.link.closed
        await box.control.ask("release")
        box.mic.record(SOFT)
        await box.settle()
        sent = [item.kind for item in box.link.sent()]
        assert sent[-1] == "activity_end" and sent.count("audio") == 21
        assert box.state == "thinking"


async def test_a_long_press_in_a_room_quieter_than_a_soft_voice_still_hangs_up(
    tmp_path: Path,
) -> None:
    """Held in a room with only a fan's hum (-56 dBFS, more than 10 dB under `speech_dbfs`),
    the long press is the hang-up README promises."""
    hum = np.full(640, 52, dtype=np.int16).tobytes()
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        for _ in range(20):
            box.mic.record(hum)
        await box.settle()
        box.appliance._on_button("long_press", time.monotonic())
        await box.settle()
        assert box.state == "idle" and box.link.closed
