"""LEDs that opened, then fail their writes in the running service: what `ctl status` and
the doctor beside it say (review of stop 55)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakes import running
from helpers import until
from test_leds_opened_late import LedsBusyAtBoot, Unseated

import device.parts
from device.doctor.daemon import summary_lines
from device.doctor.result import Status
from device.doctor.runner import format_result, held_by_the_service


async def test_leds_that_stopped_showing_are_not_said_to_be_unopened_pins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open LEDs whose writes fail are tried again every frame, a second apart: `ctl
    status` said they were tried "less often the longer it lasts", and the doctor beside
    the service told the owner to correct [leds] kind and pins or free pins another
    program holds, "once they open": the pins are open, and nobody else holds them."""
    leds = Unseated()
    monkeypatch.setattr(device.parts, "open_leds", lambda _cfg: leds)
    async with running(tmp_path, parts_class=LedsBusyAtBoot) as box:
        await until(lambda: leds.frames)
        leds.failing = True
        box.button.on_edge("pressed", asyncio.get_running_loop().time())
        await until(lambda: box.state == "connecting")
        await box.settle()
        status = box.appliance.status()
        line = held_by_the_service("leds", status, box.appliance.cfg)
        assert line.status is Status.FAIL, format_result(line)
        fix = line.fix or ""
        assert "free its pins" not in fix and "once they open" not in fix, fix
        said = next(text for text in summary_lines(status) if text.startswith("leds:"))
        assert "less often" not in said, said
