"""A question the box lost whole (asked and released longer ago than its ring keeps, while
it was busy) is not sent as an empty turn: the service would answer a question nobody
asked."""

from __future__ import annotations

import time
from pathlib import Path

from fakes import RealCaptureParts, config, running
from test_appliance import busy_closing, kinds, numbered

from device.audio.earcons import earcon
from device.states import Earcon


async def test_a_question_lost_whole_sends_no_empty_turn_and_the_person_hears_it_failed(
    tmp_path: Path,
) -> None:
    """Pressed and released while the last session's close hung for seconds: nothing of
    the question is left. The box opened a session and sent activityStart and activityEnd
    with no audio between, went on to "thinking", and the service answered what it made of
    an empty turn (or the reply timer ended it in the error state)."""
    async with running(tmp_path, config(audio={"earcons": True}),
                       parts_class=RealCaptureParts) as box:  # fmt: skip
        mic = await busy_closing(box)
        opened = list(box.link.opened)
        now = time.monotonic()
        box.button.on_edge("pressed", now - 6.0)
        box.button.on_edge("released", now - 5.4)
        for n in range(150):  # the last 6 s, read between turns
            mic.record(numbered(n), now - 6.0 + 0.04 * (n + 1))
        box.speaker.clear()  # the last session's earcons
        box.camera.hang.set()  # the close is over: the press and release are taken now
        await box.settle()
        assert kinds(box) == []
        assert box.link.opened == opened, "a session opened for an empty turn"
        assert box.state == "idle"
        assert bytes(box.speaker.buffered) == earcon(Earcon.ERROR), "not told it failed"
