"""The rig's room: the speaker heard at the microphone, a reverberation, a fan."""

from __future__ import annotations

import time

import numpy as np
import pytest

from device.audio import pcm
from rig.acoustic import AcousticPath, Room, pink_noise
from rig.loopback import PulseLoopback

RATE = 16000


def _click_at_the_microphone(loopback: PulseLoopback, room: Room) -> tuple[np.ndarray, float]:
    """Play a click into the speaker; (the microphone's recording from the click's time on,
    the click's energy as played)."""
    click = np.zeros(RATE)
    click[RATE // 4 : RATE // 4 + 16] = 0.5
    with AcousticPath(loopback, room):
        mic = loopback.record(RATE, side="mic")
        speaker = loopback.record(RATE, side="speaker")
        mic.wait_started()
        speaker.wait_started()
        loopback.play(pcm.from_float(click), RATE, side="speaker").wait()
        time.sleep(0.6)  # the reverberation's tail
        heard, at = mic.timeline()
        played, played_at = speaker.timeline()
        mic.stop()
        speaker.stop()
    onset = float(played_at[np.flatnonzero(np.abs(played) > 0.1)[0]])
    after = heard[at >= onset - 0.005]
    return after[:RATE], float(np.sum(click**2))


def _tail_dbfs(heard: np.ndarray) -> float:
    """Loudness 50-250 ms after the click reached the microphone (measured from its
    arrival, so the recordings' own offsets do not count)."""
    arrived = np.flatnonzero(np.abs(heard) > 0.01)
    assert arrived.size, "the click never reached the microphone"
    start = arrived[0] + RATE // 20
    return pcm.rms_dbfs(pcm.from_float(heard[start : start + RATE // 5]))


def test_the_speaker_reaches_the_microphone_late_and_quieter(loopback: PulseLoopback) -> None:
    heard, energy = _click_at_the_microphone(loopback, Room(delay_ms=20, gain_db=-12))
    arrived = np.flatnonzero(np.abs(heard) > 0.05)
    assert arrived.size, "the click never reached the microphone"
    assert 0.012 < arrived[0] / RATE < 0.05  # about the configured 20 ms
    assert 10 * np.log10(np.sum(heard**2) / energy) == pytest.approx(-12, abs=1.5)


def test_the_echo_keeps_its_delay_while_the_speaker_starts_and_stops(
    loopback: PulseLoopback,
) -> None:
    """Each reply starts and stops the speaker's stream; a room's echo does not move with
    it (an echo that moves is one the canceller must find again, and lets through)."""
    rng = np.random.default_rng(0)
    with AcousticPath(loopback, Room(delay_ms=10, gain_db=-6)):
        mic = loopback.record(RATE, side="mic")
        speaker = loopback.record(RATE, side="speaker")
        mic.wait_started()
        speaker.wait_started()
        for _ in range(6):
            burst = rng.standard_normal(RATE // 2) * 0.1
            loopback.play(pcm.from_float(burst), RATE, side="speaker").wait()
            time.sleep(0.2)
        heard, heard_at = mic.timeline()
        played, played_at = speaker.timeline()
        mic.stop()
        speaker.stop()
    # Both sample streams as recorded, the speaker's placed on the microphone's by their
    # first samples' times: a move inside either shows as a lag that changes.
    offset = round((played_at[0] - heard_at[0]) * RATE)
    if offset > 0:
        played = np.concatenate([np.zeros(offset), played])
    else:
        heard = np.concatenate([np.zeros(-offset), heard])
    lags = _echo_lags(played, heard)
    assert len(lags) >= 6 * 3, "the bursts did not all reach both recordings"
    assert max(lags) - min(lags) <= 1, sorted(set(lags))


def _echo_lags(played: np.ndarray, heard: np.ndarray) -> list[int]:
    """For each 100 ms of the speaker's recording with sound in it, how many samples
    later (up to 100 ms) the microphone's recording has it."""
    window, search = RATE // 10, RATE // 10
    lags = []
    for start in range(0, min(played.size, heard.size) - window - search, window):
        piece = played[start : start + window]
        if np.sqrt(np.mean(piece**2)) < 0.05:
            continue  # between bursts
        lags.append(pcm.find_offset(heard[start : start + window + search], piece)[0])
    return lags


def test_a_room_adds_a_tail_after_the_direct_sound(loopback: PulseLoopback) -> None:
    dry, _ = _click_at_the_microphone(loopback, Room())
    wet, _ = _click_at_the_microphone(loopback, Room(reverb_ms=400))
    assert _tail_dbfs(dry) < -80
    assert _tail_dbfs(wet) > -60


def test_a_fan_is_steady_noise_at_its_level_and_leaves_with_the_room(
    loopback: PulseLoopback,
) -> None:
    with AcousticPath(loopback, Room(fan_dbfs=-45)):
        time.sleep(0.3)
        mic = loopback.record(RATE, side="mic")
        mic.wait_started()
        time.sleep(1.0)
        noise = mic.stop()
    assert pcm.rms_dbfs(noise) == pytest.approx(-45, abs=2)
    thirds = [pcm.rms_dbfs(pcm.from_float(p)) for p in np.array_split(pcm.to_float(noise), 3)]
    assert max(thirds) - min(thirds) < 2  # steady
    time.sleep(0.3)
    mic = loopback.record(RATE, side="mic")
    mic.wait_started()
    time.sleep(0.3)
    assert pcm.peak_dbfs(mic.stop()) < -80  # gone with the room


def test_pink_noise_has_its_level_and_falls_with_frequency() -> None:
    noise = pink_noise(2.0, RATE, -30)
    assert pcm.rms_dbfs(pcm.from_float(noise)) == pytest.approx(-30, abs=0.1)
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / RATE)
    low = spectrum[(freqs > 100) & (freqs < 200)].mean()
    high = spectrum[(freqs > 3200) & (freqs < 6400)].mean()
    assert 10 * np.log10(low / high) == pytest.approx(10 * np.log10(32), abs=2)
