"""Where camera frames come from: picamera2 on the Pi, or a synthetic test pattern.

A source is started and stopped with blocking calls (the feed runs them in a
worker thread) and hands over one RGB frame per `await grab()`. The picamera2
source takes frames in picamera2's own thread through its non-blocking capture
(`capture_array(wait=False, signal_function=...)`) and passes them to the loop
with `call_soon_threadsafe`; picamera2 is imported only in `start()`. Frames are
made square and JPEG-encoded by `encode_jpeg`, off the loop as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import simplejpeg

from device.hw.camera_pattern import NumberedBars

logger = logging.getLogger(__name__)

#: A frame and the time.monotonic() it was taken.
Frame = tuple[np.ndarray, float]

PICAMERA2_MISSING = (
    "picamera2 is not installed: `sudo apt install python3-picamera2`, and make the venv "
    "with --system-site-packages so that it sees it (a box without a camera: [camera] "
    "enabled = false)"
)
#: Let the sensor run at 10..30 frames a second: auto-exposure settles in a few of them,
#: and a dim room still gets up to 100 ms of exposure.
FRAME_DURATION_US = (33_333, 100_000)
#: Buffers in flight: picamera2 keeps the newest completed one, so a capture rarely waits.
BUFFER_COUNT = 3


class CameraError(RuntimeError):
    """Owner-readable reason the camera cannot be used."""


class UnusableFrame(CameraError):
    """A frame the camera sent cannot be decoded (a USB hiccup cut its MJPEG short): the
    camera works, and its next frame is likely whole."""


class FrameSource(Protocol):
    """A camera, real or synthetic. start/stop block; grab does not."""

    def start(self) -> str:
        """Switch the camera on; returns what it is, for the journal."""
        ...

    async def grab(self) -> Frame:
        """The next RGB frame (any shape; `encode_jpeg` squares it); CameraError if none."""
        ...

    def stop(self) -> None:
        """Switch the camera off; safe after a failed start and when already off."""
        ...


def make_source(source: str, size: int) -> FrameSource:
    """The source `[camera] source` names, not yet started (nothing is opened here)."""
    if source == "synthetic":
        return SyntheticSource(size)
    if source == "picamera2":
        return Picamera2Source(size)
    raise CameraError(f"[camera] source: unknown source {source!r} (picamera2 or synthetic)")


def to_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of `rgb`, scaled to size x size (nearest pixel).

    Frames that are already square and of the right size (the ISP's ScalerCrop did
    the work) pass through untouched.
    """
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return rgb
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top : top + side, left : left + side]
    if side == size:
        return square
    pick = np.arange(size) * side // size
    return square[pick[:, None], pick]


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """The frame in RGB. picamera2 decodes a USB camera's MJPEG with PIL, which keeps the
    JPEG's own colours: a greyscale one (an infrared camera's) comes as H x W, an Adobe
    CMYK or YCCK one as H x W x 4 (turned to RGB as PIL's convert("RGB") does)."""
    if frame.ndim == 2:
        return np.repeat(frame[:, :, np.newaxis], 3, axis=2)
    if frame.shape[2] == 4:
        ink = frame.astype(np.uint16)
        paper = 255 - ink[..., 3:]  # what the black ink leaves
        return (paper - ink[..., :3] * paper // 255).astype(np.uint8)
    return frame


def encode_jpeg(rgb: np.ndarray, size: int, quality: int) -> bytes:
    """A size x size JPEG of a frame (4:2:0, what picamera2's own encoder uses)."""
    return simplejpeg.encode_jpeg(
        as_rgb(to_square(rgb, size)), quality=quality, colorspace="RGB", colorsubsampling="420"
    )


def brightest(jpeg: bytes) -> int:
    """How bright the brightest 1% of the picture is, of 255: near 0, the model sees nothing."""
    return int(np.percentile(simplejpeg.decode_jpeg(jpeg, colorspace="GRAY"), 99))


class SyntheticSource:
    """A moving test pattern numbered from 1 at each start: for machines without a camera."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pattern: NumberedBars | None = None
        self._count = 0

    def start(self) -> str:
        if self._pattern is None:
            self._pattern = NumberedBars(self._size)
        self._count = 0
        return f"synthetic test pattern, {self._size}x{self._size}"

    async def grab(self) -> Frame:
        return await asyncio.to_thread(self._draw)

    def _draw(self) -> Frame:
        if self._pattern is None:
            raise CameraError("the synthetic camera is not running")
        self._count += 1
        return self._pattern.draw(self._count), time.monotonic()

    def stop(self) -> None:
        """Nothing to release: the pattern is kept for the next start."""


def choose_sensor_mode(modes: Sequence[dict[str, Any]], size: int) -> dict[str, Any] | None:
    """The sensor mode for a square picture: the widest square field of view, then the
    smallest such mode that still has `size` pixels both ways (the largest if none has).

    None when the camera has no raw sensor modes (a USB camera).
    """
    raw = [mode for mode in modes if "size" in mode]
    if not raw:
        return None

    def square_side(mode: dict[str, Any]) -> int:
        _, _, width, height = mode.get("crop_limits") or (0, 0, *mode["size"])
        return min(width, height)

    def area(mode: dict[str, Any]) -> int:
        return mode["size"][0] * mode["size"][1]

    widest = max(map(square_side, raw))
    candidates = [mode for mode in raw if square_side(mode) == widest]
    enough = [mode for mode in candidates if min(mode["size"]) >= size]
    if enough:
        return min(enough, key=lambda mode: (area(mode), -mode.get("bit_depth", 0)))
    return max(candidates, key=area)


def centred_square_crop(crop_max: Sequence[int]) -> tuple[int, int, int, int]:
    """The largest square ScalerCrop (x, y, side, side) centred in ScalerCropMaximum."""
    x, y, width, height = crop_max
    side = min(width, height)
    return x + (width - side) // 2, y + (height - side) // 2, side, side


class Picamera2Source:
    """A Pi camera module, or a USB camera libcamera supports, through picamera2.

    Camera modules: a size x size RGB stream from the sensor mode with the widest
    view, with ScalerCrop set to the largest centred square so the ISP scales
    without distortion. USB cameras: their MJPEG stream at the nearest size they
    offer, centre-cropped in software.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._cam: Any = None
        self._modes: tuple[str, list[dict[str, Any]]] | None = None  # (model, modes)

    def start(self) -> str:
        # libcamera logs every configuration at INFO to stderr, i.e. the journal.
        os.environ.setdefault("LIBCAMERA_LOG_LEVELS", "*:WARN")
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(f"{PICAMERA2_MISSING} ({exc})") from exc
        if _no_camera(Picamera2):
            raise CameraError(
                "libcamera finds no camera: check the ribbon cable at both ends (contacts "
                "the right way round) and reboot; `rpicam-hello --list-cameras` lists what "
                "it sees (or set [camera] enabled = false)"
            )
        try:
            self._cam = _open_picamera2(Picamera2)
        except Exception as exc:
            raise CameraError(
                f"cannot open the camera ({exc}): is it connected, and not in use by another "
                "program? `rpicam-hello --list-cameras` lists the cameras libcamera sees"
            ) from exc
        try:
            return self._configure_and_start(self._cam)
        except Exception as exc:
            raise CameraError(f"the camera did not start: {exc}") from exc

    def _configure_and_start(self, cam: Any) -> str:
        model = str(cam.camera_properties.get("Model", "camera"))
        mode = choose_sensor_mode(self._sensor_modes(cam, model), self._size)
        side = self._size + self._size % 2  # picamera2 wants even sizes
        controls: dict[str, Any] = {}
        if mode is None:
            # USB: no raw stream; nearly every webcam offers MJPEG, which picamera2 decodes
            # to RGB. libcamera picks the nearest size the camera has.
            main, raw = {"format": "MJPEG", "size": (side, side)}, None
        else:
            # "BGR888" arrays hold R, G, B in that order (libcamera names the word order).
            main = {"format": "BGR888", "size": (side, side)}
            raw = {"format": str(mode["format"]), "size": tuple(mode["size"])}
        if "FrameDurationLimits" in cam.camera_controls:
            controls["FrameDurationLimits"] = FRAME_DURATION_US
        config = cam.create_preview_configuration(
            main=main, raw=raw, buffer_count=BUFFER_COUNT, controls=controls,
            display=None, encode=None,
        )
        cam.configure(config)
        crop_max = _scaler_crop_maximum(cam)
        cropped = crop_max is not None
        if crop_max is not None:
            cam.set_controls({"ScalerCrop": centred_square_crop(crop_max)})
        cam.start()
        width, height = cam.camera_configuration()["main"]["size"]
        return ", ".join([
            model,
            f"sensor mode {mode['size'][0]}x{mode['size'][1]}" if mode else "USB",
            f"{width}x{height} stream",
            "square ScalerCrop" if cropped else "cropped to a square in software",
        ])

    def _sensor_modes(self, cam: Any, model: str) -> list[dict[str, Any]]:
        """picamera2 reconfigures the camera once per mode to list them: do it once."""
        if self._modes is None or self._modes[0] != model:
            try:
                modes = list(cam.sensor_modes)
            except Exception as exc:  # some USB cameras cannot describe a raw mode
                logger.debug("camera lists no sensor modes: %s", exc)
                modes = []
            self._modes = (model, modes)
        return self._modes[1]

    async def grab(self) -> Frame:
        cam = self._cam
        if cam is None:
            raise CameraError("the camera is not running")
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[Frame] = loop.create_future()

        def on_done(job: Any) -> None:  # picamera2's thread
            outcome: Frame | BaseException
            try:
                outcome = (cam.wait(job), time.monotonic())
            except OSError as exc:  # PIL's, decoding a USB camera's MJPEG frame
                outcome = UnusableFrame(f"a frame the camera sent cannot be decoded: {exc}")
            except Exception as exc:
                outcome = exc
            # RuntimeError: the loop has closed, nobody waits for this frame any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, arrived, outcome)

        try:
            cam.capture_array("main", wait=False, signal_function=on_done)
        except Exception as exc:
            raise CameraError(f"the camera stopped delivering frames: {exc}") from exc
        return await arrived

    def stop(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            # picamera2 stops in its own thread, as a job queued behind those waiting:
            # a capture the camera never delivered (a cable pulled) would hold it for
            # ever. Nobody waits for those any more (the feed stops only after a grab).
            cam.cancel_all_and_flush()
            cam.stop()
        finally:
            cam.close()


def _scaler_crop_maximum(cam: Any) -> Sequence[int] | None:
    """The largest ScalerCrop of the configured mode; None for a camera without the control
    (a USB one). The ScalerCropMaximum property while libcamera still has it (older
    pipelines gave the control's maximum without the crop's offset), else the control's
    maximum: libcamera deprecated the property for it, the same rectangle (picamera2
    #973, rpicam-apps #653). Without a crop a Pi 4's ISP squeezes the sensor's 16:9 view
    into the square frame."""
    limits = cam.camera_controls.get("ScalerCrop")
    if limits is None:
        return None
    return cam.camera_properties.get("ScalerCropMaximum") or limits[1]


def _no_camera(picamera2: Any) -> bool:
    """libcamera lists no camera at all (False when it cannot say: the open then tells)."""
    try:
        return not picamera2.global_camera_info()
    except Exception:
        return False


def _open_picamera2(picamera2: Any) -> Any:
    """picamera2.Picamera2(), without the leak of a failed one.

    Its constructor makes a notification pipe before it opens the camera, and one that
    fails (no camera, a camera another program holds) leaves the pipe's write end open
    and, in picamera2 0.3, itself registered with its camera manager: one descriptor
    lost at every session that tries the camera, until the service's LimitNOFILE is
    reached. What it made is released here."""
    cam = picamera2.__new__(picamera2)
    try:
        cam.__init__()
    except BaseException:
        _release_half_open(cam)
        raise
    return cam


def _release_half_open(cam: Any) -> None:
    if getattr(cam, "is_open", False):
        return  # opened after all: its own close() releases everything
    manager = getattr(type(cam), "_cm", None)
    for index, held in list(getattr(manager, "cameras", {}).items()):
        if held is cam:
            with contextlib.suppress(Exception):
                manager.cleanup(index)  # type: ignore[union-attr]
    reader, writer = getattr(cam, "notifymeread", None), getattr(cam, "notifyme_w", None)
    if reader is not None:
        with contextlib.suppress(Exception):
            reader.close()
    if isinstance(writer, int):
        with contextlib.suppress(OSError):
            os.close(writer)
        cam.notifyme_w = None


def _settle(arrived: asyncio.Future[Frame], outcome: Frame | BaseException) -> None:
    """On the loop: hand a capture's outcome to its waiter, unless it gave up (cancelled)."""
    if arrived.done():
        return
    if isinstance(outcome, UnusableFrame):
        arrived.set_exception(outcome)
    elif isinstance(outcome, BaseException):
        arrived.set_exception(CameraError(f"the camera stopped delivering frames: {outcome}"))
    else:
        arrived.set_result(outcome)
