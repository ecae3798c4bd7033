"""The camera over months: a camera stuck in a call, a camera that fails while the service
runs, as the owner meets them through the doctor and `ctl status`."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fakes import config
from test_camera import FakeCameraRig, camera  # noqa: F401  (the fake picamera2 fixture)

from device import tasks
from device.doctor.camera import check_camera
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Result, Status
from device.hw import camera as camera_module


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
