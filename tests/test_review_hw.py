"""Review of the Pi-only code paths against the real picamera2 and gpiozero behaviour.

picamera2 runs `stop()` as a job of its own event loop, queued behind every job
already waiting there (Picamera2.stop -> dispatch_functions([stop_], wait=True)):
a capture that never completes (the ribbon cable dislodged, a USB camera
unplugged) holds the stop back for good. picamera2's `cancel_all_and_flush()`
exists for exactly that ("tidying up after an operation has unexpectedly timed
out ... so that the camera can be closed"). The fake below adds that ordering to
test_camera's fake.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable

import pytest
from helpers import until
from test_camera import FakeCameraRig, FakeJob, Frames, fake_picamera2_class, feed_for, picamera2

#: The fake's stop gives up this long after the jobs ahead of it stay pending (the real
#: one waits for ever): only so that no test thread outlives the test run.
QUEUED_STOP_GIVES_UP_S = 3.0


def queueing_picamera2_class(rig: FakeCameraRig) -> type:
    """test_camera's fake Picamera2, with picamera2's job order: stop() waits for the
    captures queued before it, and cancel_all_and_flush() cancels them."""

    class Picamera2(fake_picamera2_class(rig)):  # type: ignore[misc]
        def __init__(self, camera_num: int = 0) -> None:
            super().__init__(camera_num)
            self._jobs: list[FakeJob] = []

        def capture_array(
            self,
            name: str = "main",
            wait: bool | None = None,
            signal_function: Callable[[FakeJob], None] | None = None,
        ) -> FakeJob:
            job = super().capture_array(name, wait, signal_function)
            self._jobs.append(job)
            return job

        def cancel_all_and_flush(self) -> None:
            rig.calls.append("cancel_all_and_flush")
            for job in self._jobs:
                job.future.cancel()
            self._jobs = []

        def stop(self) -> None:
            deadline = time.monotonic() + QUEUED_STOP_GIVES_UP_S
            while any(not job.future.done() for job in self._jobs):
                if time.monotonic() > deadline:
                    raise RuntimeError("stop stayed queued behind a capture")
                time.sleep(0.01)
            super().stop()

    return Picamera2


@pytest.fixture
def queueing_camera(monkeypatch: pytest.MonkeyPatch) -> FakeCameraRig:
    rig = FakeCameraRig()
    module = types.ModuleType("picamera2")
    module.Picamera2 = queueing_picamera2_class(rig)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return rig


async def test_a_camera_that_goes_silent_is_switched_off_and_works_next_session(
    queueing_camera: FakeCameraRig,
) -> None:
    """The ribbon cable slips mid-question: the camera is released at once (not held by
    a stop stuck behind the lost capture), and once it delivers again the next
    conversation has video."""
    queueing_camera.hang_after = 1
    frames = Frames()
    feed = feed_for(picamera2(), frames, capture_timeout_s=0.2, switch_timeout_s=1.0)
    feed.start_frames()
    await until(lambda: frames.failures)
    await until(lambda: "close" in queueing_camera.names(), within=1.0)
    assert not feed.running
    await feed.aclose()

    queueing_camera.hang_after = None  # cable seated again
    feed.start_frames()
    await until(lambda: len(frames.jpegs) >= 2, within=2.0)
    await feed.aclose()
    assert queueing_camera.names()[-2:] == ["stop", "close"]


async def test_capture_still_from_a_silent_camera_releases_it(
    queueing_camera: FakeCameraRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`doctor camera` with a camera that delivers nothing says so within its capture
    timeout and leaves the camera closed."""
    from device.hw import camera as camera_module

    monkeypatch.setattr(camera_module, "CAPTURE_TIMEOUT_S", 0.2)
    queueing_camera.hang_after = 0
    started = time.monotonic()
    with pytest.raises(camera_module.CameraError, match="no frame"):
        await camera_module.capture_still(picamera2())
    assert time.monotonic() - started < 1.5
    assert queueing_camera.names()[-2:] == ["stop", "close"]


async def test_a_hang_up_right_after_the_camera_went_silent_is_not_held_up(
    queueing_camera: FakeCameraRig,
) -> None:
    """The camera stalls and the person hangs up: the failure is said within the capture
    timeout, and the hang-up (which waits for the camera to be dark) is not held up
    for the camera's switch timeout, with the box deaf to the button meanwhile."""
    queueing_camera.hang_after = 1
    frames = Frames()
    feed = feed_for(picamera2(), frames, capture_timeout_s=0.2)
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await until(lambda: frames.failures, within=1.0)
    started = time.monotonic()
    await feed.aclose()
    assert time.monotonic() - started < 0.5
