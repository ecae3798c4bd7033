"""Sound cards of every shape: what reaches the service, and what the doctor says of them."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import io
from typing import Any

import numpy as np
import pytest
from fakes import RESPEAKER, ListedPortAudio, card
from helpers import until

from device.audio import alsa as alsa_module
from device.audio import capture as capture_module
from device.audio import devices as devices_module
from device.audio import pcm
from device.audio.capture import RATE, Capture
from device.audio.devices import print_devices
from device.config import AudioConfig, Config
from device.doctor import audio as doctor_audio
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status

S16_LE, S24_LE, S32_LE, S24_3LE = 2, 6, 10, 32
TONE_HZ = 440.0
AMPLITUDE = 0.25  # a sine at -15 dBFS RMS


class OneFormatCard:
    """libasound as a card's capture device answers that records in one sample format
    only: a 440 Hz tone in its first channel at AMPLITUDE of full scale, the others silent,
    a tenth of a second at each read."""

    def __init__(self, fmt: int, width: int, bits: int) -> None:
        self.fmt, self.width, self.bits = fmt, width, bits  # bytes a sample, bits of them
        self.format: int | None = None
        self.channels = self.rate = 0
        self.phase = 0

    def snd_strerror(self, code: int) -> bytes:
        return b"Invalid argument" if code == -errno.EINVAL else b"error"

    def snd_pcm_open(self, ref: Any, name: bytes, stream: int, mode: int) -> int:
        ref._obj.value = 1
        return 0

    def snd_pcm_hw_params_malloc(self, ref: Any) -> int:
        ref._obj.value = 2
        return 0

    def snd_pcm_hw_params_test_format(self, pcm_: Any, hw: Any, fmt: int) -> int:
        return 0 if fmt == self.fmt else -errno.EINVAL

    def snd_pcm_hw_params_set_format(self, pcm_: Any, hw: Any, fmt: int) -> int:
        self.format = fmt
        return self.snd_pcm_hw_params_test_format(pcm_, hw, fmt)

    def snd_pcm_hw_params_set_channels(self, pcm_: Any, hw: Any, channels: int) -> int:
        self.channels = channels
        return 0

    def snd_pcm_hw_params_set_rate(self, pcm_: Any, hw: Any, rate: int, direction: int) -> int:
        self.rate = rate
        return 0

    def snd_pcm_poll_descriptors_count(self, pcm_: Any) -> int:
        return 0  # the reader wakes on its own timer

    def snd_pcm_readi(self, pcm_: Any, buffer: Any, frames: int) -> int:
        count = min(frames, self.rate // 10)
        n = np.arange(self.phase, self.phase + count)
        self.phase += count
        full = 2 ** (self.bits - 1)
        values = np.zeros((count, self.channels), dtype=np.int64)
        values[:, 0] = np.round(AMPLITUDE * full * np.sin(2 * np.pi * TONE_HZ * n / self.rate))
        words = values.astype("<i8").view(np.uint8).reshape(count, -1, 8)
        raw = np.ascontiguousarray(words[:, :, : self.width]).tobytes()
        ctypes.memmove(buffer, raw, len(raw))
        return count

    def __getattr__(self, name: str) -> Any:
        """Every other call (access, period, buffer, start, close...) succeeds."""
        return lambda *args: 0


@pytest.mark.parametrize(
    ("fmt", "width", "bits", "device"),
    [
        pytest.param(S16_LE, 2, 16, ("USB PnP Sound Device: Audio (hw:{card},0)", 1, 2, 48000),
                     id="usb-s16"),
        pytest.param(S32_LE, 4, 32, ("snd_rpi_i2s_card: simple-card_codec_link snd-soc-dummy-dai-0 "
                                    "(hw:{card},0)", 2, 0, 48000), id="i2s-mems-s32"),
        pytest.param(S24_LE, 4, 24, ("seeed-4mic-voicecard: bcm2835-i2s-ac10x-codec0 "
                                    "ac10x-codec0-0 (hw:{card},0)", 4, 0, 48000), id="hat-s24"),
        pytest.param(S24_3LE, 3, 24, ("Yeti Stereo Microphone: USB Audio (hw:{card},0)", 2, 2,
                                     48000), id="usb-s24-3"),
    ],
)  # fmt: skip
async def test_a_card_that_records_no_16_bit_samples_sends_its_microphone(
    monkeypatch: pytest.MonkeyPatch, fmt: int, width: int, bits: int,
    device: tuple[str, int, int, int],
) -> None:
    """An I2S MEMS microphone records 32-bit samples only, a USB studio microphone 24-bit
    ones in three bytes: PortAudio lists them as able to record 16-bit (it converts), but
    the box reads ALSA itself, asked for s16le alone, and the card refused. The box never
    heard a word ("cannot apply the format" at every reopen, the doctor the same)."""
    fake = OneFormatCard(fmt, width, bits)
    monkeypatch.setattr(alsa_module, "_lib", lambda: fake)
    heard = await recorded(monkeypatch, device)
    assert pcm.dominant_frequency(heard, RATE) == pytest.approx(TONE_HZ, abs=10)
    assert pcm.rms_dbfs(heard) == pytest.approx(-15.1, abs=0.5)


class FormatsByRate(OneFormatCard):
    """A USB microphone whose 16-bit samples come at 48 kHz only, and its 24-bit ones (in
    three bytes) at 16 kHz: ALSA, asked before a rate is set, says it records both."""

    def __init__(self) -> None:
        super().__init__(S24_3LE, 3, 24)
        self.formats = {48000: S16_LE, RATE: S24_3LE}

    def snd_pcm_hw_params_test_format(self, pcm_: Any, hw: Any, fmt: int) -> int:
        able = self.formats.values() if not self.rate else [self.formats.get(self.rate)]
        return 0 if fmt in able else -errno.EINVAL


async def test_a_card_whose_formats_differ_by_rate_records_in_the_one_of_its_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sample format is chosen once the rate is set: chosen before, s16le (which the
    card records at 48 kHz only) was asked for at 16 kHz, refused, and the microphone
    never opened."""
    fake = FormatsByRate()
    monkeypatch.setattr(alsa_module, "_lib", lambda: fake)
    device = ("Yeti Stereo Microphone: USB Audio (hw:{card},0)", 2, 2, 48000)
    heard = await recorded(monkeypatch, device)
    assert (fake.rate, fake.format) == (RATE, S24_3LE)
    assert pcm.dominant_frequency(heard, RATE) == pytest.approx(TONE_HZ, abs=10)


class Wm8960:
    """PortAudio as a WM8960 HAT's raw hw: device answers (a ReSpeaker 2-Mics, Adafruit's
    Voice Bonnet): any of the usual rates, in stereo only, both ways."""

    def __init__(self) -> None:
        self.hat = ListedPortAudio(card(RESPEAKER, 1))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hat, name)

    def is_format_supported(self, rate: int, **kwargs: int) -> bool:
        channels = kwargs.get("input_channels") or kwargs.get("output_channels")
        if channels != 2 or rate not in (8000, 16000, 24000, 32000, 44100, 48000):
            raise ValueError("Invalid number of channels")
        return True


async def test_the_doctor_lists_the_rates_a_stereo_only_hat_records_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A HAT that takes no mono records at 16 kHz in stereo, and the box opens it so; the
    doctor asked at each rate for mono and said "only 48000 Hz", and `live-appliance
    devices` a "-" (cannot) at every rate, both ways, for the box's only sound card."""
    monkeypatch.setattr(doctor_audio, "open_portaudio", Wm8960)
    ctx = Context(Config(), Options(), Progress(spinner=False))
    result = await doctor_audio.check_devices(ctx)
    assert result.status is Status.PASS
    assert result.data["input"]["rates"] == [16000, 24000, 48000], result.measured
    assert result.data["output"]["rates"] == [16000, 24000, 48000], result.measured
    monkeypatch.setattr(devices_module, "open_portaudio", Wm8960)
    out = io.StringIO()
    assert print_devices(AudioConfig(), out) == 0
    row = next(line for line in out.getvalue().splitlines() if "seeed" in line)
    assert row.split()[4:7] == ["in/out", "in/out", "in/out"], row


async def recorded(monkeypatch: pytest.MonkeyPatch, device: tuple[str, int, int, int]) -> bytes:
    """What the box's microphone records from `device`, the one card listed, once its
    first chunks are past."""
    listing = ListedPortAudio(card(device, 1))
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    chunks: list[bytes] = []
    mic = Capture(lambda chunk, _t: chunks.append(chunk))
    mic.start(asyncio.get_running_loop())
    try:
        await until(lambda: len(chunks) >= 30)
    finally:
        mic.close_stream()
    return b"".join(chunks[5:30])
