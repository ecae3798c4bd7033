"""What the journal says of a broken frame skipped as the person let go."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from helpers import until
from test_camera import Frames, feed_for, synthetic

from device.hw import camera
from device.hw.camera import CameraFeed
from device.hw.camera_sources import UnusableFrame


class BreaksAtTheRelease:
    """A USB camera whose first frame is whole and whose second comes cut short, taken
    as the button comes up (the release arrives while it is being taken)."""

    feed: CameraFeed

    def __init__(self) -> None:
        self.grabs = 0

    def start(self) -> str:
        return "a camera that breaks at the release"

    async def grab(self) -> tuple[np.ndarray, float]:
        self.grabs += 1
        if self.grabs == 1:
            return np.zeros((16, 16, 3), dtype=np.uint8), time.monotonic()
        self.feed.stop_frames()  # the release
        raise UnusableFrame("image file is truncated (2 bytes not processed)")

    def stop(self) -> None:
        pass


async def test_a_frame_skipped_at_the_release_is_not_said_to_be_followed_by_the_next(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal said "skipped 1 camera frame(s) so far, the next one used", then "camera
    off": no next frame was taken (the turn was over), and the owner looked for a frame
    that never came."""
    caplog.set_level(logging.INFO, logger="device.hw")
    source = BreaksAtTheRelease()
    monkeypatch.setattr(camera, "make_source", lambda *_: source)
    frames = Frames()
    feed = source.feed = feed_for(synthetic(linger_s=0.0), frames)
    feed.start_frames()
    try:
        await until(lambda: source.grabs >= 2 and not feed.running, within=3)
    finally:
        await feed.aclose()
    assert len(frames.jpegs) == 1 and source.grabs == 2
    [skipped] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "skipped 1 camera frame(s)" in skipped and "truncated" in skipped, skipped
    assert "the next one used" not in skipped, skipped
