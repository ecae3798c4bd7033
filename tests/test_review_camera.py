"""The camera over months: a camera stuck in a call, a camera that fails while the service
runs, as the owner meets them through the doctor and `ctl status`."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeParts, config, running
from helpers import daemon_saying, until
from test_camera import USB_MODES, FakeCameraRig, camera, picamera2, pins  # noqa: F401
from test_doctor import RUNNING, config_file

from device import tasks
from device.doctor.camera import check_camera
from device.doctor.daemon import summary_lines
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Result, Status
from device.doctor.runner import exit_code, held_by_the_service, run_checks
from device.hw import camera as camera_module
from device.hw.camera import CameraFeed


def test_doctor_camera_ends_when_the_camera_is_stuck_in_its_start(
    camera: FakeCameraRig,  # noqa: F811
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
    camera: FakeCameraRig,  # noqa: F811
    pins: Any,  # noqa: F811
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
    camera: FakeCameraRig,  # noqa: F811
    pins: Any,  # noqa: F811
) -> None:
    """`[camera] led_pin`, the light lit exactly while the camera is on, is a promise to
    whoever is in the room: `doctor camera` (run over SSH) switched the camera on and
    took a picture of them with the light dark."""
    jpeg = (await camera_module.capture_still(picamera2(led_pin=21))).jpeg
    assert jpeg[:2] == b"\xff\xd8" and camera.names()[-2:] == ["stop", "close"]
    assert [change.state for change in pins(21).states] == [False, True, False]


async def test_the_doctor_warns_of_a_camera_that_sends_black_pictures(
    camera: FakeCameraRig,  # noqa: F811
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
    camera: FakeCameraRig,  # noqa: F811
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
