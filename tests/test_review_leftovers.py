"""Review (leftovers-52): the small things the last stop saw and left."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import pytest
import simplejpeg
import soxr
from helpers import until
from test_camera import (
    RED,
    USB_MODES,
    FakeCameraRig,
    Frames,
    fake_picamera2_class,
    feed_for,
    installed_picamera2,
    mean_colour,
    picamera2,
)

from device.audio import pcm
from device.audio.capture import RATE, Capture
from device.audio.playback import Playback


@pytest.mark.parametrize("card_rate", [48000, 44100, 32000])
async def test_a_release_on_a_card_not_at_16_khz_sends_all_that_was_said_before_it(
    card_rate: int,
) -> None:
    """A card at another rate is resampled; what the resampler still holds was recorded
    before the newest sample read. A person speaks up to the instant the button comes up:
    the turn (the chunks up to the one holding the release, as the mic feed sends) must
    hold all of it, the last chunk stamped with when its last sample was really said."""
    turn: list[tuple[bytes, float]] = []
    capture = Capture(lambda data, t: turn.append((data, t)), chunk_ms=20)
    capture._loop = asyncio.get_running_loop()  # as start() would, without a device
    capture._resampler = soxr.ResampleStream(card_rate, RATE, 1, dtype="int16")
    period = card_rate * 20 // 1000
    voice = pcm.from_float(pcm.tone(1000.0, 10_000, card_rate))
    start = time.monotonic()  # when the card recorded its first sample
    release = start + 1.2071  # the button comes up mid-period: said until then
    said = round((release - start) * card_rate)
    frames = 0
    while not turn or turn[-1][1] < release:
        if frames <= said < frames + period:
            capture.finish(release)
        block = voice[frames * 2 : (frames + period) * 2]
        if frames + period > said:  # silence after the release
            block = block[: max(0, said - frames) * 2].ljust(period * 2, b"\0")
        frames += period
        capture._deliver(block, start + frames / card_rate)
        await asyncio.sleep(0)
        assert frames < said + card_rate, "the chunk holding the release never came"
    sent = pcm.to_float(b"".join(data for data, _ in turn))
    loud = np.flatnonzero(np.abs(sent) > 0.25)
    heard_until = start + (loud[-1] + 1) / RATE
    assert heard_until == pytest.approx(release, abs=0.002), (
        f"the last {(release - heard_until) * 1000:.1f} ms said before the release not sent"
    )
    assert turn[-1][1] == pytest.approx(start + sent.size / RATE, abs=0.0005), (
        "the last chunk's stamp is when its last sample was recorded"
    )


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


def grey(rgb: np.ndarray) -> np.ndarray:
    """PIL's mode "L": a greyscale JPEG (an infrared camera's) is H x W."""
    return rgb.mean(axis=2).astype(np.uint8)


def cmyk(rgb: np.ndarray) -> np.ndarray:
    """PIL's mode "CMYK" (an Adobe CMYK or YCCK JPEG): H x W x 4, no black ink."""
    return np.dstack([255 - rgb, np.zeros(rgb.shape[:2], dtype=np.uint8)])


@pytest.mark.parametrize(("decoded", "colour"), [(grey, (86, 86, 86)), (cmyk, RED)])
async def test_a_usb_camera_sending_greyscale_or_cmyk_jpegs_gives_video(
    monkeypatch: pytest.MonkeyPatch, decoded: Callable[[np.ndarray], np.ndarray],
    colour: tuple[int, int, int],
) -> None:
    mjpeg_camera(monkeypatch, decoded=decoded)
    frames = Frames()
    feed = feed_for(picamera2(size=256, fps=20.0), frames)
    feed.start_frames()
    try:
        await until(lambda: len(frames.jpegs) >= 2 or frames.failures, within=3)
    finally:
        await feed.aclose()
    assert not frames.failures, frames.failures
    assert simplejpeg.decode_jpeg_header(frames.jpegs[0])[:2] == (256, 256)
    assert mean_colour(frames.jpegs[0]) == pytest.approx(colour, abs=8)


async def test_frames_cut_short_by_a_usb_hiccup_are_skipped_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Video goes on with the next whole frame; the journal says it once, no traceback."""
    caplog.set_level(logging.INFO, logger="device.hw")
    mjpeg_camera(monkeypatch, decoded=lambda rgb: rgb, broken={2, 4})
    frames = Frames()
    feed = feed_for(picamera2(size=256, fps=20.0), frames)
    feed.start_frames()
    try:
        await until(lambda: len(frames.jpegs) >= 4 or frames.failures, within=3)
    finally:
        await feed.aclose()
    assert not frames.failures, frames.failures
    assert mean_colour(frames.jpegs[-1]) == pytest.approx(RED, abs=8)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "truncated" in warnings[0].getMessage(), warnings
    assert not any(r.exc_info for r in caplog.records)


# --- a speaker closed by the keeper's worker while `ctl status` looks at it -----------


class ClosedAfterOneLook(Playback):
    """The keeper's worker closes the speaker (its card went) just after something on the
    loop looked at its stream once."""

    @property  # type: ignore[override]
    def _stream(self) -> Any:
        stream, self.__dict__["open_stream"] = self.__dict__.get("open_stream"), None
        return stream

    @_stream.setter
    def _stream(self, stream: Any) -> None:
        self.__dict__["open_stream"] = stream


class OpenSpeaker:
    output_latency = 0.0425

    def is_active(self) -> bool:
        return True


def test_a_speaker_closed_as_its_status_is_read_answers_it_not_an_error() -> None:
    """`ctl status` asks the speaker its latency: the keeper closing it meanwhile (a card
    pulled) must not make the answer an error; what it says is the stream it saw."""
    speaker = ClosedAfterOneLook()
    speaker._stream = OpenSpeaker()
    assert speaker.output_latency == 0.0425
    speaker._stream = OpenSpeaker()
    assert speaker.running
