"""Review of the camera: findings confirmed by a failing test first."""

from __future__ import annotations

from helpers import until
from test_camera import Frames, feed_for, synthetic


async def test_a_session_ended_before_the_camera_task_ran_leaves_the_next_one_its_frames() -> None:
    # A press and the end of its session taken in one go (a double press hands-free, a
    # fault right at a press): the camera's task is cancelled before it ever ran.
    frames = Frames()
    feed = feed_for(synthetic(), frames)
    feed.start_frames()
    await feed.aclose()
    feed.start_frames()  # the next session
    await until(lambda: len(frames.jpegs) >= 1, within=3)
    assert feed.running
    await feed.aclose()
