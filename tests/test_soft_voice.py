"""A person who speaks softly, or a HAT with a low capture gain: what the box hears of them."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import fakes
import numpy as np
import pytest
from fakes import running
from helpers import until

from device import config
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Result, Status
from device.states import ReplyAudio, SetupComplete, TurnComplete


@pytest.mark.parametrize(
    "amplitude",
    [
        52,  # -56 dBFS: more than 10 dB under `speech_dbfs`, no soft voice
        184,  # -45 dBFS: within the 10 dB a soft voice is heard in, but steady
    ],
)
async def test_push_to_talk_a_long_press_in_a_fans_steady_hum_still_hangs_up(
    tmp_path: Path, amplitude: int
) -> None:
    """Held in a room with only a fan's hum, under `speech_dbfs` (-40), the long press is
    the hang-up README promises. At -45 dBFS the hum was taken for a soft voice and
    nothing happened: a voice rises and falls (the pauses between words); a hum does not."""
    hum = np.full(640, amplitude, dtype=np.int16).tobytes()
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        for _ in range(20):
            box.mic.record(hum)
        await box.settle()
        box.appliance._on_button("long_press", time.monotonic())  # ButtonInput's timer
        await box.settle()
        assert box.state == "idle" and box.link.closed


async def test_push_to_talk_a_hum_that_began_since_the_last_press_still_hangs_up(
    tmp_path: Path,
) -> None:
    """A question asked in a quiet room; the fan switched on since. Held in its steady
    hum with nobody talking, the long press hangs up: the quiet a voice rises above is
    this press's, not the quieter room of an earlier one."""
    hum = np.full(640, 184, dtype=np.int16).tobytes()  # -45 dBFS
    async with running(tmp_path) as box:
        box.mic.record(fakes.QUIET)  # the pre-roll
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        for _ in range(5):
            box.mic.record(fakes.CHUNK)
        await box.ctl("release")
        box.mic.record(fakes.CHUNK)
        await box.settle()
        box.link.deliver(ReplyAudio, pcm=b"\x01\x02" * 2400)
        box.link.deliver(TurnComplete)
        await box.settle()
        box.speaker.play()
        await until(lambda: box.state == "idle")
        for _ in range(5):
            box.mic.record(hum)  # the fan is on: the next press's pre-roll
        await box.ctl("press")
        for _ in range(20):
            box.mic.record(hum)
        await box.settle()
        assert box.state == "listening"
        box.appliance._on_button("long_press", time.monotonic())  # ButtonInput's timer
        await box.settle()
        assert box.state == "idle" and box.link.closed


def _a_microphone_hearing(monkeypatch: pytest.MonkeyPatch, sound: bytes) -> None:
    """Capture's device replaced by one that records `sound` over and over."""
    from device.audio.capture import Capture

    def start(self: Capture, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.device_rate = 48000
        recorded = sound * 5
        assert loop is not None
        for n in range(0, len(recorded), self.chunk_bytes):
            loop.call_soon_threadsafe(self.on_chunk, recorded[n : n + self.chunk_bytes], 0.0)

    monkeypatch.setattr(Capture, "start", start)
    monkeypatch.setattr(Capture, "close_stream", lambda self: None)


async def test_doctor_mic_says_a_voice_is_under_speech_dbfs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner runs `doctor mic` while their child speaks from across the room: words
    at -47 dBFS between pauses at -62, all under `speech_dbfs` (-40). The doctor said PASS
    (it warned only below -60 dBFS on the whole), and the owner could not tell why the box
    never took the child for someone talking (hung up on, their turn ended by the silence)."""
    result = await _doctor_mic_hearing(monkeypatch, config.Config(), word_dbfs=-47)
    assert result.status is Status.WARN
    assert "-47.0 dBFS" in result.measured and "speech_dbfs (-40 dBFS)" in result.measured
    assert "speech_dbfs" in (result.fix or "") and "alsamixer" in (result.fix or "")
    assert result.data["loudest_dbfs"] == -47.0


@pytest.mark.parametrize(
    ("mode", "word_dbfs", "unsent"),
    [
        ("toggle", -53, True),
        ("toggle", -47, False),  # above pause_below_dbfs: sent, only not taken for speech
        ("push_to_talk", -53, False),  # a press sends all it hears: no quiet gate
    ],
)
async def test_doctor_mic_says_a_hands_free_voice_under_the_pause_is_not_even_sent(
    monkeypatch: pytest.MonkeyPatch, mode: str, word_dbfs: int, unsent: bool
) -> None:
    cfg = config.Config(button=config.ButtonConfig(mode=mode))
    result = await _doctor_mic_hearing(monkeypatch, cfg, word_dbfs=word_dbfs)
    assert result.status is Status.WARN and "speech_dbfs (-40 dBFS)" in result.measured
    assert ("not even sent" in result.measured) is unsent, result.measured


async def test_doctor_mic_passes_a_voice_loud_enough_for_speech(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = await _doctor_mic_hearing(monkeypatch, config.Config(), word_dbfs=-30)
    assert result.status is Status.PASS and result.data["loudest_dbfs"] == -30.0


async def test_doctor_mic_on_digital_silence_keeps_its_json_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A muted microphone (exact zeros): `doctor --json` must stay JSON a script can read,
    no -Infinity for the loudest chunk's level."""
    from device.doctor.audio import check_mic

    _a_microphone_hearing(monkeypatch, bytes(16000))
    ctx = Context(config.Config(), Options(mic_seconds=2), Progress(spinner=False))
    result = await check_mic(ctx)
    assert result.status is Status.WARN and "digital silence" in result.measured
    json.dumps(result.data, allow_nan=False)


async def _doctor_mic_hearing(
    monkeypatch: pytest.MonkeyPatch, cfg: config.Config, word_dbfs: float
) -> Result:
    """`doctor mic` hearing words at `word_dbfs` between pauses at -62 dBFS, 0.5 s each."""
    from device.doctor.audio import check_mic

    word = np.full(8000, round(32768 * 10 ** (word_dbfs / 20)), dtype=np.int16).tobytes()
    pause = np.full(8000, 26, dtype=np.int16).tobytes()
    _a_microphone_hearing(monkeypatch, word + pause)
    return await check_mic(Context(cfg, Options(mic_seconds=2), Progress(spinner=False)))


async def test_hands_free_a_soft_start_after_a_pause_goes_out_without_a_preroll(
    tmp_path: Path,
) -> None:
    """`preroll_ms = 0` (nothing from before a press's edge): hands-free, after a pause
    the quiet gate held back, the soft start of the next word (a breathy "h", under
    `pause_below_dbfs`) was lost, the word sent from its first loud chunk on: "ello"."""
    cfg = fakes.config(button={"mode": "toggle"}, audio={"preroll_ms": 0})
    async with running(tmp_path, cfg, parts_class=fakes.RealCaptureParts) as box:
        mic = box.mic
        assert isinstance(mic, fakes.DeviceFreeCapture)
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        onset = np.full(640, 60, dtype=np.int16).tobytes()  # -55 dBFS
        t = time.monotonic()
        chunks = [fakes.CHUNK] * 5 + [fakes.QUIET] * 40 + [onset, fakes.CHUNK]
        for n, data in enumerate(chunks):
            mic.record(data, t + 0.04 * (n + 1))
        await box.settle()
        named = {onset: "soft start", fakes.CHUNK: "word", fakes.QUIET: "quiet"}
        sent = [named.get(item.data or b"", item.kind) for item in box.link.sent()]
        resumed = sent.index("audio_stream_end") + 1  # the pause was held back
        assert sent[resumed:] == ["quiet", "quiet", "soft start", "word"]  # 120 ms before it


@pytest.mark.parametrize(
    "sound",
    [
        "beep",  # the box's own go-ahead beep, heard softly while its speaker plays
        "ticks",  # a clock ticking in a quiet room: rises, but under the soft voice's floor
    ],
)
async def test_push_to_talk_a_long_press_nobody_talks_in_still_hangs_up(
    tmp_path: Path, sound: str
) -> None:
    """Held with nobody talking, the long press hangs up (README) whatever else the
    microphone hears: neither the box's own sound (its speaker busy) nor a faint sound
    more than 10 dB under `speech_dbfs` is a soft voice, however far above the quiet."""
    soft = np.full(640, 164, dtype=np.int16).tobytes()  # -46 dBFS: a soft voice's level
    faint = np.full(640, 40, dtype=np.int16).tobytes()  # -58 dBFS
    heard = [soft] if sound == "beep" else [faint]
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.speaker.busy = sound == "beep"
        for _ in range(10):
            for chunk in (fakes.QUIET, *heard):
                box.mic.record(chunk)
        await box.settle()
        box.speaker.busy = False
        box.appliance._on_button("long_press", time.monotonic())  # ButtonInput's timer
        await box.settle()
        assert box.state == "idle" and box.link.closed
