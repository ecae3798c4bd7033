"""Where the daemon's threads meet its event loop: what crosses, and what an owner sees."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import (
    RESPEAKER,
    SPEAKERPHONE,
    FakeParts,
    IdlePcm,
    ListedPortAudio,
    card,
    config,
    running,
)
from helpers import journal_lines, until
from test_audio_capture import _LevelPcm
from test_audio_playback import _Device, _Speaker
from test_doctor import audio_context

from device import logs
from device.appliance import Appliance
from device.audio import capture as capture_module
from device.audio import pcm
from device.audio.capture import Capture
from device.audio.echo import Canceller
from device.audio.output_stream import PortAudioError
from device.audio.playback import RATE, Playback
from device.doctor.audio import check_speaker
from device.doctor.result import Status
from device.parts import Parts
from device.states import SetupComplete


class RealMicParts(FakeParts):
    """Fake parts, but the microphone the daemon makes, its reader a thread of its own."""

    microphone = Parts.microphone


async def test_the_microphones_silence_in_a_session_is_found_under_that_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: "Every line logged during a session carries its LIVE_SESSION". A box that
    answered a press with nothing because its microphone gave only zeros (muted) says so
    from the microphone's reader thread, outside the appliance's tasks: the owner looking
    at that session (`journalctl LIVE_SESSION=<id>`) must find the line that says why."""
    listing = ListedPortAudio(card(SPEAKERPHONE, 2))
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", _LevelPcm)
    monkeypatch.setattr(_LevelPcm, "levels", (0,))
    monkeypatch.setattr(capture_module, "DIGITAL_SILENCE_S", 0.3)
    with journal_lines("device.audio.capture", filters=[logs.SessionField()]) as journal:
        async with running(tmp_path, parts_class=RealMicParts) as box:
            await box.ctl("press")
            box.link.deliver(SetupComplete)
            session = box.link.session_id
            await until(lambda: any("digital silence" in r["MESSAGE"] for r in journal.records))
            await box.ctl("release")
    said = [r for r in journal.records if "digital silence" in r["MESSAGE"]]
    assert session and said[0].get("LIVE_SESSION") == session, said


def test_two_volumes_set_at_once_leave_the_speaker_at_the_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model may call set_volume twice in one message, and each call runs in a thread
    of its own. The speaker must play the volume the box comes back with after a restart:
    it played one and kept the other on the card (the first call's slow write to the SD
    card landing after the second's)."""
    appliance = Appliance(config(), FakeParts(config(), tmp_path))
    writing, may_finish = threading.Event(), threading.Event()
    save = appliance.state_file.save

    def slow_first_write(**values: Any) -> None:
        if values.get("volume") == 0.3:  # the first call, held on the card
            writing.set()
            may_finish.wait(5)
        save(**values)

    monkeypatch.setattr(appliance.state_file, "save", slow_first_write)
    first = threading.Thread(target=appliance.set_volume, args=(0.3,))
    second = threading.Thread(target=appliance.set_volume, args=(0.6,))
    first.start()
    assert writing.wait(5)
    second.start()
    second.join(0.5)  # done by now, unless it waits for the first
    may_finish.set()
    first.join(5)
    second.join(5)
    assert appliance.speaker.volume == appliance.state_file.load()["volume"]


class _PulledCard(_Device):
    """An output stream whose card is pulled as the speaker starts playing."""

    def write(self, frames: bytes) -> bool:
        raise PortAudioError(-9999, "Unanticipated host error")


async def test_a_speaker_stopped_by_its_card_ends_the_wait_for_it_to_play_out() -> None:
    """`live-appliance ask --play` waits for the reply to play out, and the doctor's speaker
    check for its tone. A card pulled (or taken) as it plays stops the speaker's writer
    thread, which told only the daemon's audio keeper: the wait never ended, and `ask`
    hung until Ctrl-C. It ends with the speaker's error."""
    player = _Speaker(_PulledCard)
    player.start()
    try:
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 300, RATE)))
        waiting = asyncio.ensure_future(player.play_out())
        done, _ = await asyncio.wait({waiting}, timeout=5)
        assert done, "play_out() still waits for a speaker that stopped"
        with pytest.raises(OSError, match="Unanticipated host error"):
            waiting.result()
    finally:
        player.stop()


async def test_the_doctors_tone_on_a_card_pulled_as_it_plays_fails_with_the_speakers_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The doctor said "took no audio in 5.8 s" after waiting out its limit, the
    speaker's own error only in a warning above it."""

    def pulled(self: Playback, pa: object) -> _PulledCard:
        self.device_rate, self.channels = RATE, 1
        return _PulledCard()

    monkeypatch.setattr(Playback, "_open", pulled)
    result = await check_speaker(audio_context())
    assert result.status is Status.FAIL
    assert "Unanticipated host error" in result.measured, result.measured


class _StereoTonePcm(IdlePcm):
    """A stereo card at 16 kHz (a 2-mic HAT): a 1 kHz tone in its first microphone, the
    second one silent, ten periods at each read."""

    phase = 0

    def read(self) -> tuple[bytes, int]:
        n = np.arange(self.phase, self.phase + 10 * self.period_frames)
        _StereoTonePcm.phase += n.size
        frames = np.zeros((n.size, self.channels), dtype=np.int16)
        frames[:, 0] = (8000 * np.sin(2 * np.pi * 1000 * n / self.rate)).astype(np.int16)
        return frames.tobytes(), 0


async def test_a_stereo_microphone_cleaned_sends_its_first_microphones_sound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hands-free with echo cancellation (the default) or noise suppression on a stereo card
    that records at 16 kHz: the binding read the first channel's samples as if they lay
    side by side, and went on through the interleaved frames. The service heard the
    person's voice at half its pitch, mixed with the second microphone."""
    listing = ListedPortAudio(card(RESPEAKER, 1))
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", _StereoTonePcm)
    chunks: list[bytes] = []
    mic = Capture(
        lambda chunk, _t: chunks.append(chunk), device_rate=16000, channels=2,
        cleaner=Canceller(None),
    )
    mic.start(asyncio.get_running_loop())
    try:
        await until(lambda: len(chunks) >= 25)
    finally:
        mic.close_stream()
    heard = np.frombuffer(b"".join(chunks[5:25]), dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(heard))
    loudest_hz = np.argmax(spectrum) * 16000 / heard.size
    assert loudest_hz == pytest.approx(1000, abs=20)
