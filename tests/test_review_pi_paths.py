"""The Pi-only paths as they run on a Raspberry Pi, with the fakes laid out as the real
kernel, firmware and libraries lay them out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import ALSA_DEFAULT, HDMI, HEADPHONES, ListedPortAudio
from helpers import journal_lines, until
from test_camera import (
    FakeCameraRig,
    Frames,
    fake_picamera2_class,
    feed_for,
    installed_picamera2,
    picamera2,
)

from device import logs
from device.audio.devices import choose_device
from device.config import AudioConfig, Config, load
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.mic_feed import MicFeed
from device.outbox import Outbox

#: Where a Pi 5 (BCM2712) running Raspberry Pi OS's kernel keeps the firmware's flags: its
#: bus is `soc@107c000000` (bcm2712.dtsi) and the firmware node a child of it
#: (bcm2712-rpi.dtsi), named by the kernel "<bus>:<node>".
PI5_THROTTLED = "devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled"


def test_the_doctor_warns_of_a_pi_5_throttled_by_heat(tmp_path: Path) -> None:
    """A Pi 5 at its limit, throttled now and since boot; rpi_volt, beside it, sees no
    under-voltage. The doctor said "no under-voltage or throttling" (it read the Pi 4's
    path only, and on a Pi 5 only the alarm)."""
    from device.doctor.power import check_power

    throttled = tmp_path / PI5_THROTTLED
    throttled.parent.mkdir(parents=True)
    throttled.write_text("e000e\n")  # capped, throttled, soft limit: now and since boot
    hwmon = tmp_path / "class/hwmon/hwmon2"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("rpi_volt\n")
    (hwmon / "in0_lcrit_alarm").write_text("0\n")
    zone = tmp_path / "class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("85350\n")

    ctx = Context(Config(), Options(), Progress(spinner=False))
    result = asyncio.run(check_power(ctx, sys_root=tmp_path))
    assert result.status is Status.WARN, result.measured
    assert "throttled" in result.measured and "now" in result.measured
    assert "heatsink" in (result.fix or "")


#: A USB card's device as PortAudio names it: "<card>: <PCM> (hw:C,D)", where the kernel's
#: PCM name, "USB Audio" (snd-usb-audio), loses the words the card's name already has
#: (pa_linux_alsa.c, SkipCardDetailsInName; "-" when nothing is left).
USB_CARDS = [
    pytest.param(("Jabra SPEAK 410 USB: Audio (hw:2,0)", 1, 2, 48000), id="jabra-speak-410"),
    pytest.param(("USB PnP Sound Device: Audio (hw:2,0)", 1, 2, 48000), id="pnp-headset"),
    pytest.param(("USB Audio Device: - (hw:2,0)", 1, 2, 48000), id="c-media-dongle"),
    pytest.param(("Anker PowerConf: USB Audio (hw:2,0)", 1, 2, 48000), id="anker-powerconf"),
]


@pytest.mark.parametrize("usb_card", USB_CARDS)
def test_the_usb_speakerphone_profile_finds_the_speakerphone(
    tmp_path: Path, usb_card: tuple[str, int, int, int]
) -> None:
    """`[hardware] profile = "usb-speakerphone"` on a Pi 4 with a Jabra Speak 410: the box
    said "no input device matches 'USB Audio'" and never listened (PortAudio names it
    "Jabra SPEAK 410 USB: Audio")."""
    path = tmp_path / "config.toml"
    path.write_text('[hardware]\nprofile = "usb-speakerphone"\n', encoding="utf-8")
    audio = load(path).audio
    pa: Any = ListedPortAudio(HEADPHONES, HDMI, usb_card, ALSA_DEFAULT)
    assert choose_device(pa, audio.input_device, "input").name == usb_card[0]
    assert choose_device(pa, audio.output_device, "output").name == usb_card[0]


class KernelsGetThrottled:
    """The firmware's get_throttled as a Raspberry Pi OS kernel serves it: deprecated, and
    the first read of it each boot puts a WARNING with a call trace in the kernel's log
    and taints the kernel (drivers/firmware/raspberrypi.c: get_throttled_show,
    WARN_ONCE(1, "deprecated, use hwmon sysfs instead")). A FIFO here: `read` says
    whether anyone opened it to read."""

    def __init__(self, path: Path, flags: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        self._path = path
        self._closing = False
        self.read = threading.Event()

        def serve() -> None:
            fd = os.open(path, os.O_WRONLY)  # returns once a reader has opened it
            if not self._closing:
                self.read.set()
            with contextlib.suppress(OSError):
                os.write(fd, f"{flags}\n".encode())
            os.close(fd)

        self._server = threading.Thread(target=serve, daemon=True)
        self._server.start()

    def close(self) -> None:
        self._closing = True
        if not self.read.is_set():  # let the writer's open return
            reader = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
            self._server.join(5)
            os.close(reader)
        self._server.join(5)


def test_a_lost_card_notes_under_voltage_without_the_kernel_warning(tmp_path: Path) -> None:
    """A box on a weak supply whose microphone overruns: the journal's line says
    under-voltage (rpi_volt's alarm), and the kernel's log has no "WARNING ... get_throttled_show"
    call trace for it: the daemon read the deprecated file at each boot's first trouble
    though rpi_volt, read from the same poll of the firmware, says the same."""
    throttled = KernelsGetThrottled(tmp_path / "devices/platform/soc/soc:firmware/get_throttled",
                                    "50005")  # fmt: skip
    hwmon = tmp_path / "class/hwmon/hwmon1"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("rpi_volt\n")
    (hwmon / "in0_lcrit_alarm").write_text("1\n")
    try:
        note = logs.PowerNote(sys_root=tmp_path)
        with journal_lines("device", filters=[note], propagate=False) as captured:
            MicFeed(AudioConfig(), Outbox(hold_s=60)).overflowed(3)
    finally:
        throttled.close()
    assert captured.records[-1].get("LIVE_POWER") == "under-voltage"
    assert not throttled.read.is_set(), "get_throttled was read: the kernel logged a WARNING"


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
