"""Review of async hygiene at shutdown: what a SIGTERM must not wait for, and what
must not be left behind."""

from __future__ import annotations

import asyncio
import threading
import time

from helpers import until

from device.config import CameraConfig, Config
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


class Hiccup:
    """One LED that fails the frames numbered in `fail` (0-based) once each, as a pin
    write or an SPI transfer may when the bus is busy, and keeps the last frame shown."""

    pixels = 1

    def __init__(self, *fail: int) -> None:
        self.fail = set(fail)
        self.tries = 0
        self.shown: tuple[float, float, float] | None = None
        self.closed = False

    def show(self, frame: tuple[tuple[float, float, float], ...]) -> None:
        self.tries += 1
        if self.tries - 1 in self.fail:
            raise OSError("Remote I/O error")
        (self.shown,) = frame

    def close(self) -> None:
        self.closed = True


DARK = (0.0, 0.0, 0.0)


async def test_leds_that_fail_once_as_the_box_goes_idle_do_not_stay_lit() -> None:
    """A driver that fails one frame (the idle one) once: the LEDs still go dark soon
    after. They stayed blue, "listening", for as long as the box then sat idle."""
    from device.hw.leds import LedAnimator

    driver = Hiccup(1)
    leds = LedAnimator(driver)
    await leds.show("listening")
    assert driver.shown == (0.0, 0.0, 1.0)
    await leds.show("idle")  # this frame fails
    await until(lambda: driver.shown == DARK, within=3)
    await leds.aclose()


async def test_leds_that_fail_once_at_the_stop_still_end_dark() -> None:
    """SIGTERM while listening, and the dark frame fails once: the LEDs end off all the
    same; they stayed lit after the daemon had gone."""
    from device.hw.leds import LedAnimator

    driver = Hiccup(1)
    leds = LedAnimator(driver)
    await leds.show("listening")
    await leds.aclose()
    assert driver.shown == DARK and driver.closed


async def test_the_doctor_fails_a_microphone_whose_driver_hangs_in_its_open(
    tmp_path, monkeypatch
) -> None:
    """`doctor mic` on a wedged USB card (the open never returns): a FAIL line within
    the daemon's own limit for a call into the driver, not a doctor that hangs, its
    timeout never firing because the open held the event loop."""
    import device.doctor.audio
    from device.audio.capture import Capture
    from device.doctor.audio import check_mic
    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options, Status

    driver = threading.Event()
    release = threading.Timer(12, driver.set)  # a hang in this test ends, to fail it
    release.start()

    def wedged(self: Capture, loop: object = None) -> None:
        driver.wait()
        raise OSError("the device went")

    monkeypatch.setattr(Capture, "start", wedged)
    monkeypatch.setattr(device.doctor.audio, "CALL_TIMEOUT_S", 1.0, raising=False)
    ctx = Context(Config(), Options(mic_seconds=0.5), Progress(spinner=False))
    started = time.monotonic()
    try:
        result = await check_mic(ctx)
    finally:
        release.cancel()
        driver.set()
    assert time.monotonic() - started < 3
    assert result.status is Status.FAIL
    assert result.measured == "opening the input device did not return in 1 s"
