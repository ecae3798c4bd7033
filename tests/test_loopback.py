"""The loopback harness itself: server life, PortAudio visibility, test-side audio."""

from __future__ import annotations

import os
import time

import numpy as np
import pyaudio
import pytest

from device.audio import pcm
from device.audio.devices import list_devices
from rig.loopback import MIC_SINK, SPEAKER_SINK, PulseLoopback, Recorder, measure_latency


def test_server_has_both_sinks_and_defaults(loopback: PulseLoopback) -> None:
    assert {MIC_SINK, SPEAKER_SINK} <= set(loopback.sinks())
    info = loopback.pactl("info")
    assert f"Default Sink: {SPEAKER_SINK}" in info
    assert f"Default Source: {MIC_SINK}.monitor" in info
    assert os.environ["PULSE_SERVER"] == f"unix:{loopback.socket_path}"


def test_pyaudio_lists_the_loopback_as_alsa_devices(pa: pyaudio.PyAudio) -> None:
    names = {d.name: d for d in list_devices(pa)}
    assert "pulse" in names, names
    assert names["pulse"].max_input_channels > 0
    assert names["pulse"].max_output_channels > 0
    alsa = pa.get_host_api_info_by_type(pyaudio.paALSA)
    assert pa.get_device_info_by_index(names["pulse"].index)["hostApi"] == alsa["index"]


def test_mic_side_reaches_its_monitor_and_not_the_speaker(loopback: PulseLoopback) -> None:
    rate = 16000
    mic = loopback.record(rate, side="mic")
    speaker = loopback.record(rate, side="speaker")
    mic.wait_started()
    speaker.wait_started()
    loopback.play(pcm.from_float(pcm.tone(440, 300, rate)), rate, side="mic").wait()
    heard, unheard = mic.stop(), speaker.stop()
    assert pcm.peak_dbfs(heard) > -10
    assert pcm.peak_dbfs(unheard) < -60


def test_recorder_finds_onset_and_silence(loopback: PulseLoopback) -> None:
    rate = 24000
    rec = loopback.record(rate)
    rec.wait_started()
    player = loopback.play(
        pcm.from_float(pcm.tone(1000, 200, rate, fade_ms=0)), rate, side="speaker"
    )
    player.wait()
    time.sleep(0.2)
    rec.stop()
    onset = rec.first_sound(after=player.started)
    silent = rec.silent_from()
    assert onset is not None and silent is not None
    assert onset >= player.started
    assert silent - onset == pytest.approx(0.2, abs=0.01)


def test_measure_latency_reports_small_numbers(loopback: PulseLoopback) -> None:
    """Milliseconds, not seconds; a click may read a little early (never 10 ms): the speaker
    sink hands its monitor each block as it renders it, ahead of the block's time."""
    samples = measure_latency(loopback, repeats=3)
    assert len(samples) == 3
    assert all(-0.01 < s < 1.0 for s in samples), samples
    print(f"loopback latency ms: {[round(s * 1000, 1) for s in samples]}")


def test_sink_can_disappear_and_return(loopback: PulseLoopback) -> None:
    loopback.unload_sink("mic")
    try:
        assert MIC_SINK not in loopback.sinks()
    finally:
        loopback.load_sink("mic")
    assert MIC_SINK in loopback.sinks()
    assert f"Default Source: {MIC_SINK}.monitor" in loopback.pactl("info")


def test_the_witness_hears_what_reaches_the_microphone_after_a_time(
    loopback: PulseLoopback,
) -> None:
    rate = 16000
    loopback.play(pcm.from_float(pcm.tone(440, 200, rate)), rate, side="mic").wait()
    time.sleep(0.1)
    between = time.monotonic()
    loopback.play(pcm.from_float(pcm.tone(1000, 200, rate)), rate, side="mic").wait()
    time.sleep(0.1)
    heard = loopback.heard(between)
    assert pcm.dominant_frequency(heard, rate) == pytest.approx(1000, abs=20)
    size = rate // 100 * 2  # 10 ms
    windows = [heard[i : i + size] for i in range(0, len(heard) - size + 1, size)]
    loud_s = sum(pcm.rms_dbfs(w) > -20 for w in windows) / 100
    assert loud_s == pytest.approx(0.2, abs=0.03), "the second tone only, and all of it"


def test_start_failure_carries_server_stderr() -> None:
    broken = PulseLoopback(start_timeout=5)
    broken.command = lambda: ["pulseaudio", "--no-such-flag"]  # type: ignore[method-assign]
    with pytest.raises(Exception, match="pulseaudio exited") as err:
        broken.start()
    assert "no-such-flag" in str(err.value) or "unrecognized" in str(err.value).lower()
    assert broken.runtime_dir is None


def test_find_offset_locates_a_copy() -> None:
    rng = np.random.default_rng(1)
    hay = rng.standard_normal(5000) * 0.1
    needle = hay[1234:1734].copy()
    offset, score = pcm.find_offset(hay, needle)
    assert offset == 1234
    assert score > 0.999


def test_a_late_read_never_leaves_a_hole_in_a_recording_cut_at_a_time() -> None:
    """parec's audio read late comes in 4096-byte pieces at once: placed back from their
    read times they overlap, and a cut at a time must still keep one whole piece."""
    rate, piece = 16000, 2048
    samples = np.arange(4 * piece, dtype=np.int16)
    read_at = [1.0, 1.5, 1.501, 1.502]  # the last three were waiting together
    recorder = Recorder(proc=None, rate=rate)  # type: ignore[arg-type]
    recorder.chunks = [
        (t, samples[i * piece : (i + 1) * piece].tobytes()) for i, t in enumerate(read_at)
    ]
    got, times = recorder.timeline()
    assert np.all(np.diff(times) >= 0), "times never run backwards"
    assert times[-1] == 1.502
    kept = got[times >= 1.3]
    assert np.array_equal(kept, got[-kept.size :]), "one piece up to the end"
    assert kept.size > piece, "what the late read brought is kept"
