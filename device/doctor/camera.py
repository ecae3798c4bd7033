"""The camera check: one still through the daemon's camera code, saved for the owner to see."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tempfile
import time
from pathlib import Path

from device.doctor.result import Context, Result, Status
from device.sudo import give_to_sudo_user

START_TIMEOUT_S = 15.0  # a Pi camera takes a few seconds to start and settle
#: A camera's picture whose centred square is blown up more than this to make a frame
#: shows the model a blur.
MOST_SCALED_UP = 2
FIX_CAMERA = (
    "Do what the message says, or check the camera's cable and that rpicam-hello sees it; "
    "[camera] enabled = false runs the box without a camera."
)


async def check_camera(ctx: Context) -> Result:
    """Take a frame as the daemon would (once the camera has settled), save it, and say how
    big it is."""
    cam = ctx.cfg.camera
    if not cam.enabled:
        return Result("camera", Status.SKIP, "camera disabled ([camera] enabled = false)")
    import simplejpeg

    from device.hw.camera import BLACK_LEVEL, CameraError, capture_still

    started = time.monotonic()
    try:
        async with ctx.progress.step(f"camera: taking one frame ({cam.source})"):
            async with asyncio.timeout(START_TIMEOUT_S):
                still = await capture_still(cam)
    except CameraError as exc:
        return Result(
            "camera",
            Status.FAIL,
            f"{cam.source}: {exc}",
            FIX_CAMERA,
        )
    except TimeoutError:
        return Result(
            "camera",
            Status.FAIL,
            f"{cam.source}: no frame in {START_TIMEOUT_S:g} s",
            "Reboot, then check rpicam-hello; another program may hold the camera.",
        )
    seconds = time.monotonic() - started
    jpeg = still.jpeg
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
    except ValueError as exc:
        return Result(
            "camera",
            Status.FAIL,
            f"{cam.source}: the frame is not a JPEG ({exc})",
            "Report this with the output of live-appliance doctor camera --json.",
        )
    # The demo's source shows the model colour bars: said, or the line reads as a camera's.
    pattern = "synthetic test pattern, not a camera: " if cam.source == "synthetic" else ""
    measured = f"{pattern}{width}x{height} JPEG, {len(jpeg) / 1024:.0f} KB in {seconds:.1f} s"
    data = {"width": width, "height": height, "bytes": len(jpeg), "seconds": round(seconds, 2),
            "camera_width": still.width, "camera_height": still.height}  # fmt: skip
    out = ctx.options.camera_out
    try:
        await asyncio.to_thread(save_privately, out, jpeg)
    except OSError as exc:
        return Result(
            "camera",
            Status.WARN,
            f"{measured}; cannot save it: {exc.strerror}",
            _why_not_saved(exc, out),
            data=data,
        )
    measured += f", saved to {out}"
    brightest = still.brightest
    if brightest < BLACK_LEVEL:
        return Result(
            "camera",
            Status.WARN,
            f"{measured}; the picture is black (its brightest pixels {brightest} of 255)",
            "Take off a lens cap or the film on the lens, or light the room; black in a lit "
            "room: reseat the camera's cable, and see what rpicam-still takes.",
            data=data | {"path": str(out), "brightest": brightest},
        )
    if (width, height) != (cam.size, cam.size):
        return Result(
            "camera",
            Status.WARN,
            f"{measured}; expected {cam.size}x{cam.size}",
            "Report this: frames are meant to be [camera] size pixels square.",
            data=data | {"path": str(out)},
        )
    side = min(still.width, still.height)
    if side * MOST_SCALED_UP < cam.size:
        return Result(
            "camera",
            Status.WARN,
            f"{measured}; the camera's picture is {still.width}x{still.height}: its centre "
            f"is blown up {cam.size / side:.1f} times",
            "libcamera runs this camera (a USB webcam?) at a small size: rpicam-hello "
            "--list-cameras lists the sizes it has. Use a camera with a larger one, or set a "
            "smaller [camera] size.",
            data=data | {"path": str(out)},
        )
    return Result("camera", Status.PASS, measured, data=data | {"path": str(out)})


def _why_not_saved(exc: OSError, out: Path) -> str:
    """The fix for a picture not saved: /tmp is often a small tmpfs, and a card may be
    full or read-only, where a path "you may write to" sent the owner after permissions."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"{out.parent} is full (df -h {out.parent}): free room, or give --camera-out "
            "a path elsewhere."
        )
    if exc.errno == errno.EROFS:
        return f"{out.parent} is read-only: give --camera-out a path elsewhere."
    return "Give --camera-out a path you may write to."


def save_privately(out: Path, jpeg: bytes) -> None:
    """A picture of the room, readable only by whoever ran the doctor (under sudo, the
    owner who typed it, not root): in a shared /tmp it was any local user's to read. It
    is written to a new file, then renamed over whatever has the name: a link there is
    not followed, a file another user made and holds open never gets the picture, and a
    FIFO there does not hold the doctor waiting for a reader."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")  # 0600, new
    try:
        with os.fdopen(fd, "wb") as file:
            give_to_sudo_user(fd)
            file.write(jpeg)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
