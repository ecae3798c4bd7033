"""Microphone capture through ALSA on the loopback: chunks, order, rates, when."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from typing import Any, ClassVar

import numpy as np
import pytest
import soxr
from fakes import RESPEAKER, SPEAKERPHONE, IdlePcm, ListedPortAudio, card
from helpers import no_new_threads, thread_names, until

from device.audio import capture as capture_module
from device.audio import pcm
from device.audio.alsa import AlsaError
from device.audio.capture import (
    FINISH_READ_MS,
    IDLE_READ_MS,
    PAUSED_READ_MS,
    PRESS_LAG_S,
    RATE,
    Capture,
    QuietGate,
)
from device.audio.card_clock import CardClock
from device.audio.devices import AudioDeviceError
from device.audio.echo import Canceller
from device.audio.keeper import STALE_S
from rig.loopback import MIC_SINK, PulseLoopback

TONES = [500.0, 1000.0, 1500.0]
TONE_MS = 300


async def _capture_while_playing(
    loopback: PulseLoopback, signal: bytes, play_rate: int, **kwargs: object
) -> tuple[Capture, list[tuple[bytes, float]]]:
    chunks: list[tuple[bytes, float]] = []
    capture = Capture(lambda data, t: chunks.append((data, t)), **kwargs)  # type: ignore[arg-type]
    capture.start()
    try:
        await asyncio.sleep(0.2)  # the stream is running before the sound starts
        player = loopback.play(signal, play_rate, side="mic")
        await asyncio.to_thread(player.wait)
        await asyncio.sleep(0.3)
    finally:
        capture.stop()
    await asyncio.sleep(0.05)  # chunks scheduled before stop() are delivered
    return capture, chunks


def _tone_sequence(rate: int) -> bytes:
    return pcm.from_float(np.concatenate([pcm.tone(f, TONE_MS, rate) for f in TONES]))


def _check_sequence(captured: bytes) -> None:
    samples = pcm.to_float(captured)
    onset = int(np.flatnonzero(np.abs(samples) > 0.05)[0])
    seg = RATE * TONE_MS // 1000
    found = []
    for k in range(len(TONES)):
        middle = samples[onset + k * seg + seg // 6 : onset + (k + 1) * seg - seg // 6]
        found.append(pcm.dominant_frequency(pcm.from_float(middle), RATE))
    assert found == pytest.approx(TONES, abs=10), found


def _check_chunks(capture: Capture, chunks: list[tuple[bytes, float]]) -> bytes:
    assert chunks, "no audio captured"
    assert {len(data) for data, _ in chunks} == {capture.chunk_bytes} == {640}
    times = [t for _, t in chunks]
    assert times == sorted(times)
    return b"".join(data for data, _ in chunks)


async def test_tone_sequence_arrives_in_exact_chunks_and_order(loopback: PulseLoopback) -> None:
    capture, chunks = await _capture_while_playing(loopback, _tone_sequence(16000), 16000)
    assert capture.device_rate == RATE
    _check_sequence(_check_chunks(capture, chunks))
    assert capture.overflows == 0


async def test_device_at_48k_is_resampled_to_16k(loopback: PulseLoopback) -> None:
    capture, chunks = await _capture_while_playing(
        loopback, _tone_sequence(48000), 48000, device_rate=48000
    )
    assert capture.device_rate == 48000
    _check_sequence(_check_chunks(capture, chunks))


async def test_a_device_without_mono_is_recorded_in_stereo_and_its_first_channel_kept(
    loopback: PulseLoopback,
) -> None:
    capture, chunks = await _capture_while_playing(
        loopback, _tone_sequence(48000), 48000, device_rate=48000, channels=2
    )
    assert capture.channels == 2
    _check_sequence(_check_chunks(capture, chunks))


async def test_device_chosen_by_name(loopback: PulseLoopback) -> None:
    capture, chunks = await _capture_while_playing(
        loopback, _tone_sequence(16000), 16000, device="PULSE"
    )
    _check_sequence(_check_chunks(capture, chunks))


async def test_unknown_device_fails_at_start_listing_devices(loopback: PulseLoopback) -> None:
    capture = Capture(lambda data, t: None, device="no such microphone")
    with pytest.raises(AudioDeviceError, match=r"(?s)no such microphone.*pulse"):
        capture.start()
    assert not capture.running


async def test_overflow_is_counted_and_reported_not_fatal() -> None:
    reported: list[int] = []
    chunks: list[bytes] = []
    capture = Capture(lambda data, t: chunks.append(data), on_overflow=reported.append)
    capture._loop = asyncio.get_running_loop()  # as start() would, without a device
    frames = bytes(RATE // 50 * 2)
    for overran in (True, False, True):
        if overran:
            capture._overflowed()
        capture._deliver(frames, time.monotonic())
    await asyncio.sleep(0)
    assert capture.overflows == 2
    assert reported == [1, 2]
    assert len(chunks) == 3


async def test_with_a_preroll_chunks_wait_on_the_capture_thread_until_forwarded(
    loopback: PulseLoopback,
) -> None:
    """Between turns the loop is not woken for audio; a press gets the moments before it,
    the pre-roll (five chunks), no more: the device is read seldom between turns, and
    what waited in it at the press from before the pre-roll is not the person's turn."""
    handed: list[tuple[bytes, float]] = []
    capture = Capture(lambda data, t: handed.append((data, t)), preroll=5)
    capture.start()
    try:
        await asyncio.wait_for(capture.delivering.wait(), 5)
        player = loopback.play(pcm.from_float(pcm.tone(440, 400, RATE)), RATE, side="mic")
        await asyncio.to_thread(player.wait)
        await asyncio.sleep(0.1)
        assert handed == [], "held chunks must not reach the loop"
        preroll = capture.forward()
        forwarded = time.monotonic()
        await asyncio.sleep(0.3)
        capture.hold()
        held = time.monotonic()
        await asyncio.sleep(0.1)  # chunks scheduled before hold() are delivered
        after_hold = len(handed)
        await asyncio.sleep(0.3)
    finally:
        capture.stop()
    times = [t for _, t in preroll] + [t for _, t in handed]
    assert times == sorted(times), "the pre-roll comes before what follows, in order"
    before_press = [t for t in times if t <= forwarded]
    assert 4 <= len(before_press) <= 5, "the newest five chunks before the press, no more"
    assert forwarded - 0.105 < times[0] < forwarded - 0.075, "the pre-roll's 100 ms"
    assert np.diff(times[:10]) == pytest.approx(0.02, abs=0.015), "no gap in or after it"
    # What was recorded from the pre-roll's end to hold(), and no more (the loop's
    # sleep is only a lower bound on a busy machine: the interval is measured).
    assert all(t <= held for _, t in handed), "nothing recorded after hold() was handed over"
    assert after_hold <= (held - times[0]) / 0.02 + 1, "no chunk handed over twice"
    assert after_hold >= (held - forwarded) / 0.02 / 2, "forwarded until hold()"
    assert len(handed) == after_hold, "nothing after hold()"


async def test_the_microphone_thread_has_a_name_top_shows(loopback: PulseLoopback) -> None:
    capture = Capture(lambda data, t: None)
    capture.start()
    try:
        await asyncio.wait_for(capture.delivering.wait(), 5)
        assert "mic" in thread_names()
    finally:
        capture.stop()


async def test_a_quiet_gate_holds_back_silence_and_sends_what_came_before_speech() -> None:
    """Hands-free: after a run of quiet chunks the loop hears nothing (and is told so,
    once); the first loud chunk goes out after the pre-roll kept meanwhile."""
    handed: list[bytes] = []
    pauses: list[None] = []
    capture = Capture(
        lambda data, t: handed.append(data), chunk_ms=20, preroll=2,
        on_pause=lambda: pauses.append(None),
    )
    capture._loop = asyncio.get_running_loop()  # as start() would, without a device
    frames = RATE // 50
    quiet = [np.full(frames, n, dtype=np.int16).tobytes() for n in range(1, 7)]  # tiny levels
    loud = np.full(frames, 2000, dtype=np.int16).tobytes()
    capture.forward(QuietGate(level=100 / 32768, pause_after=3))
    for chunk in [loud, *quiet, loud]:
        capture._deliver(chunk, time.monotonic())
    await asyncio.sleep(0)
    assert handed == [loud, *quiet[:3], quiet[4], quiet[5], loud], (
        "three quiet chunks go out, then only the two before the speech"
    )
    assert len(pauses) == 1


def test_speech_after_the_box_spoke_takes_no_silence_from_before_it_as_pre_roll() -> None:
    """Hands-free with the gate: the silence a paused gate kept from before the box spoke
    is not the moments before the person's first word once it is silent again."""
    capture = Capture(lambda chunk, t: None, chunk_ms=40, preroll=3)
    capture.forward(QuietGate(level=0.01, pause_after=1))
    quiet, loud = bytes(1280), pcm.from_float(np.full(640, 0.5))
    before = time.monotonic()
    for n in range(1, 4):  # a quiet room: the gate pauses, the ring keeps the silence
        capture._route(quiet, before + 0.04 * n)
    capture.mute(True)  # the box speaks, its microphone gated
    capture.mute(False)
    after = time.monotonic() + 0.04
    handed, _ = capture._route(loud, after)
    assert handed == [(loud, after)]


def test_held_back_silence_is_read_less_often_unless_the_box_speaks() -> None:
    """Between turns and in a silence held back the reader sleeps between reads; while the
    box speaks hands-free (a person may talk over it) and at a release it does not."""
    capture = Capture(lambda chunk, t: None, chunk_ms=40, preroll=2)
    assert capture._pace() == IDLE_READ_MS
    gate = QuietGate(level=0.01, pause_after=1)
    capture.forward(gate)
    assert capture._pace() is None, "audio read as it arrives"
    gate.paused = True
    assert capture._pace() == PAUSED_READ_MS
    capture.listen_closely(True)
    assert capture._pace() is None
    capture.listen_closely(False)
    capture.finish(0.0)
    assert capture._pace() == FINISH_READ_MS


def test_recording_times_do_not_drift_with_how_late_reads_run() -> None:
    """The card records at its own steady pace; the thread that reads it runs late by a
    varying amount on a busy machine, and finds more audio waiting the later it is. The
    times put on the monotonic clock must keep the card's pace: the echo canceller lines
    the speaker up by them."""
    clock = CardClock(RATE)
    rng = np.random.default_rng(1)
    started = 1000.0  # when the card recorded its first sample
    period = RATE * 40 // 1000  # it delivers 40 ms at a time
    errors, read = [], 0
    for k in range(1, 60 * 25):  # a minute of 40 ms periods
        delivered = k * period  # frames the card has delivered by now
        late = rng.uniform(0.0, 0.05) if k % 50 else 0.0  # now and then a read runs on time
        now = started + delivered / RATE + late
        waiting = int(late * RATE) // period * period  # periods delivered while it was late
        read = delivered + waiting  # it reads all, then finds none left
        errors.append(clock.when(read, read, now) - (started + read / RATE))
    assert max(abs(e) for e in errors[50:]) < 0.0005  # from the first on-time read


@pytest.mark.parametrize("ppm", [300, 150, 0, -300])
def test_recording_times_keep_up_with_a_card_whose_clock_runs_slow(ppm: int) -> None:
    """A cheap USB card hundreds of ppm slower than the system clock, its capture open for
    hours between presses (read every IDLE_READ_MS): the times must not fall behind, or
    speech after a press is taken for audio from before it (after 6 h at 300 ppm the times
    were 4.3 s behind, and a 3 s turn reached the service as nothing)."""
    clock = CardClock(RATE)
    rng = np.random.default_rng(2)
    card_rate = RATE * (1 - ppm * 1e-6)  # its samples per second of the system's clock
    period = RATE * 40 // 1000  # it delivers 40 ms at a time
    started, now, errors = 1000.0, 1000.0, []
    for _ in range(6 * 3600 * 1000 // IDLE_READ_MS):
        now += IDLE_READ_MS / 1000 + rng.uniform(0.0, 0.003)
        recorded = int((now - started) * card_rate) // period * period
        errors.append(clock.when(recorded, recorded, now) - (started + recorded / card_rate))
    assert max(abs(e) for e in errors[100:]) < 0.010


async def test_a_release_hands_over_its_last_words_at_once() -> None:
    """finish(): what was recorded up to the release goes out as soon as it is read, the
    last chunk cut short, instead of waiting for the rest of the chunk being filled."""
    handed: list[tuple[int, float]] = []
    T = time.monotonic()  # when the first chunk's audio was recorded
    capture = Capture(lambda data, t: handed.append((len(data), t)), chunk_ms=40)
    capture._loop = asyncio.get_running_loop()  # as start() would, without a device
    quarter = bytes(capture.chunk_bytes // 4)
    capture._deliver(quarter * 5, T)  # a chunk and a quarter, up to T
    capture.finish(T + 0.02)
    capture._deliver(quarter, T + 0.01)  # read before the release's instant was recorded
    await asyncio.sleep(0)
    assert handed == [(capture.chunk_bytes, pytest.approx(T - 0.01))], "a whole chunk; more waits"
    capture._deliver(quarter, T + 0.02)  # the release's instant
    await asyncio.sleep(0)
    assert handed[1:] == [(capture.chunk_bytes * 3 // 4, pytest.approx(T + 0.02))], (
        "what was pending goes out at once, three quarters of a chunk"
    )
    handed.clear()
    capture.hold()
    capture.forward()
    capture._deliver(quarter * 5, T + 0.07)
    await asyncio.sleep(0)
    assert handed == [(capture.chunk_bytes, pytest.approx(T + 0.06))], "whole chunks again"


async def test_a_microphone_that_stops_delivering_says_so_itself(loopback: PulseLoopback) -> None:
    """The reader tells the audio keeper when its device stops delivering (the keeper no
    longer asks every second): once it has waited a read and `STALE_S` for audio, and not
    while all is well."""
    told = asyncio.Event()
    capture = Capture(lambda data, t: None, preroll=10)  # between turns: the slowest reads
    capture.on_change = told.set
    capture.start()
    try:
        await asyncio.wait_for(capture.delivering.wait(), 5)
        await asyncio.sleep(2 * IDLE_READ_MS / 1000)
        assert not told.is_set(), "nothing to say while it delivers"
        loopback.pactl("suspend-sink", MIC_SINK, "1")  # as a driver that stops delivering
        try:
            await asyncio.wait_for(told.wait(), 5)
            assert "no audio for" in (capture.trouble(STALE_S) or "")
        finally:
            loopback.pactl("suspend-sink", MIC_SINK, "0")
    finally:
        capture.stop()


class _LevelPcm(IdlePcm):
    """An ALSA capture device that delivers on time, every sample of its channels at
    `levels` (the last one for the rest): 0 is nothing but zeros (its capture switch off
    in alsamixer, the speakerphone's mute button, a driver that lost its input after a
    brown-out, a speakerphone's DSP gating its noise), 1 a working one (a quiet room)."""

    levels: ClassVar[tuple[int, ...]] = (0,)

    def read(self) -> tuple[bytes, int]:
        frame = b"".join(
            self.levels[min(channel, len(self.levels) - 1)].to_bytes(2, "little", signed=True)
            for channel in range(self.channels)
        )
        return frame * self.period_frames, 0


async def microphone_lines(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    levels: tuple[int, ...],
    *,
    stereo: bool = False,
    preroll: bool = True,
    unmuted: bool = False,
) -> tuple[list[logging.LogRecord], bool]:
    """The microphone's journal lines over a quiet spell between turns, then two turns of
    a capture whose channels read `levels` (a press begins each, or a hook: no pre-roll),
    and whether it is `silent` after them (`unmuted`: a room's noise ends the second)."""
    found = card(RESPEAKER, 1) if stereo else card(SPEAKERPHONE, 2)
    listing = ListedPortAudio(found)
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", _LevelPcm)
    monkeypatch.setattr(_LevelPcm, "levels", levels)
    monkeypatch.setattr(capture_module, "DIGITAL_SILENCE_S", 0.3)
    caplog.set_level(logging.INFO, logger="device.audio.capture")
    mic = Capture(lambda chunk, t: None, preroll=5, channels=2 if stereo else None)
    mic.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.5)  # between turns: a quiet room may be this quiet
        for turn in range(2):  # two turns: said once
            mic.forward(preroll=preroll)
            await asyncio.sleep(0.5)
            if unmuted and turn == 1:  # unmuted in the second turn
                monkeypatch.setattr(_LevelPcm, "levels", (1,))
                await asyncio.sleep(0.2)
            mic.hold()
    finally:
        mic.close_stream()
    assert mic.channels == (2 if stereo else 1)
    lines = [r for r in caplog.records if getattr(r, "LIVE_DEVICE", None) == "microphone"]
    return lines, mic.silent


@pytest.mark.parametrize("level", [0, 1])
async def test_a_microphone_that_records_only_zeros_through_a_turn_is_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    """The keeper sees a microphone that reads on time; a muted one (or one a brown-out
    left delivering zeros) looked the same, and the box answered every press with
    nothing, the journal silent. No room is that quiet: a turn of digital silence is
    said once, naming the device; a quiet room's noise is not."""
    said, silent = await microphone_lines(monkeypatch, caplog, (level,))
    assert silent == (not level), "what ctl status and the doctor say"
    if level:
        assert said == []
    else:
        assert [r.levelname for r in said] == ["WARNING"]
        assert "Jabra SPEAK 410" in said[0].getMessage()


async def test_a_microphone_unmuted_in_a_turn_is_no_longer_said_silent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Muted, then unmuted as the owner reads the journal: `ctl status` and the doctor must
    not go on calling it silent (the journal's line stays, said once)."""
    said, silent = await microphone_lines(monkeypatch, caplog, (0,), unmuted=True)
    assert not silent
    assert [r.levelname for r in said] == ["WARNING"]


async def test_a_hooks_words_to_an_empty_room_do_not_call_a_gating_microphone_muted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Hands-free, a hook's words (`ctl say`, no press) open a conversation with no
    pre-roll: nobody may be there, and a speakerphone that gates its own noise gives
    zeros. The journal said "muted (alsamixer ...)" about a microphone that works."""
    assert await microphone_lines(monkeypatch, caplog, (0,), preroll=False) == ([], False)


async def test_a_stereo_card_silent_on_the_input_the_box_hears_is_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The box hands on the first channel of a stereo card only. With nothing there (the
    microphone in input 2 of a two-input USB interface, a HAT's left microphone broken)
    the service hears digital silence; the other channel's sound kept the journal quiet."""
    said, silent = await microphone_lines(monkeypatch, caplog, (0, 1), stereo=True)
    assert [r.levelname for r in said] == ["WARNING"] and silent


async def test_a_muted_microphone_hands_over_nothing_and_keeps_nothing(
    loopback: PulseLoopback,
) -> None:
    """Hands-free with the microphone gated: while the box speaks, nothing it hears
    reaches the event loop, and none of it comes later; unmuted, chunks flow again,
    none of them recorded before."""
    chunks: list[tuple[bytes, float]] = []
    capture = Capture(lambda data, t: chunks.append((data, t)), chunk_ms=40)
    capture.start()
    try:
        await asyncio.wait_for(capture.delivering.wait(), 5)
        capture.mute(True)
        await asyncio.sleep(0.1)  # chunks already on their way to the loop
        muted = len(chunks)
        voice = loopback.play(pcm.from_float(pcm.tone(700, 600, RATE)), RATE, side="mic")
        await asyncio.to_thread(voice.wait)
        await asyncio.sleep(0.2)  # all of it recorded
        assert len(chunks) == muted, "nothing handed over while muted"
        unmuted = time.monotonic()
        capture.mute(False)
        await asyncio.sleep(0.4)
    finally:
        capture.stop()
    after = chunks[muted:]
    assert len(after) >= 5, "chunks flow again"
    assert all(t >= unmuted for _, t in after), "nothing recorded while muted"
    assert max(pcm.rms(data) for data, _ in after) < 0.01, "none of the box's own voice"


def numbered(n: int, chunk_ms: int = 20) -> bytes:
    """A chunk that says which it is."""
    return np.full(RATE * chunk_ms // 1000, 100 + n, dtype=np.int16).tobytes()


def number_of(chunk: bytes) -> int:
    return int(np.frombuffer(chunk, dtype=np.int16)[0]) - 100


async def test_a_press_taken_late_hands_over_everything_from_its_edge_and_nothing_older() -> None:
    """Between turns the ring keeps PRESS_LAG_S more than the pre-roll: a press the
    appliance took a second late gets all that was recorded from the button's edge and the
    pre-roll before it, held or still in the device; none of it twice, nothing older."""
    handed: list[int] = []
    capture = Capture(lambda data, t: handed.append(number_of(data)), chunk_ms=20, preroll=5)
    capture._loop = asyncio.get_running_loop()  # as start() would, without a device
    now = time.monotonic()
    times = [now - 2.0 + 0.02 * n for n in range(101)]  # 2 s of 20 ms chunks, up to now
    for n, t in enumerate(times[:90]):  # read before the press is taken
        capture._deliver(numbered(n), t)
    edge = now - 1.005  # the button went down a second before the press is taken
    held = [number_of(chunk) for chunk, _ in capture.forward(since=edge)]
    for n, t in enumerate(times[90:], 90):  # waiting in the device: read after forward()
        capture._deliver(numbered(n), t)
    await asyncio.sleep(0)
    first = next(n for n, t in enumerate(times) if t > edge - 0.1)  # a 100 ms pre-roll
    assert held + handed == list(range(first, 101))


async def test_a_press_over_the_box_hands_over_nothing_recorded_before_it() -> None:
    """Without the pre-roll (the box's own voice before the press), what still waited in
    the device from before the press is not handed over either."""
    handed: list[int] = []
    capture = Capture(lambda data, t: handed.append(number_of(data)), chunk_ms=20, preroll=5)
    capture._loop = asyncio.get_running_loop()
    now = time.monotonic()
    capture._deliver(numbered(0), now - 0.1)
    assert capture.forward(preroll=False) == []
    capture._deliver(numbered(1), now - 0.05)  # recorded before the press, read after it
    capture._deliver(numbered(2), time.monotonic() + 0.02)
    await asyncio.sleep(0)
    assert handed == [2]


async def test_the_ring_holds_the_lag_between_turns_and_the_pre_roll_while_forwarded() -> None:
    """Bounded: between turns the pre-roll and PRESS_LAG_S, never more; forwarded with a
    gate holding silence back, the pre-roll only (what goes out before speech resumes)."""
    capture = Capture(lambda data, t: None, chunk_ms=20, preroll=5)
    capture._loop = asyncio.get_running_loop()
    lag = round(PRESS_LAG_S * 1000 / 20)
    for n in range(1000):
        capture._deliver(numbered(n), float(n))
    assert len(capture._ring) == 5 + lag
    capture.forward(QuietGate(level=1.0, pause_after=1))
    assert capture._ring.maxlen == 5
    capture.hold()
    assert capture._ring.maxlen == 5 + lag
    assert Capture(lambda data, t: None)._ring.maxlen == 0, "no pre-roll: forwarded always"


async def test_a_thread_that_cannot_start_leaves_the_microphone_closed_to_open_again(
    loopback: PulseLoopback,
) -> None:
    """Out of threads (TasksMax) at an open: the device and its eventfd are let go, and
    the next open (the audio keeper's retry) works."""
    chunks: list[tuple[bytes, float]] = []
    capture = Capture(lambda data, t: chunks.append((data, t)))
    with no_new_threads(), pytest.raises(RuntimeError):
        capture.start()
    assert not capture.running
    capture.start()
    try:
        await until(lambda: len(chunks) >= 5, within=5)
    finally:
        capture.stop()


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


async def test_a_press_again_right_after_a_release_keeps_what_was_read_before_the_hold() -> None:
    """At a release the turn ends with the chunk that holds its instant; what the reader
    gets after it before the appliance calls hold() (the loop busy a moment) stays in the
    ring: a press right after it sends its pre-roll and its own first words, none lost."""
    handed: list[int] = []
    capture = Capture(lambda data, t: handed.append(number_of(data)), chunk_ms=20, preroll=5)
    capture._loop = asyncio.get_running_loop()  # as start() would, without a device
    now = time.monotonic()
    times = [now - 1.0 + 0.02 * n for n in range(40)]
    capture.forward(since=times[0])  # the first press
    released = times[10] - 0.005  # in chunk 10
    capture.finish(released)
    for n, t in enumerate(times[:20]):  # read before the loop gets to hold()
        capture._deliver(numbered(n), t)
    await asyncio.sleep(0)
    assert handed[:11] == list(range(11)), "the first turn, up to the chunk holding the release"
    capture.hold()
    for n, t in enumerate(times[20:], 20):
        capture._deliver(numbered(n), t)
    edge = times[13] + 0.001  # pressed again 60 ms after the release
    second = [number_of(chunk) for chunk, _ in capture.forward(since=edge)]
    # Its pre-roll (100 ms) reaches into the first turn: that went out once, not twice.
    assert second == list(range(11, 40)), "all after the first turn, none lost"


class HwPcm(IdlePcm):
    """A card's capture device opened by its hw: name: one handle at a time (ALSA says
    EBUSY to the next open until the handle is closed)."""

    held: ClassVar[int] = 0

    def __init__(self, *args: Any) -> None:
        if HwPcm.held:
            raise AlsaError(errno.EBUSY, "cannot open: Device or resource busy")
        super().__init__(*args)
        HwPcm.held += 1
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            HwPcm.held -= 1


async def test_a_microphone_start_that_fails_after_its_device_opened_lets_the_device_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the unit's descriptor limit (LimitNOFILE) the device's open took the last
    descriptor and the reader's wake-up (an eventfd) found none: the start failed with
    the device left open by a handle nobody held. Every reopen the keeper tried after,
    descriptors free again, found the card busy: the microphone never came back."""
    monkeypatch.setattr(capture_module, "open_portaudio",
                        lambda: ListedPortAudio(card(SPEAKERPHONE, 2)))  # fmt: skip
    monkeypatch.setattr(capture_module, "CapturePcm", HwPcm)
    monkeypatch.setattr(HwPcm, "held", 0)
    loop = asyncio.get_running_loop()
    mic = Capture(lambda chunk, t: None, preroll=5)
    eventfd = os.eventfd

    def no_descriptor_left(*args: Any) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "eventfd", no_descriptor_left)
    with pytest.raises(OSError, match="Too many open files"):
        mic.start(loop)
    monkeypatch.setattr(os, "eventfd", eventfd)  # descriptors free again
    try:
        mic.start(loop)  # the keeper's next try
        assert mic.running
    finally:
        mic.close_stream()
    assert HwPcm.held == 0, "the device is held by nobody's handle"
