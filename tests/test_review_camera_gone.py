"""A camera that stays gone, as the journal tells it over a month of presses."""

from __future__ import annotations

import logging

import pytest
from helpers import until
from test_camera import (
    Frames,
    camera_records,
    fake_picamera2_class,
    feed_for,
    installed_picamera2,
    picamera2,
)

from device import logs


async def test_a_camera_that_stays_gone_is_said_once_not_at_each_press(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its cable pulled for good: each conversation tried it again and put "camera off
    until the session ends" in the journal, a line each press (a month of them buries
    everything else). One line while it stays gone, with the count; once it worked again,
    a new failure is news."""
    # Not the minute between two lines: while it lasts, it is said once however long.
    monkeypatch.setattr(logs.SaidOnce, "EVERY_S", 0.0)
    rig = installed_picamera2(monkeypatch, fake_picamera2_class)
    rig.fail_open = True
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    for press in range(1, 6):
        feed.start_frames()
        await until(lambda: len(frames.failures) == press)  # noqa: B023
        await feed.aclose()  # the conversation ends; the next one tries again
    assert camera_records(caplog) == [(logging.WARNING, "failed")]

    rig.fail_open = False  # plugged in again
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await feed.aclose()
    rig.fail_open = True
    feed.start_frames()
    await until(lambda: len(frames.failures) == 6)
    await feed.shutdown()
    assert camera_records(caplog) == [(logging.WARNING, "failed")] * 2
