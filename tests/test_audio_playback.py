"""Speaker playback through PortAudio on the loopback: content, clear(), drained."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from fakes import FakeParts, running
from helpers import no_new_threads, thread_names, until
from test_audio_echo import VOICE_DBFS, frames_dbfs, spoken
from test_audio_echo import reply as box_reply

from device.audio import pcm
from device.audio.earcons import earcon
from device.audio.echo import GUARD_DB, Canceller, FarEnd
from device.audio.echo import RATE as MIC_RATE
from device.audio.output_stream import PortAudioError
from device.audio.playback import BRIDGE_S, DEVICE_S, RATE, WAITING_S, Playback
from device.states import Earcon
from rig.loopback import PulseLoopback, Recorder

CHUNK = RATE // 5 * 2  # the server's ~200 ms reply chunks, in bytes


def _chirp(seconds: float, f0: float = 200.0, f1: float = 3000.0) -> np.ndarray:
    """A sweep: every position is unique, so cross-correlation aligns it exactly."""
    t = np.arange(int(RATE * seconds)) / RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return 0.5 * np.sin(phase)


def _feed_in_chunks(player: Playback, data: bytes) -> None:
    for i in range(0, len(data), CHUNK):
        player.feed(data[i : i + CHUNK])


@pytest.fixture
async def speaker(loopback: PulseLoopback) -> AsyncIterator[tuple[Playback, Recorder]]:
    recorder = loopback.record(RATE, side="speaker")
    await asyncio.to_thread(recorder.wait_started)
    player = Playback()
    player.start()
    try:
        yield player, recorder
    finally:
        player.stop()
        recorder.stop()


async def _settle(player: Playback) -> None:
    """Wait until what PortAudio holds has reached the speaker monitor."""
    await asyncio.sleep(player.output_latency + 0.2)


async def test_fed_audio_reaches_the_speaker_unchanged(loopback: PulseLoopback) -> None:
    # Recorded at the sink's own rate: recording at 24 kHz would add a random
    # half-sample delay (which 48 kHz frame the stream started on) to the comparison.
    recorder = loopback.record(loopback.rate, side="speaker")
    await asyncio.to_thread(recorder.wait_started)
    player = Playback()
    player.start()
    try:
        sent = _chirp(1.0)
        _feed_in_chunks(player, pcm.from_float(sent))
        await asyncio.wait_for(player.play_out(), 5)
        await _settle(player)
    finally:
        player.stop()
        heard = pcm.to_float(recorder.stop())
    sent = soxr.resample(sent, RATE, loopback.rate)
    offset, score = pcm.find_offset(heard, sent)
    assert score > 0.99, score
    residual = heard[offset : offset + sent.size] - sent
    assert pcm.rms_dbfs(pcm.from_float(residual)) < pcm.rms_dbfs(pcm.from_float(sent)) - 30


async def test_clear_silences_the_speaker_and_drops_the_rest(
    loopback_latency: float, speaker: tuple[Playback, Recorder]
) -> None:
    player, recorder = speaker
    before, after = 440.0, 1320.0  # the part fed after 1 s must never be heard
    reply = np.concatenate([pcm.tone(before, 1000, RATE), pcm.tone(after, 2000, RATE)])
    _feed_in_chunks(player, pcm.from_float(reply))
    await asyncio.sleep(0.4)
    cleared_at = time.monotonic()
    dropped = player.clear()
    assert dropped > 0
    assert player.buffered_ms == 0
    assert player.drained.is_set()
    await _settle(player)
    recorder.stop()

    margin = player.output_latency + loopback_latency + 0.05
    silent = recorder.silent_from()
    assert silent is not None
    assert silent <= cleared_at + margin, (silent - cleared_at, margin)
    heard = recorder.pcm()
    spectrum = np.abs(np.fft.rfft(pcm.to_float(heard)))
    freqs = np.fft.rfftfreq(len(heard) // 2, 1 / RATE)
    near = lambda f: spectrum[np.abs(freqs - f) < 15].max()  # noqa: E731
    assert near(before) > 100 * near(after)


async def test_drained_fires_once_the_last_sample_has_sounded(
    loopback_latency: float, speaker: tuple[Playback, Recorder]
) -> None:
    """The appliance moves on (LEDs, an open microphone) only once the reply is silent."""
    player, recorder = speaker
    first = pcm.from_float(pcm.tone(600, 300, RATE))
    fed_at = time.monotonic()
    player.feed(first)
    assert not player.drained.is_set()
    await asyncio.sleep(0.15)
    player.feed(first)  # a second feed moves the end further away
    await asyncio.sleep(0.25)
    assert not player.drained.is_set()  # 600 ms fed, at most ~400 ms played
    await asyncio.wait_for(player.play_out(), 5)
    drained_at = time.monotonic()
    assert player.buffered_ms == 0
    assert drained_at - fed_at >= 0.6 - 0.02, "it cannot play faster than real time"
    await _settle(player)
    recorder.stop()
    end_of_sound = recorder.silent_from()
    assert end_of_sound is not None
    assert end_of_sound <= drained_at + loopback_latency + 0.02, "nothing was left to hear"


async def test_a_feeder_waits_while_the_speaker_is_full_and_a_clear_frees_it(
    speaker: tuple[Playback, Recorder],
) -> None:
    player, _ = speaker
    player.feed(pcm.from_float(pcm.tone(440, 1000, RATE)))
    await asyncio.wait_for(player.wait_for_room(1.5), 5)  # room: less than 1.5 s queued
    player.feed(pcm.from_float(pcm.tone(440, 1000, RATE)))
    waiting = asyncio.create_task(player.wait_for_room(1.5))
    await asyncio.wait_for(waiting, 5)  # free once it has played down below 1.5 s
    assert player.buffered_ms < 1500
    _feed_in_chunks(player, pcm.from_float(pcm.tone(440, 4000, RATE)))
    waiting = asyncio.create_task(player.wait_for_room(1.5))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    player.clear()  # a barge-in: nothing left to wait for
    await asyncio.wait_for(waiting, 1)


@pytest.mark.parametrize("channels", [1, 2])
async def test_device_at_48k_gets_resampled_audio(loopback: PulseLoopback, channels: int) -> None:
    """Also on a device that takes no mono (a HAT's raw hw: device): every channel plays it."""
    recorder = loopback.record(RATE, side="speaker")
    await asyncio.to_thread(recorder.wait_started)
    player = Playback(device_rate=48000, channels=channels)
    player.start()
    try:
        assert (player.device_rate, player.channels) == (48000, channels)
        player.feed(pcm.from_float(pcm.tone(1000, 500, RATE)), last=True)
        await asyncio.wait_for(player.wait_drained(), 5)
        await _settle(player)
    finally:
        player.stop()
        heard = recorder.stop()
    samples = pcm.to_float(heard)
    loud_at = np.flatnonzero(np.abs(samples) > 0.05)
    loud = samples[loud_at[0] : loud_at[-1]]
    assert loud.size > RATE * 0.45
    assert pcm.dominant_frequency(pcm.from_float(loud), RATE) == pytest.approx(1000, abs=10)


async def test_output_latency_is_reported(speaker: tuple[Playback, Recorder]) -> None:
    player, _ = speaker
    assert 0 < player.output_latency < 1.0
    print(f"playback output latency {player.output_latency * 1000:.1f} ms")


async def test_the_speaker_runs_only_while_it_has_something_to_play(
    speaker: tuple[Playback, Recorder],
) -> None:
    """Nothing to play: the stream is stopped (no writes, no CPU); a sound fed then plays
    whole, and the stream stops again once it has. The keeper sees it healthy throughout,
    and is told when it starts (it watches a playing speaker's driver every second)."""
    player, recorder = speaker
    told = asyncio.Event()
    player.on_change = told.set
    await asyncio.sleep(0.3)
    assert not player.running and not player.busy, "nothing was fed"
    assert player.trouble(stale_s=0.1) is None, "stopped on purpose is not a fault"

    fed = time.monotonic()
    player.feed(pcm.from_float(pcm.tone(1000, 300, RATE)), last=True)
    assert player.trouble(stale_s=0.1) is None
    await asyncio.wait_for(told.wait(), 2)
    assert player.busy, "playing"
    await asyncio.wait_for(player.wait_drained(), 5)
    assert not player.running and not player.busy, "played: stopped again"
    await _settle(player)
    assert recorder.first_sound(after=fed) is not None, "the sound fed played"
    samples, times = recorder.timeline()
    loud = np.abs(samples[times > fed]) > 0.05
    assert np.count_nonzero(loud) > RATE * 0.25, "the whole 300 ms tone"
    writes = player._last_call
    await asyncio.sleep(0.3)
    assert player._last_call == writes, "a stopped speaker is left alone"
    assert player.trouble(stale_s=0.1) is None
    assert "speaker" in thread_names(), "the thread that wrote it has a name top shows"


async def test_a_reply_starts_without_spawning_a_process(
    speaker: tuple[Playback, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a reply's first chunk and the device there is only the device: naming the
    writer's thread looked for libc with `find_library`, which runs `ldconfig -p` in a
    new process (1.5 ms here, far more on a Pi), as every reply started."""
    player, recorder = speaker
    spawned: list[object] = []
    popen = subprocess.Popen

    def counted(*args: Any, **options: Any) -> Any:
        spawned.append(args or options)
        return popen(*args, **options)

    monkeypatch.setattr(subprocess, "Popen", counted)
    for reply in range(2):  # the first run of the stream and one like every later one
        fed = time.monotonic()
        player.feed(pcm.from_float(pcm.tone(1000, 100, RATE)), last=True)
        await asyncio.wait_for(player.wait_drained(), 5)
        await _settle(player)
        assert recorder.first_sound(after=fed) is not None, f"reply {reply} played"
    assert spawned == []


class _Device:
    """An output stream that keeps what it was handed: what the speaker sounded."""

    frame_bytes = 2
    output_latency = 0.0

    def __init__(self) -> None:
        self.active = False
        self.written = bytearray()
        self.lock = threading.Lock()

    def start(self) -> None:
        self.active = True

    def write(self, frames: bytes) -> bool:
        with self.lock:
            self.written += frames
        return False

    def stop(self) -> None:
        self.active = False

    abort = stop

    def is_active(self) -> bool:
        return self.active

    def close(self) -> None:
        self.active = False


class _HangingDevice(_Device):
    """An output stream whose writes stop returning after the first: a driver that hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.writes, self.driver = 0, threading.Event()

    def write(self, frames: bytes) -> bool:
        self.writes += 1
        if self.writes > 1:
            self.driver.wait()
        return super().write(frames)


class _Speaker(Playback):
    """Playback on fake output streams: a new one from `device` at each open (a card
    plugged back)."""

    def __init__(self, device: Callable[[], _Device] = _Device, rate: int = RATE) -> None:
        super().__init__()
        self.new_device, self.card_rate = device, rate
        self.devices: list[_Device] = []

    def _open(self, pa: object) -> _Device:  # type: ignore[override]
        self.device_rate, self.channels = self.card_rate, 1
        self._resampler = self._new_resampler()
        self.devices.append(self.new_device())
        return self.devices[-1]

    def heard(self) -> np.ndarray:
        """What the last stream opened was handed: what the speaker sounded."""
        device = self.devices[-1]
        with device.lock:
            return np.frombuffer(bytes(device.written), dtype=np.int16)


@contextlib.contextmanager
def started() -> Iterator[_Speaker]:
    """A speaker on fake cards, started for the block and stopped after it."""
    player = _Speaker()
    player.start()
    try:
        yield player
    finally:
        player.stop()


async def test_half_volume_sounds_half_as_loud() -> None:
    """The volume is squared (set_volume at 50% is -12 dB, half as loud to the ear): a
    linear scale makes the lower half of the range barely quieter than full."""
    with started() as player:
        player.volume = 0.5
        tone = pcm.from_float(0.5 * pcm.tone(440, 200, RATE))
        player.feed(tone)
        await asyncio.wait_for(player.play_out(), 5)
    played = player.heard().astype(np.float64)
    fed = np.frombuffer(tone, dtype=np.int16).astype(np.float64)
    assert np.max(np.abs(played)) == pytest.approx(np.max(np.abs(fed)) * 0.25, rel=0.01)


async def test_a_barge_in_silences_the_speaker_for_good() -> None:
    """clear() (a press over the reply, an interruption) drops all that was queued: the
    rest of the reply never plays after it."""
    with started() as player:
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 3000, RATE)))
        await until(lambda: player.heard().size > 0)
        at_clear = player.heard().size
        player.clear()
        await asyncio.sleep(0.5)  # the reply would have played on for as long
        # At most the piece the writer was handing over as the clear came (DEVICE_S).
        assert player.heard().size - at_clear < 0.2 * RATE, "the reply played on"


async def test_the_drain_waits_for_what_was_fed_to_play() -> None:
    """A reply fed after the last one drained is not drained until it has played: the
    machine's AwaitDrain ended the turn at once, the LEDs idle (hands-free, the microphone
    open to the box's own voice) while the reply still played."""
    with started() as player:
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 100, RATE)))
        await asyncio.wait_for(player.play_out(), 5)  # the last reply, played out
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 300, RATE)))
        assert not player.drained.is_set(), "drained before a sample of it played"
        await asyncio.wait_for(player.play_out(), 5)
        assert player.heard().size >= 0.4 * RATE


async def test_a_barge_in_counts_as_drained() -> None:
    """After clear() nothing is left to play: whatever waits for the drain (the turn's
    end) goes on at once, not after the next reply someone may never ask for."""
    with started() as player:
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 3000, RATE)))
        await until(lambda: player.heard().size > 0)
        player.clear()
        await asyncio.wait_for(player.wait_drained(), 1)


async def test_a_write_that_never_returns_is_trouble_that_names_the_call() -> None:
    """What the journal says when the keeper gives the speaker up: which PortAudio call
    hung, not only that the device went quiet."""
    device = _HangingDevice()

    player = _Speaker(lambda: device)
    player.start()
    try:
        player.feed(pcm.from_float(pcm.tone(1000, 1000, RATE)))
        assert player.trouble(stale_s=0.3) is None, "a speaker just fed is fine"
        await until(lambda: player.trouble(stale_s=0.3) is not None)
        assert device.writes == 2
        assert str(player.trouble(stale_s=0.3)).startswith("write() has not returned for 0.")
    finally:
        device.driver.set()
        player.stop()


class _StuckOnStart(_HangingDevice):
    """An output stream whose start never returns: a driver that hangs there."""

    def start(self) -> None:
        self.driver.wait()
        self.active = True


async def test_a_start_that_never_returns_is_busy_and_trouble_that_names_the_call() -> None:
    """The keeper is told as the stream starts and looks every second while it plays: a
    start stuck in the driver is found too (the reply would never drain)."""
    device = _StuckOnStart()

    told = asyncio.Event()
    player = _Speaker(lambda: device)
    player.on_change = told.set
    player.start()
    try:
        player.feed(pcm.from_float(pcm.tone(1000, 300, RATE)))
        await asyncio.wait_for(told.wait(), 2)
        assert player.busy and not player.running, "starting: busy before the stream runs"
        assert player.trouble(stale_s=0.3) is None, "a start just asked for is fine"
        await until(lambda: player.trouble(stale_s=0.3) is not None)
        assert str(player.trouble(stale_s=0.3)).startswith("start() has not returned for 0.")
    finally:
        device.driver.set()
        player.stop()


async def test_a_thread_that_cannot_start_leaves_the_speaker_closed_to_open_again(
    loopback: PulseLoopback,
) -> None:
    """Out of threads (TasksMax) at an open: the stream is closed, and the next open (the
    audio keeper's retry) plays."""
    recorder = loopback.record(RATE, side="speaker")
    await asyncio.to_thread(recorder.wait_started)
    player = Playback()
    with no_new_threads(), pytest.raises(RuntimeError):
        player.start()
    player.start()
    try:
        player.feed(pcm.from_float(pcm.tone(440, 500, RATE)))
        await asyncio.wait_for(player.play_out(), 5)
        await _settle(player)
    finally:
        player.stop()
        heard = recorder.stop()
    assert abs(pcm.dominant_frequency(heard, RATE) - 440) < 10


async def test_an_error_beep_while_the_speaker_is_gone_is_not_played_when_it_comes_back() -> None:
    """A press while the card is unplugged gets the error earcon; nobody hears it then. It
    must not sound minutes later, as the owner plugs the card back and all is well."""
    player = _Speaker()
    player.start()
    player.stop()  # the audio keeper closed the speaker: its card went
    player.feed(earcon(Earcon.ERROR))  # a press in the error state
    player.start()  # the card is back
    try:
        await asyncio.sleep(0.3)
        assert bytes(player.devices[-1].written) == b"", "a stale error beep at recovery"
        assert player.drained.is_set()
        player.feed(earcon(Earcon.LISTEN_START))  # the next press's, heard
        await until(lambda: len(player.devices[-1].written) > 0)
    finally:
        player.stop()


class _Clock:
    """The writer's clock, moved by the test: when the device runs out of audio is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _wake(player: Playback) -> None:
    """The writer looks at the clock now, not when its wait for it would have ended."""
    with player._cond:
        player._cond.notify()


async def _play_to(player: _Speaker, clock: _Clock, samples: int) -> None:
    """Move the clock on, a period at a time, until the device was handed `samples`."""
    while player.heard().size < samples:
        clock.now += 0.01
        _wake(player)
        await asyncio.sleep(0.005)


async def test_a_chunk_fed_just_before_the_speaker_runs_dry_follows_without_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A jittery link: the reply's next chunk comes 7 ms before the device has played the
    one before. It is on time, and must follow on at once: not behind the trailing silence
    meant for the reply's end (10 ms of silence in the middle of a word: a click)."""
    clock = _Clock()
    monkeypatch.setattr("device.audio.playback.time", clock)
    chunk = pcm.from_float(0.5 * pcm.tone(440, 200, RATE) + 0.1)  # no sample is silent
    samples = len(chunk) // 2
    with started() as player:
        start = clock.now
        player.feed(chunk)
        await until(lambda: player.heard().size > 0)  # the device starts at `start`
        await _play_to(player, clock, samples)  # all of it: the device runs out at 0.2 s
        clock.now = start + 0.193
        _wake(player)
        await asyncio.sleep(0.1)  # the writer has looked at the device: 7 ms left
        player.feed(chunk)
        await _play_to(player, clock, 2 * samples)
        heard = player.heard()
    silent = np.count_nonzero(heard[: 2 * samples] == 0)
    assert silent == 0, f"{silent * 1000 / RATE:.0f} ms of silence between the chunks"


async def test_a_burst_after_a_gap_in_arrival_plays_whole_and_in_order() -> None:
    """A link that stalls: a chunk, nothing for longer than BRIDGE_S (the speaker stops), then
    a second's worth at once. Everything fed sounds once, in order: nothing lost, doubled
    or cut at the restart, and the silence is the gap's alone."""
    chunks = [pcm.from_float(0.5 * pcm.tone(300 + 100 * i, 200, RATE) + 0.1) for i in range(6)]
    with started() as player:
        player.feed(chunks[0])
        await asyncio.wait_for(player.wait_drained(), 5)  # played out, bridged: the gap
        for chunk in chunks[1:]:
            player.feed(chunk)
        await asyncio.wait_for(player.play_out(), 5)
        heard = player.heard()
    assert heard[heard != 0].tobytes() == b"".join(chunks)


class _Speaker48k(Playback):
    """The real speaker on a card that plays 48 kHz only (a USB speakerphone, a HAT's raw
    hw: device): the reply's 24 kHz goes through the resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.card = _Device()

    def _open(self, pa: object) -> _Device:  # type: ignore[override]
        self.device_rate, self.channels = 48000, 1
        self._resampler = self._new_resampler()
        return self.card

    def heard(self) -> np.ndarray:
        with self.card.lock:
            return np.frombuffer(bytes(self.card.written), dtype=np.int16)


@dataclass
class _Card48kParts(FakeParts):
    def speaker(self):  # type: ignore[no-untyped-def]
        return self._keep("speaker", _Speaker48k())


async def test_the_go_ahead_beep_sounds_whole_on_a_48_khz_card(tmp_path: Path) -> None:
    """A press on a box whose card plays 48 kHz: the beep that says "go ahead" sounds whole,
    ending in its fade, before the person talks. The resampler held its last 17 ms back
    until the next sound was fed (the release's beep, seconds later): the beep stopped with
    a click, and its end came glued to the next one."""
    async with running(tmp_path, parts_class=_Card48kParts) as box:
        speaker: _Speaker48k = box.parts.made["speaker"]
        await box.ctl("press")
        await asyncio.wait_for(speaker.wait_drained(), 5)
        heard = speaker.heard()
    beep = np.frombuffer(earcon(Earcon.LISTEN_START), dtype=np.int16)
    sounded = heard[: np.flatnonzero(heard)[-1] + 1]
    assert abs(sounded.size - 2 * beep.size) <= 48, f"{sounded.size} of {2 * beep.size} samples"
    assert np.abs(sounded[-10:]).max() < 0.01 * 32768, "cut short, not faded"


async def test_a_reply_after_a_beep_sounds_on_a_48_khz_card() -> None:
    """A box whose card plays 48 kHz: the go-ahead beep (fed whole, to its fade), then the
    reply. The resampler, told the beep was its last input, refused any more ("Input
    after last input") unless made anew: every sound after the first beep was lost."""
    player = _Speaker(rate=48000)
    player.start()
    try:
        player.feed(earcon(Earcon.LISTEN_START), last=True)
        await asyncio.wait_for(player.wait_drained(), 5)
        beep = player.heard().size
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 300, RATE)))
        await asyncio.wait_for(player.play_out(), 5)
        reply = player.heard()[beep:]
    finally:
        player.stop()
    sounded = np.flatnonzero(reply)
    span = (sounded[-1] - sounded[0] + 1) / 48000 if sounded.size else 0.0
    assert abs(span - 0.3) < 0.002, f"{span:.3f} s of the 300 ms reply sounded"
    assert abs(pcm.dominant_frequency(reply.tobytes(), 48000) - 440) < 10


async def test_a_barge_in_on_a_48_khz_card_leaves_nothing_of_the_reply_for_the_next_sound() -> None:
    """A press over the reply on a 48 kHz card: what the resampler held of the reply goes
    with the rest, and the next sound (the go-ahead beep) starts clean, without the last
    milliseconds of the words it cut."""
    player = _Speaker(rate=48000)
    player.start()
    try:
        player.feed(pcm.from_float(np.full(RATE, 0.5)))  # the reply: all above zero
        await until(lambda: player.heard().size > 0)
        player.clear()
        await until(lambda: not player.devices[-1].active)
        cut = player.heard().size
        player.feed(pcm.from_float(np.full(RATE // 10, -0.5)), last=True)  # all below
        await asyncio.wait_for(player.wait_drained(), 5)
        after = player.heard()[cut:]
    finally:
        player.stop()
    assert after.size > 0 and after.max() < 0.05 * 32768, "the cut reply sounded again"


class _CountingDevice(_Device):
    """A fake output stream that counts its runs: each start is one."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        super().start()


async def _ride(
    player: _Speaker, clock: _Clock, seconds: float, each: Callable[[], None] = lambda: None
) -> None:
    """Move the clock on `seconds`, 4 ms at a time, each step once the writer has done what
    that moment asks of it (as `Playback._next` decides): refilled the device, or stopped;
    then `each` (what else happens as time goes on)."""
    device, far = player.devices[-1], player.far_end
    assert far is not None

    def done() -> bool:
        if not device.active:
            return not player.buffered_ms  # or it starts the stream for that
        if player._tail:  # the trailing silence: it stops once that has played
            return not far.quiet_since(clock.now)
        return not far.quiet_since(clock.now + (DEVICE_S / 2 if player.buffered_ms else WAITING_S))

    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.004
        _wake(player)
        await until(done)
        each()


@contextlib.contextmanager
def _hands_free(
    monkeypatch: pytest.MonkeyPatch,
    rate: int = RATE,
    device: Callable[[], _CountingDevice] = _CountingDevice,
) -> Iterator[tuple[_Speaker, _Clock, FarEnd]]:
    """A speaker on a counting fake card (playing `rate`) with the echo canceller's
    reference, on a clock the test moves."""
    clock = _Clock()
    monkeypatch.setattr("device.audio.playback.time", clock)
    player = _Speaker(device, rate)
    player.far_end = far = FarEnd()
    player.start()
    try:
        yield player, clock, far
    finally:
        player.stop()


def _words(ms: int, hz: float) -> bytes:
    """A stretch of a reply where no sample is silent."""
    return pcm.from_float(0.5 * pcm.tone(hz, ms, RATE) + 0.1)


async def test_a_gap_inside_a_reply_keeps_the_speaker_running_and_the_echo_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A jittery link: a reply's next audio comes 300 ms after the device played all it had.
    The stream runs on through the gap on silence: the echo canceller's reference follows on
    (a new run of the stream moved it: AEC3 started afresh and lowered a person talking over
    the box 20 dB for its next second of speaking), and what came after plays whole, in order."""
    first, second = _words(200, 440), _words(600, 660)
    with _hands_free(monkeypatch) as (player, clock, far):
        player.feed(first)
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, 0.2 + 0.3)
        player.feed(second)
        await _ride(player, clock, 0.6)
        heard, device = player.heard(), player.devices[-1]
        assert device.starts == 1, "the stream stopped in the gap and started again"
        assert not far.moved, "the canceller's reference did not follow on"
    assert heard[heard != 0].tobytes() == first + second
    bridged = 0.3 + DEVICE_S / 2 + 0.01  # the gap, what the device holds of the bridge, a period
    assert np.count_nonzero(heard == 0) <= bridged * RATE, "more than the gap's silence"


async def test_a_writer_late_in_a_gap_of_the_reply_leaves_the_echo_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy Pi: the writer wakes 30 ms late while the speaker plays on through a gap (as
    it may while audio plays: the device holds DEVICE_S / 2 ahead for that). The bridge
    held 5-15 ms of silence: the device ran dry, the stream's timeline jumped, and the
    canceller started afresh, which the bridge is there to prevent."""
    first, second = _words(200, 440), _words(400, 660)
    with _hands_free(monkeypatch) as (player, clock, far):
        player.feed(first)
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, 0.2 + 0.1)  # 100 ms into the gap
        clock.now += 0.03  # the writer held up (nothing it could have done meanwhile)
        await _ride(player, clock, 0.1)
        player.feed(second)
        await _ride(player, clock, 0.5)
        assert player.devices[-1].starts == 1
        assert not far.moved, "the canceller's reference did not follow on"
    heard = player.heard()
    assert heard[heard != 0].tobytes() == first + second


class _RunsDryOnce(_CountingDevice):
    """A card that says, at its fourth write, that it ran out of audio meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, frames: bytes) -> bool:
        super().write(frames)
        self.writes += 1
        return self.writes == 4


async def test_a_card_that_ran_dry_with_audio_waiting_moves_the_echo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The card ran out while the reply's audio waited for it (its clock and the writer's
    count disagreed): what it played since sounds later than the reference says, and the
    canceller is told the echo moved (it starts afresh, guarded). Not told, it went on
    with an echo that came later than it looked for, and let it through."""
    with _hands_free(monkeypatch, device=_RunsDryOnce) as (player, clock, far):
        player.feed(_words(600, 440))
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, 0.6)
        assert player.underflows == 1
        assert far.moved, "the canceller was not told the echo moved"


@pytest.mark.parametrize("card_rate", [RATE, 48000])
async def test_the_reply_end_stops_the_speaker_at_once_after_a_gap(
    monkeypatch: pytest.MonkeyPatch, card_rate: int
) -> None:
    """The reply is over (its end, or an earcon, fed with last=True): the stream stops after
    the trailing silence and the drain comes (the LEDs, and the gated microphone, wait for
    it), not after the longest gap a reply may have. On a 48 kHz card (a USB speakerphone)
    the end comes with audio, the resampler's tail, and is the end all the same."""
    with _hands_free(monkeypatch, card_rate) as (player, clock, _):
        player.feed(_words(200, 440))
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, 0.2 + 0.1)  # in a gap of the reply
        player.feed(b"", last=True)  # AwaitDrain: the reply's end
        await _ride(player, clock, DEVICE_S)  # what the device holds of the bridge
        assert player.drained.is_set() and not player.devices[-1].active


async def test_a_second_gap_later_in_a_long_reply_is_bridged_as_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long reply on a jittery link: a gap, seconds of words, another gap. Each is
    bridged on its own: counted from the first, the second was past BRIDGE_S at once, the
    stream stopped and started again, and the canceller started afresh (a person talking
    over the box lowered for their next second of speaking)."""
    first, middle, last = (
        _words(200, 440),
        _words(round(1000 * (BRIDGE_S + 0.5)), 550),
        _words(200, 660),
    )
    with _hands_free(monkeypatch) as (player, clock, far):
        player.feed(first)
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, 0.2 + 0.3)  # the first gap
        player.feed(middle)
        await _ride(player, clock, BRIDGE_S + 0.5 + 0.3)  # the words, then the second gap
        player.feed(last)
        await _ride(player, clock, 0.2)
        assert player.devices[-1].starts == 1, "the stream stopped in the second gap"
        assert not far.moved, "the canceller's reference did not follow on"
    heard = player.heard()
    assert heard[heard != 0].tobytes() == first + middle + last


async def test_a_gap_longer_than_the_bridge_stops_the_speaker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The link stalls past BRIDGE_S in the middle of a reply (a tool's long wait, a link gone):
    the speaker stops as at a reply's end, and the rest starts a new run of the stream."""
    with _hands_free(monkeypatch) as (player, clock, far):
        player.feed(_words(200, 440))
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, 0.2 + BRIDGE_S + 0.05)
        assert player.drained.is_set() and not player.devices[-1].active
        player.feed(_words(200, 660))
        await until(lambda: player.devices[-1].starts == 2)
        # The echo canceller is told: a new run (its echo is found again), not an xrun.
        assert far.new_run and not far.moved


async def test_a_barge_in_in_a_gap_of_the_reply_silences_the_speaker_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A press (or the person's words) while the speaker plays on through a gap: it stops
    there and then, the drain comes, and the echo reference knows nothing more plays."""
    with _hands_free(monkeypatch) as (player, clock, far):
        player.feed(_words(200, 440))
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, 0.2 + 0.1)
        player.clear()
        await until(lambda: not player.devices[-1].active)
        assert player.drained.is_set() and far.quiet_since(clock.now)


#: The person talking over the box hands-free just after a gap: the real writer feeds the
#: real canceller's reference, as in the appliance.
BLOCK = MIC_RATE * 40 // 1000  # the capture's 40 ms blocks
ACOUSTIC_S = 0.003  # from the writer's count of when a sample plays to the microphone
ECHO_GAIN = 0.2  # the box's voice at the microphone: -34 dBFS, the person's -26
STRETCH_S = 1.5  # the box speaks this long, its link stalls, and it speaks as long again


async def _talk_over(monkeypatch: pytest.MonkeyPatch, gap_s: float) -> float:
    """The box speaks, its link stalls `gap_s`, it speaks on, and 100 ms into that the
    person says "Stop, what about Sunday?": how much quieter their words went to the
    service than they said them (the median over the 20 ms frames of speech, in dB)."""
    talker = np.zeros(round((2 * STRETCH_S + gap_s) * MIC_RATE))
    said = spoken("Stop, what about Sunday?", -26.0)[:MIC_RATE]
    words_at = round((STRETCH_S + gap_s + 0.1) * MIC_RATE)
    talker[words_at : words_at + said.size] = said
    box = pcm.from_float(soxr.resample(box_reply(2 * STRETCH_S), MIC_RATE, RATE))
    first = round(STRETCH_S * RATE) * 2
    rng = np.random.default_rng(5)
    with _hands_free(monkeypatch) as (player, clock, far):
        canceller, t0, out = Canceller(far), clock.now, []

        def capture() -> None:
            """The microphone's blocks recorded by now: the person, and the box's echo."""
            while t0 + (len(out) + 1) * BLOCK / MIC_RATE <= clock.now:
                at = len(out) * BLOCK
                if at + BLOCK > talker.size:
                    return
                echo = pcm.to_float(far.heard(t0 + at / MIC_RATE - ACOUSTIC_S, BLOCK).tobytes())
                mic = talker[at : at + BLOCK] + echo * ECHO_GAIN + rng.normal(0, 1e-4, BLOCK)
                recorded = np.frombuffer(pcm.from_float(mic), dtype=np.int16)
                out.append(canceller.process(recorded, t0 + at / MIC_RATE))

        player.feed(box[:first])
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, STRETCH_S - 0.05 + gap_s, capture)  # 50 ms still queued
        player.feed(box[first:])
        await _ride(player, clock, STRETCH_S + 0.05, capture)
    cleaned = np.concatenate(out)
    assert frames_dbfs(cleaned, 1.0, STRETCH_S).max() < VOICE_DBFS  # the box alone: not heard
    start, end = words_at / MIC_RATE, (words_at + said.size) / MIC_RATE
    as_said, heard = frames_dbfs(talker, start, end), frames_dbfs(cleaned, start, end)
    speech = as_said > VOICE_DBFS
    return float(np.median(as_said[speech] - heard[speech]))


async def test_words_just_after_a_gap_in_the_reply_are_heard_as_over_a_reply_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A jittery link leaves 300 ms between two stretches of the reply. A new run of the
    speaker's stream made the canceller start afresh and lower a person talking over the
    box GUARD_DB for its next second of speaking: their "Stop" never reached the service as
    speech, and the reply talked on over them."""
    without_gap = await _talk_over(monkeypatch, 0.0)
    after_gap = await _talk_over(monkeypatch, 0.3)
    assert after_gap < without_gap + GUARD_DB / 2, (after_gap, without_gap)


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


async def test_a_speaker_reopened_after_its_card_failed_is_healthy_and_plays_out() -> None:
    """The audio keeper reopens a speaker whose writer stopped on its card's error (the
    card pulled and plugged back). Reopened on a card that works, it is no trouble any
    more (else the keeper would reopen it again at every check, and cut every reply), and
    a wait for a reply to play out waits for the reply, not for the old failure."""
    cards: Iterator[Callable[[], _Device]] = iter((_PulledCard, _Device))
    player = _Speaker(lambda: next(cards)())
    player.start()
    try:
        player.feed(pcm.from_float(0.5 * pcm.tone(440, 100, RATE)))
        with pytest.raises(OSError, match="Unanticipated host error"):
            await asyncio.wait_for(player.play_out(), 5)
        assert player.trouble(stale_s=60) == "PortAudio failed"
        player.stop()
        player.start()  # the keeper's reopen, on the card plugged back
        assert player.trouble(stale_s=60) is None
        tone = pcm.from_float(0.5 * pcm.tone(440, 300, RATE))
        player.feed(tone)
        await asyncio.wait_for(player.play_out(), 5)
        assert player.heard().size >= len(tone) // 2, "play_out ended before the reply played"
    finally:
        player.stop()


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
