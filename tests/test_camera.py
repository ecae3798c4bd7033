"""The camera feed: paced JPEG frames while wanted, the camera on only around them.

The synthetic source runs for real on the event loop. The picamera2 code path
runs against a fake `Picamera2` put in `sys.modules["picamera2"]` that records
what it is asked (configuration, controls, start, stop, close) and delivers
arrays of the configured stream from its own thread, as picamera2 does.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simplejpeg
from fakes import (
    FakeParts,
    config,
    presses_in_an_outage,
    running,
)
from helpers import daemon_saying, mock_pins, open_descriptors, until
from test_doctor import RUNNING, config_file

from device import logs, tasks
from device.config import CameraConfig
from device.doctor.camera import check_camera
from device.doctor.daemon import summary_lines
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Result, Status
from device.doctor.runner import exit_code, held_by_the_service, run_checks
from device.hw import camera as camera_module
from device.hw.camera import CameraError, CameraFeed, capture_still
from device.hw.camera_pattern import NumberedBars, read_frame_number
from device.hw.camera_sources import (
    Picamera2Source,
    UnusableFrame,
    centred_square_crop,
    choose_sensor_mode,
    to_square,
)
from device.workers import STOP_WAIT_S

RED, GREEN = (200, 30, 30), (30, 200, 30)


@dataclass
class Frames:
    """What on_frame and on_failure received."""

    jpegs: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def on_frame(self, jpeg: bytes, taken: float) -> None:
        self.jpegs.append(jpeg)
        self.times.append(taken)
        self.arrived.append(time.monotonic())

    def numbers(self) -> list[int]:
        return [read_frame_number(simplejpeg.decode_jpeg(j)) for j in self.jpegs]


def synthetic(**settings: Any) -> CameraConfig:
    return CameraConfig(**{"source": "synthetic", "fps": 4.0, "linger_s": 0.5, **settings})


def feed_for(cfg: CameraConfig, frames: Frames, **kwargs: Any) -> CameraFeed:
    return CameraFeed(cfg, frames.on_frame, frames.failures.append, **kwargs)


def camera_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.LIVE_CAMERA) for r in caplog.records if hasattr(r, "LIVE_CAMERA")
    ]


# --- the synthetic source on a real loop --------------------------------------------


async def test_first_frame_comes_at_the_press_not_a_period_later() -> None:
    frames = Frames()
    feed = feed_for(synthetic(fps=0.2), frames)  # a tick every 5 s
    pressed = time.monotonic()
    feed.start_frames()
    await until(lambda: frames.jpegs)
    assert frames.arrived[0] - pressed < 2.5
    await feed.aclose()


async def test_frames_are_square_jpegs_numbered_consecutively_and_evenly_paced() -> None:
    frames = Frames()
    period = 0.2  # short for a quick test, long against a loaded machine's jitter
    feed = feed_for(synthetic(fps=1 / period, size=320, quality=60), frames)
    feed.start_frames()
    await until(lambda: len(frames.jpegs) >= 5)
    await feed.aclose()

    for jpeg in frames.jpegs:
        assert jpeg[:2] == b"\xff\xd8"
        assert simplejpeg.decode_jpeg_header(jpeg)[:2] == (320, 320)
    assert frames.numbers()[:5] == [1, 2, 3, 4, 5]
    gaps = [b - a for a, b in zip(frames.times, frames.times[1:], strict=False)]
    assert min(gaps) > 0.5 * period  # never two frames in one tick
    assert statistics.median(gaps) == pytest.approx(period, rel=0.2)


async def test_the_pattern_moves_from_frame_to_frame() -> None:
    pattern = NumberedBars(256)
    first, second = pattern.draw(1), pattern.draw(2)
    assert not np.array_equal(first[:40], second[:40])  # the bars above the number


async def test_stop_frames_stops_frames_at_once_and_the_camera_after_linger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="device.hw.camera")
    frames = Frames()
    stopped: list[float] = []
    feed: CameraFeed

    def on_frame(jpeg: bytes, taken: float) -> None:
        frames.on_frame(jpeg, taken)
        if len(frames.jpegs) == 2:
            feed.stop_frames()  # the release, right as frame 2 goes out
            stopped.append(time.monotonic())

    feed = CameraFeed(synthetic(fps=10.0, linger_s=0.2), on_frame)
    feed.start_frames()
    await until(lambda: stopped)
    assert feed.running
    await until(lambda: not feed.running)
    assert time.monotonic() - stopped[0] >= 0.2
    assert frames.numbers() == [1, 2]
    assert camera_records(caplog) == [(logging.INFO, "on"), (logging.INFO, "off")]
    await feed.aclose()


async def test_start_frames_during_linger_reuses_the_running_camera() -> None:
    frames = Frames()
    feed: CameraFeed

    def on_frame(jpeg: bytes, taken: float) -> None:
        frames.on_frame(jpeg, taken)
        feed.stop_frames()  # each press is short

    feed = CameraFeed(synthetic(fps=0.2, linger_s=30), on_frame)  # a tick every 5 s
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await asyncio.sleep(0.1)  # the camera lingers, no frames
    assert len(frames.jpegs) == 1 and feed.running
    again = time.monotonic()
    feed.start_frames()
    feed.start_frames()  # idempotent
    await until(lambda: len(frames.jpegs) == 2)
    await feed.aclose()
    assert frames.arrived[1] - again < 2.5  # the follow-up's first frame at once, off the grid
    assert frames.numbers() == [1, 2]  # the same camera run: the numbering goes on


async def test_aclose_switches_off_at_once_leaves_no_task_and_can_start_again() -> None:
    frames = Frames()
    feed = feed_for(synthetic(linger_s=30), frames)
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await feed.aclose()
    assert not feed.running
    assert asyncio.all_tasks() == {asyncio.current_task()}
    count = len(frames.jpegs)

    feed.start_frames()
    await until(lambda: len(frames.jpegs) > count)
    await feed.aclose()
    assert frames.numbers()[count] == 1  # a new camera run


async def test_a_disabled_camera_never_starts() -> None:
    frames = Frames()
    feed = feed_for(synthetic(enabled=False), frames)
    feed.start_frames()
    assert not feed.running
    assert asyncio.all_tasks() == {asyncio.current_task()}
    await feed.aclose()
    with pytest.raises(CameraError, match="enabled = false"):
        await capture_still(synthetic(enabled=False))


# --- the LED that shows the camera is on ----------------------------------------------


@pytest.fixture
def pins() -> Iterator[Callable[[int], Any]]:
    with mock_pins() as factory:
        yield factory.pin


async def test_the_led_is_lit_exactly_while_the_camera_runs(pins) -> None:
    frames = Frames()
    lit_at_frame: list[bool] = []
    feed: CameraFeed

    def on_frame(jpeg: bytes, taken: float) -> None:
        frames.on_frame(jpeg, taken)
        lit_at_frame.append(pins(21).state)
        feed.stop_frames()

    feed = CameraFeed(synthetic(led_pin=21, linger_s=0.05), on_frame)
    assert not pins(21).state
    feed.start_frames()
    await until(lambda: frames.jpegs and not feed.running)
    assert lit_at_frame == [True]
    assert not pins(21).state
    feed.start_frames()
    await until(lambda: len(frames.jpegs) == 2)
    await feed.aclose()
    assert lit_at_frame == [True, True]
    assert not pins(21).state


async def test_without_its_led_the_camera_stays_off(pins) -> None:
    from gpiozero import LED

    taken = LED(21)  # someone else holds the pin
    frames = Frames()
    feed = feed_for(synthetic(led_pin=21), frames)
    feed.start_frames()
    await until(lambda: frames.failures)
    assert "led_pin 21" in frames.failures[0]
    assert not feed.running and not frames.jpegs
    await feed.aclose()
    taken.close()


# --- picamera2, against a fake Picamera2 ----------------------------------------------

IMX708_MODES = [
    {"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (1536, 864),
     "crop_limits": (768, 432, 3072, 1728)},
    {"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (2304, 1296),
     "crop_limits": (0, 0, 4608, 2592)},
    {"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (4608, 2592),
     "crop_limits": (0, 0, 4608, 2592)},
]
USB_MODES = [{"format": "MJPEG"}, {"format": "YUYV"}]


@dataclass
class FakeCameraRig:
    """Behaviour of the fake camera and what it was asked to do."""

    modes: list[dict[str, Any]] = field(default_factory=lambda: IMX708_MODES)
    usb_size: tuple[int, int] = (640, 480)  # what a USB camera "adjusts" any size to
    fail_open: bool = False
    start_gate: threading.Event | None = None  # set: start returns (a stuck camera till then)
    fail_start: bool = False  # start raises (after its gate)
    stop_gate: threading.Event | None = None  # set: stop returns (a stuck camera till then)
    capture_delay: float = 0.0
    capture_gate: threading.Event | None = None  # set: captures complete (in flight till then)
    fail_capture: int | None = None  # this capture (1-based) raises
    hang_after: int | None = None  # captures after this many never complete
    calls: list[Any] = field(default_factory=list)
    captures: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> list[str]:
        return [c if isinstance(c, str) else c[0] for c in self.calls]

    def call(self, name: str) -> Any:
        return next(c[1] for c in self.calls if not isinstance(c, str) and c[0] == name)

    @property
    def usb(self) -> bool:
        return not any("size" in m for m in self.modes)

    def picture(self, config: dict[str, Any]) -> np.ndarray:
        """A red scene; a USB picture has green bands left and right that must be cropped."""
        width, height = config["main"]["size"]
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[:] = RED
        band = (width - height) // 2
        if band > 0:
            frame[:, :band] = GREEN
            frame[:, width - band :] = GREEN
        # picamera2's gotcha: "RGB888" arrays are B, G, R; "BGR888" (and MJPEG) are R, G, B.
        return frame[..., ::-1].copy() if config["main"]["format"] == "RGB888" else frame


class FakeJob:
    def __init__(self) -> None:
        self.future: Future[np.ndarray] = Future()


def fake_picamera2_class(rig: FakeCameraRig) -> type:
    class Picamera2:
        def __init__(self, camera_num: int = 0) -> None:
            if rig.fail_open:
                raise RuntimeError("Camera __init__ sequence did not complete.")
            rig.calls.append("open")
            self._config: dict[str, Any] | None = None
            self._started = False

        @property
        def sensor_modes(self) -> list[dict[str, Any]]:
            rig.calls.append("sensor_modes")
            return [dict(m) for m in rig.modes]

        @property
        def camera_properties(self) -> dict[str, Any]:
            if rig.usb:
                return {"Model": "USB webcam"}
            raw = (self._config or {}).get("raw") or {}
            mode = next((m for m in rig.modes if m["size"] == raw.get("size")), rig.modes[-1])
            return {"Model": "imx708", "PixelArraySize": (4608, 2592),
                    "ScalerCropMaximum": mode["crop_limits"]}

        @property
        def camera_controls(self) -> dict[str, Any]:
            if rig.usb:
                return {"Brightness": (-1.0, 1.0, 0.0)}
            return {"ScalerCrop": ((0, 0, 64, 64), (0, 0, 4608, 2592), (0, 0, 4608, 2592)),
                    "FrameDurationLimits": (33333, 120000000, 33333)}

        def create_preview_configuration(
            self, main: dict[str, Any] | None = None, lores: Any = None, raw: Any = None,
            buffer_count: int = 4, controls: dict[str, Any] | None = None,
            display: str | None = "main", encode: str | None = "main", **other: Any,
        ) -> dict[str, Any]:
            return {"use_case": "preview", "main": dict(main or {}), "lores": lores,
                    "raw": None if rig.usb else raw, "buffer_count": buffer_count,
                    "controls": dict(controls or {}), "display": display, "encode": encode}

        def configure(self, config: dict[str, Any]) -> None:
            rig.calls.append(("configure", config))
            self._config = {**config, "main": dict(config["main"])}
            if rig.usb:  # libcamera adjusts the size to one the camera has
                self._config["main"]["size"] = rig.usb_size

        def camera_configuration(self) -> dict[str, Any] | None:
            return self._config

        def set_controls(self, controls: dict[str, Any]) -> None:
            rig.calls.append(("set_controls", dict(controls)))

        def start(self) -> None:
            if rig.start_gate is not None:
                rig.start_gate.wait()
            if rig.fail_start:
                raise RuntimeError("Camera frontend has timed out!")
            self._started = True
            rig.calls.append("start")

        def capture_array(
            self, name: str = "main", wait: bool | None = None,
            signal_function: Callable[[FakeJob], None] | None = None,
        ) -> FakeJob:
            assert self._started and wait is False and signal_function is not None
            job = FakeJob()
            with rig.lock:
                rig.captures += 1
                number = rig.captures
                rig.in_flight += 1
                rig.most_in_flight = max(rig.most_in_flight, rig.in_flight)
            if rig.hang_after is not None and number > rig.hang_after:
                return job

            def complete() -> None:  # the camera's own thread
                time.sleep(rig.capture_delay)
                if rig.capture_gate is not None:
                    rig.capture_gate.wait()
                with rig.lock:
                    rig.in_flight -= 1
                if number == rig.fail_capture:
                    job.future.set_exception(RuntimeError("Dequeue timer of 1000ms expired!"))
                else:
                    job.future.set_result(rig.picture(self._config or {}))
                signal_function(job)

            threading.Thread(target=complete, daemon=True).start()
            return job

        def wait(self, job: FakeJob) -> np.ndarray:
            return job.future.result()

        def cancel_all_and_flush(self) -> None:
            """picamera2's: the jobs still queued are dropped (none here waits in line)."""

        def stop(self) -> None:
            if rig.stop_gate is not None:
                rig.stop_gate.wait()
            rig.calls.append("stop")
            self._started = False

        def close(self) -> None:
            rig.calls.append("close")

    return Picamera2


@pytest.fixture
def camera(monkeypatch: pytest.MonkeyPatch) -> FakeCameraRig:
    return installed_picamera2(monkeypatch, fake_picamera2_class)


def installed_picamera2(
    monkeypatch: pytest.MonkeyPatch, make_class: Callable[[FakeCameraRig], type]
) -> FakeCameraRig:
    """A fake picamera2 module whose Picamera2 is `make_class`'s, and the rig it reports to."""
    rig = FakeCameraRig()
    module = types.ModuleType("picamera2")
    module.Picamera2 = make_class(rig)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return rig


def picamera2(**settings: Any) -> CameraConfig:
    return CameraConfig(**{"source": "picamera2", "fps": 10.0, "linger_s": 0.1, **settings})


def mean_colour(jpeg: bytes, where: tuple[slice, slice] = (slice(None), slice(None))) -> tuple:
    return tuple(int(c) for c in simplejpeg.decode_jpeg(jpeg)[where].mean(axis=(0, 1)))


async def test_picamera2_asks_for_a_square_stream_and_a_centred_square_crop(camera) -> None:
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await feed.aclose()

    config = camera.call("configure")
    assert config["main"] == {"format": "BGR888", "size": (768, 768)}
    assert config["raw"] == {"format": "SRGGB10_CSI2P", "size": (2304, 1296)}  # widest view
    assert config["controls"]["FrameDurationLimits"] == (33_333, 100_000)
    # The largest square in the 4608x2592 sensor area, in its middle.
    assert camera.call("set_controls") == {"ScalerCrop": (1008, 0, 2592, 2592)}
    assert simplejpeg.decode_jpeg_header(frames.jpegs[0])[:2] == (768, 768)
    red, green, blue = mean_colour(frames.jpegs[0])
    assert red > 150 and green < 80 and blue < 80  # R, G, B in the right order


async def test_picamera2_start_and_stop_follow_the_frames(camera) -> None:
    frames = Frames()
    feed: CameraFeed

    def on_frame(jpeg: bytes, taken: float) -> None:
        frames.on_frame(jpeg, taken)
        if len(frames.jpegs) in (2, 3):
            feed.stop_frames()

    feed = CameraFeed(picamera2(linger_s=0.2), on_frame)
    feed.start_frames()
    await until(lambda: len(frames.jpegs) == 2)
    assert camera.names()[:5] == ["open", "sensor_modes", "configure", "set_controls", "start"]
    feed.start_frames()  # a follow-up during the linger: the same camera
    await until(lambda: len(frames.jpegs) == 3 and not feed.running)  # then it lingers out
    assert camera.names().count("start") == 1
    assert camera.names()[-2:] == ["stop", "close"]

    feed.start_frames()  # the next press starts it again, without listing modes again
    await until(lambda: len(frames.jpegs) == 4)
    assert camera.names().count("start") == 2 and camera.names().count("sensor_modes") == 1
    await feed.aclose()  # the session closes: off at once
    assert camera.names()[-2:] == ["stop", "close"] and not feed.running


async def test_aclose_while_the_camera_is_starting_leaves_it_off(
    camera, pins, caplog: pytest.LogCaptureFixture
) -> None:
    """And says so: `ctl status` said the camera was off while it started (its light on),
    and the journal said neither "on" nor "off" of a camera that came on as it closed."""
    caplog.set_level(logging.INFO, logger="device.hw.camera")
    camera.start_gate = threading.Event()
    frames = Frames()
    feed = feed_for(picamera2(led_pin=21), frames)
    try:
        feed.start_frames()
        await until(lambda: "configure" in camera.names())
        assert feed.running and pins(21).state
        closing = asyncio.create_task(feed.aclose())
        await asyncio.sleep(0.05)
        assert not closing.done()  # it waits for the start, which cannot be interrupted
        assert feed.running and pins(21).state
    finally:
        camera.start_gate.set()
    await closing
    assert camera.names()[-3:] == ["start", "stop", "close"]
    assert not feed.running and not frames.jpegs and not pins(21).state
    assert camera_records(caplog) == [(logging.INFO, "off")]


async def test_a_stop_of_the_daemon_as_a_session_closes_a_starting_camera_switches_it_off(
    camera, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while the session's close waited for the camera's start: the stop cancelled
    that wait a second time, the camera was called stuck at once and never switched off
    (the start came back after "stopped"), though the start returned within STOP_WAIT_S."""
    camera.start_gate = threading.Event()
    feed = feed_for(picamera2(), Frames())
    try:
        feed.start_frames()
        await until(lambda: "configure" in camera.names())
        session_close = asyncio.create_task(feed.aclose())
        await asyncio.sleep(0.05)
        session_close.cancel()  # the state machine's task, cancelled by the stop
        stopping = asyncio.create_task(feed.shutdown())
        await asyncio.sleep(0.3)
    finally:
        camera.start_gate.set()  # well within STOP_WAIT_S
    async with asyncio.timeout(STOP_WAIT_S + 1):
        await stopping
    assert camera.names()[-3:] == ["start", "stop", "close"]
    assert "stuck" not in [level_and_what[1] for level_and_what in camera_records(caplog)]
    assert not feed.running


async def test_a_stop_of_the_daemon_does_not_wait_for_a_start_stuck_in_the_camera(
    camera,
) -> None:
    """SIGTERM while the camera's start hangs: the feed is done within a second and a
    bit (the switch's own limit, 10 s, is where systemd kills the box); the process's end
    switches the camera off."""
    camera.start_gate = threading.Event()
    feed = feed_for(picamera2(), Frames())
    try:
        feed.start_frames()
        await until(lambda: "configure" in camera.names())
        started = time.monotonic()
        async with asyncio.timeout(3):
            await feed.shutdown()
        assert time.monotonic() - started < STOP_WAIT_S + 0.5
        left = [t.get_coro() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert [c.__name__ for c in left] == ["to_thread"], "only the stuck call itself"
    finally:
        camera.start_gate.set()


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


#: The switch limit of the two tests of a hang-up while the camera is still starting.
SWITCH_S = 1.0


async def hang_up_while_starting(start_s: float, stop: Callable[[], object]) -> CameraFeed:
    """A synthetic camera whose start takes `start_s` (within the limit) and whose stop
    first runs `stop`: started, and closed (a hang-up) while its start is under way."""
    feed = CameraFeed(
        CameraConfig(source="synthetic", linger_s=5.0), lambda *_: None, switch_timeout_s=SWITCH_S
    )
    start, real_stop = feed._source.start, feed._source.stop

    def slow_start() -> str:
        time.sleep(start_s)
        return start()

    def stopping() -> None:
        stop()
        real_stop()

    feed._source.start = slow_start  # type: ignore[method-assign]
    feed._source.stop = stopping  # type: ignore[method-assign]
    feed.start_frames()
    await asyncio.sleep(0.05)  # the start is under way
    async with asyncio.timeout(5):
        await feed.aclose()
    return feed


def stuck_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "LIVE_CAMERA", "") == "stuck"]


async def test_a_hang_up_as_the_camera_starts_slowly_then_sticks_waits_one_switch_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hang-up while the camera is still starting, slowly but within its limit, and its
    stop then hangs: the close waited for the start, then gave the stop a limit of its own.
    The state machine waits for the close, and two limits in a row (20 s) with the 15 s
    between heartbeats outlasted WatchdogSec (30 s): systemd killed a box whose only fault
    was its camera. The stop gets what is left of the start's limit."""
    gate = threading.Event()
    began = time.monotonic()
    try:
        feed = await hang_up_while_starting(SWITCH_S * 0.9, lambda: gate.wait(30))
        took = time.monotonic() - began - 0.05
    finally:
        gate.set()
    assert took < 1.5 * SWITCH_S, f"the close took {took:.2f} s, with a limit of {SWITCH_S} s"
    stuck = stuck_lines(caplog)
    assert len(stuck) == 1 and "stuck in its stop" in stuck[0], stuck
    await feed.shutdown()


async def test_a_camera_that_starts_late_in_its_limit_then_stops_is_not_called_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hang-up while the camera starts, slowly but within its limit (a cold sensor), and
    a stop that then takes as long as a camera's stop does: the stop must not be left
    with no time at all, or the journal says the camera is stuck (it may be on, its light
    stays on) for a camera that works."""
    caplog.set_level(logging.INFO, "device.hw.camera")
    feed = await hang_up_while_starting(SWITCH_S * 0.97, lambda: time.sleep(0.1))
    assert not stuck_lines(caplog)
    await feed.shutdown()


async def test_a_camera_whose_start_never_returns_fails_the_part_not_the_box(
    camera, caplog: pytest.LogCaptureFixture
) -> None:
    camera.start_gate = threading.Event()
    frames = Frames()
    # Short, yet no start or stop that is merely slow on a busy machine gets near it.
    feed = feed_for(picamera2(), frames, switch_timeout_s=0.2)
    try:
        feed.start_frames()
        await until(lambda: frames.failures, within=3)
        assert "did not answer in 0.2 s" in frames.failures[0]
        async with asyncio.timeout(1):
            await feed.aclose()  # the session ends at once, camera or no camera
        feed.start_frames()  # the next press: audio only, no second call into the stuck camera
        await asyncio.sleep(0.2)
        assert camera.names().count("open") == 1 and len(frames.failures) == 1
    finally:
        camera.start_gate.set()  # the stuck start returns at last: the camera is on ...
    await until(lambda: camera.names()[-2:] == ["stop", "close"])  # ... and switched off
    feed.start_frames()  # and the camera works again
    await until(lambda: frames.jpegs, within=3)
    await feed.shutdown()
    assert camera.names()[-2:] == ["stop", "close"]


async def test_a_start_stuck_then_failing_puts_no_bug_in_the_journal(
    camera, caplog: pytest.LogCaptureFixture
) -> None:
    """libcamera's start hung past its limit, then failed ("frontend has timed out"): the
    part had failed already and the camera is switched off, but nobody took the call's
    failure, and asyncio put "Task exception was never retrieved" and a traceback in the
    journal at ERROR, a bug's words for a camera the journal had named stuck."""
    caplog.set_level(logging.INFO, logger="device.hw.camera")
    camera.start_gate = threading.Event()
    camera.fail_start = True
    frames = Frames()
    feed = feed_for(picamera2(), frames, switch_timeout_s=0.2)
    try:
        feed.start_frames()
        await until(lambda: frames.failures, within=3)
        await feed.aclose()
    finally:
        camera.start_gate.set()  # the stuck start returns at last, failing
    back = "the stuck camera call returned; camera off"
    await until(lambda: any(r.getMessage().startswith(back) for r in caplog.records), within=3)
    await feed.shutdown()
    gc.collect()  # the call is freed (its traceback holds it in a cycle)
    bugs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not bugs, bugs


async def test_the_camera_starts_in_an_outage_after_many_presses(
    silent_resolver: list[str],
) -> None:
    """The same outage, a video session: the camera's start queued behind the lookups
    past its limit, "the camera is stuck in its start", its light on, audio only."""
    await presses_in_an_outage(silent_resolver)
    frames = Frames()
    feed = feed_for(synthetic(size=64), frames, switch_timeout_s=1.0)
    feed.start_frames()
    try:
        await until(lambda: frames.jpegs or frames.failures, within=3)
    finally:
        await feed.shutdown()
    assert frames.jpegs and not frames.failures, frames.failures


async def test_a_usb_camera_is_cropped_to_a_square_in_software(camera) -> None:
    camera.modes = USB_MODES
    frames = Frames()
    feed = feed_for(picamera2(size=512), frames)
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await feed.aclose()

    config = camera.call("configure")
    assert config["main"] == {"format": "MJPEG", "size": (512, 512)} and config["raw"] is None
    assert "set_controls" not in camera.names()
    assert simplejpeg.decode_jpeg_header(frames.jpegs[0])[:2] == (512, 512)
    for edge in ((slice(None), slice(0, 16)), (slice(None), slice(-16, None))):
        red, green, _ = mean_colour(frames.jpegs[0], edge)
        assert red > 150 and green < 80  # the green bands at the sides were cut away


async def test_slow_captures_skip_ticks_and_are_never_queued(camera) -> None:
    camera.capture_delay = 0.15  # longer than a tick of 0.125 s
    frames = Frames()
    feed = feed_for(picamera2(fps=8.0), frames)
    feed.start_frames()
    await until(lambda: len(frames.jpegs) >= 3)
    await feed.aclose()
    assert camera.most_in_flight == 1
    gaps = [b - a for a, b in zip(frames.times, frames.times[1:], strict=False)]
    assert min(gaps) > 0.2  # the next free tick (0.25 s), not straight after (0.15 s)


async def test_a_frame_in_flight_at_the_release_is_dropped_not_sent_late(camera) -> None:
    camera.capture_gate = threading.Event()
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    feed.start_frames()
    await until(lambda: camera.in_flight == 1)
    feed.stop_frames()
    camera.capture_gate.set()  # the frame arrives after the release
    await until(lambda: camera.names()[-1:] == ["close"])  # the capture ended, then the camera
    assert camera.captures == 1 and not frames.jpegs
    await feed.aclose()


async def test_a_camera_that_cannot_start_is_reported_once(camera, caplog) -> None:
    camera.fail_open = True
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    feed.start_frames()
    await until(lambda: frames.failures)
    assert len(frames.failures) == 1
    assert "cannot open the camera" in frames.failures[0]
    assert "rpicam-hello --list-cameras" in frames.failures[0]
    feed.stop_frames()
    feed.start_frames()  # the next press: still off, no second attempt or warning
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert camera_records(caplog) == [(logging.WARNING, "failed")]
    assert not feed.running and not frames.jpegs

    await feed.aclose()  # a new session tries again
    camera.fail_open = False
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await feed.aclose()


@pytest.mark.parametrize("stuck_in", ["start", "stop"])
async def test_a_camera_stuck_in_a_call_keeps_its_light_on_until_it_returns(
    camera, pins, caplog: pytest.LogCaptureFixture, stuck_in: str
) -> None:
    """The light is the privacy promise: a start or stop stuck in the camera may leave it
    on, so the light stays on, and the journal says "stuck", not "off", until the call
    returns and the camera is switched off."""
    caplog.set_level(logging.INFO, logger="device.hw.camera")
    gate = threading.Event()
    setattr(camera, f"{stuck_in}_gate", gate)
    frames = Frames()
    feed = feed_for(picamera2(led_pin=21, linger_s=0.05), frames, switch_timeout_s=0.2)
    try:
        feed.start_frames()
        if stuck_in == "stop":
            await until(lambda: frames.jpegs)
            feed.stop_frames()
        cameras = lambda: [getattr(r, "LIVE_CAMERA", None) for r in caplog.records]  # noqa: E731
        await until(lambda: "stuck" in cameras(), within=3)
        await feed.aclose()  # the session ends; the call is still stuck
        assert pins(21).state, "the light went out while the camera may still be on"
        assert "off" not in cameras(), cameras()
    finally:
        gate.set()
    await until(lambda: not pins(21).state, within=3)
    assert cameras()[-1] == "off", cameras()
    await feed.shutdown()


async def test_a_stuck_start_whose_stop_hangs_too_keeps_the_light_on_till_the_stop_returns(
    camera, pins, caplog: pytest.LogCaptureFixture
) -> None:
    """A wedged camera whose start came back late, then whose stop hung: the light went
    out, the journal said "camera off" and `ctl status` said off while the stop was still
    in the camera, and the next press started it again beside the stuck stop."""
    caplog.set_level(logging.INFO, logger="device.hw.camera")
    camera.start_gate, camera.stop_gate = threading.Event(), threading.Event()
    feed = feed_for(picamera2(led_pin=21), Frames(), switch_timeout_s=0.2)
    cameras = lambda: [what for _, what in camera_records(caplog)]  # noqa: E731
    try:
        feed.start_frames()
        await until(lambda: "stuck" in cameras(), within=3)
        await feed.aclose()
        camera.start_gate.set()  # the start returns; the stop that follows hangs
        await until(lambda: "did not stop cleanly" in caplog.text)  # past its limit
        assert pins(21).state and feed.running, "said off while the stop is in the camera"
        assert "off" not in cameras(), cameras()
        feed.start_frames()  # a press meanwhile: audio only, the camera left alone
        await asyncio.sleep(0.1)
        assert camera.names().count("start") == 1
    finally:
        camera.start_gate.set()
        camera.stop_gate.set()
    await until(lambda: not pins(21).state, within=3)
    assert cameras()[-1] == "off" and not feed.running
    await feed.shutdown()


async def test_a_camera_that_dies_mid_run_stops_and_is_reported_once(camera, pins) -> None:
    camera.fail_capture = 3
    frames = Frames()
    feed = feed_for(picamera2(led_pin=21), frames)
    feed.start_frames()
    await until(lambda: frames.failures)
    assert len(frames.failures) == 1 and "Dequeue timer" in frames.failures[0]
    assert len(frames.jpegs) == 2
    assert camera.names()[-2:] == ["stop", "close"]
    assert not feed.running and not pins(21).state
    await feed.aclose()


async def test_a_camera_that_goes_silent_is_taken_for_dead(camera) -> None:
    camera.hang_after = 1
    frames = Frames()
    feed = feed_for(picamera2(), frames, capture_timeout_s=0.2)
    feed.start_frames()
    await until(lambda: frames.failures)
    assert frames.failures == ["the camera delivered no frame for 0.2 s"]
    assert len(frames.jpegs) == 1 and camera.names()[-2:] == ["stop", "close"]
    await feed.aclose()


# --- capture_still, for the doctor ------------------------------------------------------


async def test_capture_still_takes_one_jpeg_and_switches_the_camera_off(camera) -> None:
    jpeg = (await capture_still(picamera2(size=640))).jpeg
    assert simplejpeg.decode_jpeg_header(jpeg)[:2] == (640, 640)
    assert camera.names() == ["open", "sensor_modes", "configure", "set_controls", "start",
                              "stop", "close"]
    still = (await capture_still(synthetic(size=256))).jpeg
    assert read_frame_number(simplejpeg.decode_jpeg(still)) == 1


async def test_without_picamera2_the_error_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    with pytest.raises(CameraError) as error:
        await capture_still(picamera2())
    assert "sudo apt install python3-picamera2" in str(error.value)
    assert "--system-site-packages" in str(error.value)


# --- the pieces -----------------------------------------------------------------------


def test_sensor_mode_with_the_widest_square_view_and_enough_pixels() -> None:
    imx219 = [
        {"size": (640, 480), "bit_depth": 10, "crop_limits": (1000, 752, 1280, 960)},
        {"size": (1640, 1232), "bit_depth": 10, "crop_limits": (0, 0, 3280, 2464)},
        {"size": (1920, 1080), "bit_depth": 10, "crop_limits": (680, 692, 1920, 1080)},
        {"size": (3280, 2464), "bit_depth": 10, "crop_limits": (0, 0, 3280, 2464)},
        {"size": (1640, 1232), "bit_depth": 8, "crop_limits": (0, 0, 3280, 2464)},
    ]
    chosen = choose_sensor_mode(imx219, 768)
    assert chosen is not None and chosen["size"] == (1640, 1232) and chosen["bit_depth"] == 10
    largest = choose_sensor_mode(imx219, 2048)  # no mode is big enough: the largest one
    assert largest is not None and largest["size"] == (3280, 2464)
    assert choose_sensor_mode(USB_MODES, 768) is None


def test_centred_square_crop_and_software_square() -> None:
    assert centred_square_crop((0, 0, 3280, 2464)) == (408, 0, 2464, 2464)
    assert centred_square_crop((16, 8, 1000, 1200)) == (16, 108, 1000, 1000)
    wide = np.zeros((480, 640, 3), dtype=np.uint8)
    wide[:, 80:560] = 255
    square = to_square(wide, 768)
    assert square.shape == (768, 768, 3) and square.min() == 255


def test_frame_numbers_survive_jpeg_at_every_size() -> None:
    for size in (64, 768, 2048):
        pattern = NumberedBars(size)
        for number in (0, 7, 402913):
            jpeg = simplejpeg.encode_jpeg(pattern.draw(number), quality=10, colorspace="RGB")
            assert read_frame_number(simplejpeg.decode_jpeg(jpeg)) == number
    with pytest.raises(ValueError, match="no frame number"):
        read_frame_number(np.full((768, 768, 3), 128, dtype=np.uint8))


def test_importing_the_camera_opens_nothing() -> None:
    code = (
        "import sys, device.hw.camera;"
        "assert 'picamera2' not in sys.modules and 'gpiozero' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- at most one frame a second ---


async def test_a_quick_second_press_does_not_exceed_fps() -> None:
    """A release and a press again within the second: the next frame waits out the second."""
    times: list[float] = []
    cfg = CameraConfig(source="synthetic", fps=1.0, linger_s=3.0)
    loop = asyncio.get_running_loop()
    feed = CameraFeed(cfg, lambda jpeg, t: times.append(loop.time()))
    feed.start_frames()
    await until(lambda: len(times) == 1)
    await asyncio.sleep(0.2)
    feed.stop_frames()  # release
    await asyncio.sleep(0.2)
    feed.start_frames()  # press again, same session
    await asyncio.sleep(0.9)
    await feed.aclose()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 1, f"frame gaps {gaps}: the press again brings one frame in the 1.3 s"
    assert gaps[0] >= 0.95, f"frame gaps {gaps} (fps 1.0)"



# --- no descriptor lost to a camera that cannot open ---


def _real_order_picamera2(cameras: list) -> type:
    """picamera2.Picamera2.__init__'s first steps, as upstream has them (0.3.x): the
    notification pipe, then the camera lookup that fails when libcamera sees none."""

    class Manager:
        def __init__(self) -> None:
            self.cameras: dict[int, object] = {}

        def add(self, index: int, camera: object) -> None:
            self.cameras[index] = camera

        def cleanup(self, index: int) -> None:
            del self.cameras[index]

    class Picamera2:
        _cm = Manager()

        @staticmethod
        def global_camera_info() -> list:
            return list(cameras)

        def __init__(self, camera_num: int = 0) -> None:
            self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)
            self.notifymeread = os.fdopen(self.notifyme_r, "rb")
            self._preview = None
            self.is_open = False
            camera_num = self.global_camera_info()[camera_num]["Num"]  # IndexError: none
            self._cm.add(camera_num, self)
            raise RuntimeError("Camera __init__ sequence did not complete.")  # busy

        def close(self) -> None:  # picamera2's: a camera never opened has nothing to close
            if not self.is_open:
                return

        def __del__(self) -> None:
            self.close()

    return Picamera2


@pytest.mark.parametrize("cameras", [[], [{"Num": 0, "Id": "/base/imx708"}]], ids=["none", "busy"])
def test_a_camera_that_cannot_open_leaks_no_descriptor_per_session(monkeypatch, cameras) -> None:
    module = types.ModuleType("picamera2")
    module.Picamera2 = _real_order_picamera2(cameras)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    source = Picamera2Source(768)
    before = open_descriptors()
    for _ in range(20):  # twenty presses, each a session whose camera cannot open
        with pytest.raises(CameraError):
            source.start()
        source.stop()
    after = open_descriptors()
    assert after - before == 0, f"{after - before} descriptors leaked in 20 failed starts"
    assert module.Picamera2._cm.cameras == {}  # type: ignore[attr-defined]


# --- picamera2's job order: stop() waits for the captures queued before it -------------
# (Picamera2.stop -> dispatch_functions([stop_], wait=True)): a capture that never
# completes (the ribbon cable dislodged, a USB camera unplugged) holds the stop back for
# good, unless cancel_all_and_flush() cancels it first.


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
    return installed_picamera2(monkeypatch, queueing_picamera2_class)


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


async def test_a_session_ended_before_the_camera_task_ran_leaves_the_next_one_its_frames() -> None:
    """A press and the end of its session taken in one go (a double press hands-free, a
    fault right at a press) cancel the camera's task before it ever ran: the next
    session still gets its frames."""
    frames = Frames()
    feed = feed_for(synthetic(), frames)
    feed.start_frames()
    await feed.aclose()
    feed.start_frames()  # the next session
    await until(lambda: len(frames.jpegs) >= 1, within=3)
    assert feed.running
    await feed.aclose()


# --- a USB camera's MJPEG frames, as picamera2 decodes them (PIL) ----------------------


def mjpeg_camera(
    monkeypatch: pytest.MonkeyPatch, *, decoded: Callable[[np.ndarray], np.ndarray],
    broken: Collection[int] = (),
) -> FakeCameraRig:
    """test_camera's fake USB camera, its frames as picamera2 hands them over: PIL's array
    of each MJPEG frame (`decoded` of the RGB picture), PIL's error for a frame cut short
    (the `broken` captures, 1-based)."""

    def make(rig: FakeCameraRig) -> type:
        class Picamera2(fake_picamera2_class(rig)):  # type: ignore[misc]
            waited = 0

            def wait(self, job: Any) -> np.ndarray:
                picture = super().wait(job)
                type(self).waited += 1
                if type(self).waited in broken:
                    raise OSError("image file is truncated (15 bytes not processed)")
                return decoded(picture)

        return Picamera2

    rig = installed_picamera2(monkeypatch, make)
    rig.modes = USB_MODES
    return rig


async def usb_video(count: int) -> Frames:
    """The frames a session's video sent, from the camera `mjpeg_camera` installed, until
    `count` went out or the camera failed."""
    frames = Frames()
    feed = feed_for(picamera2(size=256, fps=20.0), frames)
    feed.start_frames()
    try:
        await until(lambda: len(frames.jpegs) >= count or frames.failures, within=3)
    finally:
        await feed.aclose()
    return frames


def grey(rgb: np.ndarray) -> np.ndarray:
    """PIL's mode "L": a greyscale JPEG (an infrared camera's) is H x W."""
    return rgb.mean(axis=2).astype(np.uint8)


def cmyk(rgb: np.ndarray) -> np.ndarray:
    """PIL's mode "CMYK" (an Adobe CMYK or YCCK JPEG): H x W x 4, no black ink."""
    return np.dstack([255 - rgb, np.zeros(rgb.shape[:2], dtype=np.uint8)])


def cmyk_with_black(rgb: np.ndarray) -> np.ndarray:
    """PIL's mode "CMYK" with black ink: what the brightest channel lacks is black, the
    others' lack of it cyan, magenta and yellow (PIL's convert("RGB") undoes it)."""
    brightest = np.maximum(rgb.max(axis=2, keepdims=True).astype(np.uint16), 1)
    ink = 255 - rgb.astype(np.uint16) * 255 // brightest
    return np.dstack([ink, 255 - brightest]).astype(np.uint8)


@pytest.mark.parametrize(
    ("decoded", "colour"),
    [(grey, (86, 86, 86)), (cmyk, RED), (cmyk_with_black, RED)],
    ids=["grey", "cmyk", "cmyk-with-black"],
)
async def test_a_usb_camera_sending_greyscale_or_cmyk_jpegs_gives_video(
    monkeypatch: pytest.MonkeyPatch, decoded: Callable[[np.ndarray], np.ndarray],
    colour: tuple[int, int, int],
) -> None:
    mjpeg_camera(monkeypatch, decoded=decoded)
    frames = await usb_video(2)
    assert not frames.failures, frames.failures
    assert simplejpeg.decode_jpeg_header(frames.jpegs[0])[:2] == (256, 256)
    assert mean_colour(frames.jpegs[0]) == pytest.approx(colour, abs=8)


async def test_frames_cut_short_by_a_usb_hiccup_are_skipped_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Video goes on with the next whole frame; the journal says it once, no traceback."""
    caplog.set_level(logging.INFO, logger="device.hw")
    mjpeg_camera(monkeypatch, decoded=lambda rgb: rgb, broken={2, 4})
    frames = await usb_video(4)
    assert not frames.failures, frames.failures
    assert mean_colour(frames.jpegs[-1]) == pytest.approx(RED, abs=8)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "truncated" in warnings[0].getMessage(), warnings
    assert "skipped 1 camera frame(s)" in warnings[0].getMessage(), warnings
    assert not any(r.exc_info for r in caplog.records)


async def test_a_camera_whose_every_frame_is_broken_is_said_to_send_broken_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A USB camera sending only MJPEG that cannot be decoded (a bad cable, a camera's
    own fault) does send frames: the journal said it "delivered no frame for 5 s", and the
    owner looked for a dead camera rather than at its cable or its frames."""
    mjpeg_camera(monkeypatch, decoded=lambda rgb: rgb, broken=range(1, 100_000))
    frames = Frames()
    feed = feed_for(picamera2(size=256, fps=20.0), frames, capture_timeout_s=0.3)
    feed.start_frames()
    try:
        await until(lambda: frames.failures, within=3)
    finally:
        await feed.aclose()
    assert not frames.jpegs
    [reason] = frames.failures
    assert "no frame" not in reason, reason
    assert "could be decoded" in reason and "truncated" in reason, reason


async def test_a_usb_camera_whose_frames_break_at_the_release_stops_taking_them_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Released while every frame comes cut short (a USB hub starved of bandwidth): the
    camera takes no more pictures of the room for a turn that is over, and goes off after
    its linger, not after the capture's limit with the camera said to be dead."""
    rig = mjpeg_camera(monkeypatch, decoded=lambda rgb: rgb, broken=range(2, 10_000))
    frames = Frames()
    feed = feed_for(picamera2(size=256, fps=20.0, linger_s=0.0), frames)
    feed.start_frames()
    try:
        await until(lambda: frames.jpegs and rig.captures >= 3, within=3)
        feed.stop_frames()  # the release
        taken = rig.captures
        await until(lambda: rig.names()[-1:] == ["close"], within=8)
    finally:
        await feed.aclose()
    assert rig.captures - taken <= 1, "at most the frame in flight at the release"
    assert not frames.failures, frames.failures


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
    monkeypatch.setattr(camera_module, "make_source", lambda *_: source)
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


@pytest.mark.parametrize("stuck_in", ["start", "stop"])
async def test_the_off_line_after_a_stuck_camera_call_counts_the_runs_frames(
    camera: Any,
    caplog: pytest.LogCaptureFixture,
    stuck_in: str,
) -> None:
    """`journalctl LIVE_CAMERA=off` gives each camera run's frames in LIVE_CAMERA_FRAMES,
    what a privacy-minded owner counts: the run whose start or stop got stuck ended on an
    "off" line without it (a missing field, where every other run has one)."""
    caplog.set_level(logging.INFO, logger="device.hw.camera")
    gate = threading.Event()
    setattr(camera, f"{stuck_in}_gate", gate)
    frames = Frames()
    feed = feed_for(picamera2(), frames, switch_timeout_s=0.2)
    cameras = lambda: [r for r in caplog.records if hasattr(r, "LIVE_CAMERA")]  # noqa: E731
    try:
        feed.start_frames()
        if stuck_in == "stop":
            await until(lambda: frames.jpegs)
            feed.stop_frames()
        await until(lambda: any(r.LIVE_CAMERA == "stuck" for r in cameras()), within=3)
        await feed.aclose()
    finally:
        gate.set()
    await until(lambda: cameras()[-1].LIVE_CAMERA == "off", within=3)
    await feed.shutdown()
    stuck = next(r for r in cameras() if r.LIVE_CAMERA == "stuck")
    off = cameras()[-1]
    assert getattr(off, "LIVE_CAMERA_FRAMES", None) == stuck.LIVE_CAMERA_FRAMES, off.__dict__


def test_doctor_camera_ends_when_the_camera_is_stuck_in_its_start(
    camera: FakeCameraRig,
    monkeypatch: Any,
    tmp_path: Path,
) -> None:
    """A ribbon cable worked loose can leave picamera2 hanging in its start for good:
    `live-appliance doctor camera` printed its FAIL line and then never ended, its
    loop's close waiting for the worker thread stuck in the camera."""
    monkeypatch.setattr(camera_module, "SWITCH_TIMEOUT_S", 0.5)
    camera.start_gate = threading.Event()  # never returns while the test looks
    cfg = config(camera={"enabled": True, "source": "picamera2"})
    ctx = Context(cfg, Options(camera_out=tmp_path / "camera.jpg"), Progress(spinner=False))
    results: list[Result] = []
    doctor = threading.Thread(
        target=lambda: results.append(tasks.run(check_camera(ctx))), daemon=True
    )
    started = time.monotonic()
    doctor.start()
    doctor.join(5)
    hung = doctor.is_alive()
    camera.start_gate.set()  # the test's own end: the stuck call returns at last
    doctor.join(5)
    assert not hung, "the doctor did not end while the camera was stuck in its start"
    assert time.monotonic() - started < 5
    (result,) = results
    assert result.status is Status.FAIL
    assert "did not answer" in result.measured


def said(caplog: pytest.LogCaptureFixture, word: str) -> bool:
    """The journal has a LIVE_CAMERA=`word` line."""
    return any(getattr(r, "LIVE_CAMERA", "") == word for r in caplog.records)


class RealCameraParts(FakeParts):
    """Fake parts but the camera: the daemon's own CameraFeed."""

    switch_timeout_s = camera_module.SWITCH_TIMEOUT_S

    def camera(self, on_frame):  # type: ignore[no-untyped-def]
        feed = CameraFeed(self.cfg.camera, on_frame, switch_timeout_s=self.switch_timeout_s)
        return self._keep("camera", feed)


class QuickToCallStuck(RealCameraParts):
    switch_timeout_s = 0.2


async def test_the_doctor_fails_a_camera_the_running_service_could_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The camera fails at every press (picamera2 gone, a cable worked loose): the owner
    runs the doctor with the service running, as the README says, and its camera line was
    SKIP "in use" with exit 0, and `ctl status` said "camera: off", as when it works."""
    monkeypatch.setitem(sys.modules, "picamera2", None)  # `import picamera2` fails
    cfg = config(camera={"enabled": True, "source": "picamera2"})
    async with running(tmp_path, cfg, parts_class=RealCameraParts) as box:
        await box.ctl("press")
        await until(lambda: said(caplog, "failed"))
        await box.ctl("release")
        status = await box.ctl("status")
    line = held_by_the_service("camera", status, cfg)
    assert line.status is Status.FAIL, line
    assert "picamera2 is not installed" in line.measured
    assert any("picamera2 is not installed" in said for said in summary_lines(status))


async def test_ctl_status_says_the_camera_is_on_while_a_stuck_stop_keeps_its_light_on(
    camera: FakeCameraRig,
    pins: Any,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A camera stuck in its stop may still be on: its light stays lit and the journal says
    "stuck" until the call returns. `ctl status` said "camera: off" meanwhile, to an owner
    looking at the lit light; it says what the light says."""
    camera.stop_gate = threading.Event()
    cfg = config(camera={"enabled": True, "source": "picamera2", "led_pin": 21, "linger_s": 0})
    try:
        async with running(tmp_path, cfg, parts_class=QuickToCallStuck) as box:
            await box.ctl("press")
            await until(lambda: camera.captures > 0)
            await box.ctl("release")
            await until(lambda: said(caplog, "stuck"))
            stuck = await box.ctl("status")
            assert pins(21).state, "the light is on: the camera may be"
            camera.stop_gate.set()  # the call returns: the camera is switched off
            await until(lambda: not pins(21).state)
            back = await box.ctl("status")
    finally:
        camera.stop_gate.set()
    assert stuck["camera"], "ctl status said the camera was off while its light was on"
    assert not back["camera"]


async def test_the_doctors_picture_lights_the_camera_light(
    camera: FakeCameraRig,
    pins: Any,
) -> None:
    """`[camera] led_pin`, the light lit exactly while the camera is on, is a promise to
    whoever is in the room: `doctor camera` (run over SSH) switched the camera on and
    took a picture of them with the light dark."""
    jpeg = (await camera_module.capture_still(picamera2(led_pin=21))).jpeg
    assert jpeg[:2] == b"\xff\xd8" and camera.names()[-2:] == ["stop", "close"]
    assert [change.state for change in pins(21).states] == [False, True, False]


async def test_the_doctor_warns_of_a_camera_that_sends_black_pictures(
    camera: FakeCameraRig,
    tmp_path: Path,
) -> None:
    """A sensor that sends only black frames (a lens cap, the film a module ships with, a
    sensor that has died): the model saw nothing at every press, and `doctor camera`
    said PASS, as for a picture of the room."""
    camera.picture = lambda config: np.zeros((768, 768, 3), dtype=np.uint8)  # type: ignore[method-assign]
    cfg = config(camera={"enabled": True, "source": "picamera2"})
    ctx = Context(cfg, Options(camera_out=tmp_path / "camera.jpg"), Progress(spinner=False))
    result = await check_camera(ctx)
    assert result.status is Status.WARN, result
    assert "black" in result.measured and (tmp_path / "camera.jpg").exists()
    camera.picture = lambda config: np.full((768, 768, 3), 40, dtype=np.uint8)  # type: ignore[method-assign]
    assert (await check_camera(ctx)).status is Status.PASS, "a dim room is a picture"


@pytest.mark.parametrize("first_after_s", [0.0, 1.2], ids=["at once", "a slow start"])
async def test_the_doctor_waits_for_a_camera_whose_first_frames_are_dark(
    camera: FakeCameraRig,
    tmp_path: Path,
    first_after_s: float,
) -> None:
    """A Pi camera's first frames come before its exposure has settled, and may be black in
    a room it then shows well: `doctor camera` judged the first frame and warned of a lens
    cap on a healthy camera. The second it is given counts from its first frame (a USB
    webcam may send that a second or more after its start). A camera still black after it
    had time to settle is warned of (the test above)."""
    lit = np.full((768, 768, 3), 40, dtype=np.uint8)
    black = np.zeros_like(lit)

    def picture(config: dict[str, Any]) -> np.ndarray:  # on the camera's own thread
        if camera.captures == 1:
            time.sleep(first_after_s)
        return black if camera.captures <= 3 else lit

    camera.picture = picture  # type: ignore[method-assign]
    cfg = config(camera={"enabled": True, "source": "picamera2"})
    ctx = Context(cfg, Options(camera_out=tmp_path / "camera.jpg"), Progress(spinner=False))
    result = await check_camera(ctx)
    assert result.status is Status.PASS, result
    assert camera.captures > 3


async def test_a_box_without_picamera2_is_not_sent_to_a_test_pattern(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """picamera2 missing: the doctor's line told the owner to set `source = "synthetic"`,
    which makes the box show the model numbered colour bars at every press, and then
    passes the doctor. A box without a camera turns it off instead."""
    monkeypatch.setitem(sys.modules, "picamera2", None)  # `import picamera2` fails
    cfg = config(camera={"enabled": True, "source": "picamera2"})
    ctx = Context(cfg, Options(camera_out=tmp_path / "camera.jpg"), Progress(spinner=False))
    result = await check_camera(ctx)
    assert result.status is Status.FAIL
    said = f"{result.measured} {result.fix}"
    assert "synthetic" not in said, said
    assert "sudo apt install python3-picamera2" in said and "enabled = false" in said


async def test_the_doctor_warns_of_a_camera_whose_picture_is_scaled_up(
    camera: FakeCameraRig,
    tmp_path: Path,
) -> None:
    """A USB webcam that libcamera runs at 160x120: the model is shown a 120 pixel square
    blown up to 768x768, and `doctor camera` said PASS "768x768 JPEG" (its warning for a
    frame of another size could never fire: every frame is made [camera] size square)."""
    camera.modes = USB_MODES
    camera.usb_size = (160, 120)
    cfg = config(camera={"enabled": True, "source": "picamera2"})
    ctx = Context(cfg, Options(camera_out=tmp_path / "camera.jpg"), Progress(spinner=False))
    result = await check_camera(ctx)
    assert result.status is Status.WARN, result
    assert "160x120" in result.measured and "768x768 JPEG" in result.measured
    camera.usb_size = (1280, 720)
    assert (await check_camera(ctx)).status is Status.PASS


async def test_the_service_line_names_a_camera_the_running_service_could_not_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    systemctl: Any,
) -> None:
    """`doctor` with the service running and its camera failing at every press: the
    service line was PASS, where a part the service runs without is a warning naming it."""
    monkeypatch.setitem(sys.modules, "picamera2", None)  # `import picamera2` fails
    cfg = config(camera={"enabled": True, "source": "picamera2"})
    async with running(tmp_path / "box", cfg, parts_class=RealCameraParts) as box:
        await box.ctl("press")
        await until(lambda: said(caplog, "failed"))
        await box.ctl("release")
        status = await box.ctl("status")
    systemctl(**RUNNING)
    async with daemon_saying(status) as sock:
        path = config_file(tmp_path, control={"socket": str(sock)})
        found = await run_checks(
            ("camera", "service"), Options(button=False), str(path), Progress(), print
        )
    camera_line, service = found
    assert camera_line.status is Status.FAIL, camera_line
    assert service.status is Status.WARN and "camera" in service.measured, service
    assert exit_code(found) == 1


async def test_the_doctor_says_a_synthetic_camera_is_no_camera(tmp_path: Path) -> None:
    """`[camera] source = "synthetic"` left from the demo on a box: the model is shown
    numbered colour bars at every press, and the doctor's line read as a camera's
    ("PASS camera 768x768 JPEG, 20 KB in 0.1 s"), where only its FAIL lines named the
    source."""
    cfg = config(camera={"enabled": True, "source": "synthetic"})
    ctx = Context(cfg, Options(camera_out=tmp_path / "camera.jpg"), Progress(spinner=False))
    result = await check_camera(ctx)
    assert "test pattern" in result.measured, result


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


async def test_the_doctors_picture_leaves_the_light_lit_while_a_stop_is_stuck(
    camera: FakeCameraRig, pins: Any, monkeypatch: Any
) -> None:
    """A camera whose stop hangs (a ribbon cable worked loose) may still be filming: the
    doctor put its light out all the same and went on to its other checks, the room told
    the camera was off. The light stays lit until the process's end releases both."""
    monkeypatch.setattr(camera_module, "SWITCH_TIMEOUT_S", 0.3)
    camera.stop_gate = threading.Event()  # never returns while the test looks
    try:
        await camera_module.capture_still(picamera2(led_pin=21))
        assert [change.state for change in pins(21).states] == [False, True]
    finally:
        camera.stop_gate.set()


def test_ctl_status_says_a_camera_stuck_in_a_call_is_on_not_only_failed() -> None:
    """A start stuck in the camera is a failure the service keeps, and the camera may be
    filming, its light on: `ctl status` said "camera: failed ... (tried again in the next
    conversation)", the owner told nothing was on."""
    said = summary_lines({"state": "idle", "camera": True, "camera_failure": "stuck"})
    assert any(line.startswith("camera:   on") for line in said), said


def without_scaler_crop_maximum(rig: FakeCameraRig) -> type:
    """picamera2 over a libcamera without the ScalerCropMaximum property, which libcamera
    deprecated for the ScalerCrop control's maximum, "which the pipeline handler sets to
    the same rectangle" (picamera2 #973, rpicam-apps #653, 2024)."""
    base = fake_picamera2_class(rig)

    class Picamera2(base):  # type: ignore[misc,valid-type]
        @property
        def camera_properties(self) -> dict[str, Any]:
            properties = dict(super().camera_properties)
            properties.pop("ScalerCropMaximum", None)
            return properties

    return Picamera2


async def test_the_camera_crops_a_square_where_libcamera_has_no_scaler_crop_maximum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Camera Module 3 on a Pi 4: the ISP was given no square crop, and squeezed the
    sensor's whole 16:9 view into the 768x768 frame the model sees (faces 1.8 times too
    narrow); the journal said "cropped to a square in software"."""
    camera = installed_picamera2(monkeypatch, without_scaler_crop_maximum)
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await feed.aclose()
    assert ("set_controls", {"ScalerCrop": (1008, 0, 2592, 2592)}) in camera.calls


@pytest.fixture
def pi_camera(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fake Pi camera (picamera2) and the rig it reports to."""
    from test_camera import fake_picamera2_class, installed_picamera2

    return installed_picamera2(monkeypatch, fake_picamera2_class)


def _doctor_camera(tmp_path: Path) -> Any:
    from fakes import config

    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options

    cfg = config(camera={"enabled": True, "source": "picamera2"})
    return Context(cfg, Options(camera_out=tmp_path / "camera.jpg"), Progress(spinner=False))


async def test_the_doctor_warns_of_a_capped_lens_once_a_camera_had_its_second_to_settle(
    pi_camera: Any, tmp_path: Path
) -> None:
    """A lens cap on: `doctor camera` takes the picture again while a camera may still be
    settling (a second from its first frame), then warns; an owner does not wait many
    seconds on a camera that is black all along."""
    import time

    import numpy as np

    from device.doctor.camera import check_camera
    from device.doctor.result import Status

    pi_camera.picture = lambda config: np.zeros((768, 768, 3), dtype=np.uint8)
    started = time.monotonic()
    result = await check_camera(_doctor_camera(tmp_path))
    assert result.status is Status.WARN, result
    assert time.monotonic() - started < 3.0, "a black camera kept the owner waiting"
    assert pi_camera.captures > 1, "taken again while the camera could still be settling"


async def test_a_picture_just_bright_enough_to_show_something_passes_at_its_first_frame(
    pi_camera: Any, tmp_path: Path
) -> None:
    """A picture whose brightest pixels are BLACK_LEVEL shows the model something: the
    doctor passes it, at once, as the service would send it; it is not taken again for a
    second and then warned of as black."""
    import numpy as np

    from device.doctor.camera import check_camera
    from device.doctor.result import Status
    from device.hw.camera import BLACK_LEVEL

    level = np.full((768, 768, 3), BLACK_LEVEL, dtype=np.uint8)
    pi_camera.picture = lambda config: level
    result = await check_camera(_doctor_camera(tmp_path))
    assert result.status is Status.PASS, result
    assert pi_camera.captures == 1


def _older_libcamera(rig: Any) -> type:
    """picamera2 over an older libcamera pipeline: the ScalerCrop control's maximum is
    the crop's size without its offset; the ScalerCropMaximum property has both."""
    from test_camera import fake_picamera2_class

    base = fake_picamera2_class(rig)

    class Picamera2(base):  # type: ignore[misc,valid-type]
        @property
        def camera_controls(self) -> dict[str, Any]:
            controls = dict(super().camera_controls)
            *_, width, height = self.camera_properties["ScalerCropMaximum"]
            low, _, default = controls["ScalerCrop"]
            controls["ScalerCrop"] = (low, (0, 0, width, height), default)
            return controls

    return Picamera2


async def test_an_older_libcamera_crops_the_square_from_the_middle_of_the_sensor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Camera Module 3 in its binned, cropped mode (768, 432, 3072x1728 of the sensor)
    on an older libcamera, whose ScalerCrop control's maximum lacks that offset: the
    square is cut from the middle of what the mode sees, as ScalerCropMaximum says, not
    from its top left corner (the model would see the room off to one side)."""
    from test_camera import IMX708_MODES, Frames, feed_for, installed_picamera2, picamera2

    from device.hw.camera_sources import centred_square_crop

    camera = installed_picamera2(monkeypatch, _older_libcamera)
    camera.modes = [IMX708_MODES[0]]  # the one with an offset: (768, 432, 3072, 1728)
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    feed.start_frames()
    from helpers import until

    await until(lambda: frames.jpegs)
    await feed.aclose()
    square = centred_square_crop(IMX708_MODES[0]["crop_limits"])
    assert square == (1440, 432, 1728, 1728)
    assert camera.call("set_controls") == {"ScalerCrop": square}


async def test_the_journal_says_a_pi_camera_is_cropped_by_its_isp(
    camera_rig_journal: tuple[Any, pytest.LogCaptureFixture],
) -> None:
    """`camera on:` in the journal says how the square was made: by the ISP (a square
    ScalerCrop) on a Pi camera; "cropped to a square in software" sends whoever reads it
    after a crop that never happened (and a picture squeezed by the ISP)."""
    from helpers import until
    from test_camera import Frames, feed_for, picamera2

    camera, caplog = camera_rig_journal
    frames = Frames()
    feed = feed_for(picamera2(), frames)
    feed.start_frames()
    await until(lambda: frames.jpegs)
    await feed.aclose()
    (on,) = [r for r in caplog.records if getattr(r, "LIVE_CAMERA", None) == "on"]
    assert "square ScalerCrop" in on.getMessage(), on.getMessage()
    assert "ScalerCrop" in camera.call("set_controls")


@pytest.fixture
def camera_rig_journal(
    pi_camera: Any, caplog: pytest.LogCaptureFixture
) -> tuple[Any, pytest.LogCaptureFixture]:
    import logging

    caplog.set_level(logging.INFO, logger="device.hw.camera")
    return pi_camera, caplog


async def test_a_lamp_in_a_dark_room_is_a_picture_not_a_capped_lens(
    pi_camera: Any, tmp_path: Path
) -> None:
    """A dark room lit by one lamp (a tenth of the picture): the model sees the lamp and
    what it lights, and the doctor passes the picture at its first frame; judged by its
    middling pixels it was warned of as black."""
    import numpy as np

    from device.doctor.camera import check_camera
    from device.doctor.result import Status

    room = np.zeros((768, 768, 3), dtype=np.uint8)
    room[:77] = 200  # the lamp's tenth
    pi_camera.picture = lambda config: room
    result = await check_camera(_doctor_camera(tmp_path))
    assert result.status is Status.PASS, result
    assert pi_camera.captures == 1
