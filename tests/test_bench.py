"""The benchmark: its arithmetic, its meters, and a smoke run that keeps it working.

No figure is compared with a target here: speed is what the benchmark reports,
not what a test asserts. The smoke run checks that every figure is measured and
explained.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rig import unit
from rig.bench.conversation import quiet_runs
from rig.bench.figures import Figure, median, nearest_rank
from rig.bench.markers import locate, marker, missing_ms
from rig.bench.proc import ProcessGone, cpu_seconds, memory_mb, thread_cpu, thread_split

RATE = 16000
FIGURES = {
    "press_to_first_bytes",
    "press_to_setup_complete",
    "setup_complete_to_first_bytes",
    "speech_lost_at_press",
    "release_to_activity_end",
    "loopback_latency",
    "reply_to_sound",
    "reply_to_sound_hands_free",
    "barge_in",
    "speaker_underruns",
    "speaker_underruns_busy",
    "gaps_heard",
    "gaps_heard_busy",
    "cpu_idle",
    "cpu_conversation_quiet",
    "cpu_turns",
    "cpu_streaming_audio",
    "cpu_streaming_audio_video",
    "peak_rss",
    "rss_growth",
    "start_to_ready",
}


def test_p95_is_a_measured_value_by_nearest_rank() -> None:
    assert nearest_rank(list(range(1, 21)), 95) == 19
    assert nearest_rank(list(range(100, 0, -1)), 95) == 95
    assert nearest_rank([7.5], 95) == 7.5
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        nearest_rank([], 95)


def test_a_figure_beside_its_reference_reports_both_and_their_ratio() -> None:
    figure = Figure("cpu", "CPU", "s/min", "A method.", [1.0, 2.0, 3.0], reference=[4.0, 4.0, 8.0])
    summary = figure.summary()
    assert summary["reference"]["median"] == 4.0
    assert summary["reference"]["p95"] == 8.0
    assert summary["ratio"] == 0.5
    assert summary["ratio_p95"] == 0.375
    assert "reference" not in Figure("x", "X", "ms", "A method.", [1.0]).summary()


def test_gaps_in_a_reply_are_silences_at_least_as_long_as_asked() -> None:
    rate = 24000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    assert quiet_runs(tone, 48) == [], "a sine's zero crossings are no gap"
    tone[1000:1048] = 0  # 2 ms: a gap
    tone[5000:5040] = 0  # shorter than asked: not one
    tone[9000:9500] = 0.001  # below -40 dBFS: silence too
    assert quiet_runs(tone, 48) == [(1000, 48), (9000, 500)]


def test_cpu_by_thread_is_split_by_name_per_minute() -> None:
    before = {1: ("main", 1.0), 2: ("threaded-ml", 0.5), 3: ("threaded-ml", 0.0), 4: ("gone", 9.0)}
    after = {1: ("main", 1.5), 2: ("threaded-ml", 0.75), 3: ("threaded-ml", 0.25), 5: ("new", 0.1)}
    split = thread_split(before, after, seconds=30)
    assert list(split) == ["main", "threaded-ml", "new"]
    assert split == pytest.approx({"main": 1.0, "threaded-ml": 1.0, "new": 0.2})


def _embed(sound: np.ndarray, before: int, after: int) -> np.ndarray:
    return np.concatenate([np.zeros(before), sound, np.zeros(after)])


def test_a_marker_that_arrived_whole_loses_nothing_even_with_noise() -> None:
    sound = marker(0.6, RATE)
    noise = np.random.default_rng(3).normal(0, 0.01, sound.size + 3000)
    received = _embed(sound, 1234, 1766) + noise
    assert locate(received, sound) == 1234
    assert missing_ms(received, sound, RATE) == (0.0, [])


def test_a_cut_onset_is_counted_in_milliseconds() -> None:
    sound = marker(0.6, RATE)
    cut = RATE * 50 // 1000  # the first 50 ms never arrived
    received = _embed(sound[cut:], 0, 800)
    assert locate(received, sound) == -cut
    assert missing_ms(received, sound, RATE) == (50.0, [0, 10, 20, 30, 40])


def test_a_gap_and_a_cut_tail_are_lost_too() -> None:
    sound = marker(0.6, RATE)
    damaged = sound.copy()
    damaged[RATE * 200 // 1000 : RATE * 300 // 1000] = 0  # 100 ms dropped mid-way
    received = _embed(damaged[: RATE * 570 // 1000], 500, 0)  # and the last 30 ms
    lost, windows = missing_ms(received, sound, RATE)
    assert lost == 130.0
    assert windows == [*range(200, 300, 10), 570, 580, 590]


def test_cpu_and_memory_of_another_process_are_read_from_outside() -> None:
    burner = (
        "import sys, time\n"
        "block = bytearray(64 * 2**20)\n"
        "for i in range(0, len(block), 4096): block[i] = 1\n"
        "while time.process_time() < 0.3: pass\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burner],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "done\n"
        assert cpu_seconds(child.pid) >= 0.3
        threads = thread_cpu(child.pid)
        assert threads[child.pid][0] == "main"
        assert sum(cpu for _, cpu in threads.values()) >= 0.3
        memory = memory_mb(child.pid)
        assert memory["peak"] >= 64
        assert memory["peak"] >= memory["rss"] > 0
    finally:
        child.communicate("")
    with pytest.raises(ProcessGone):
        memory_mb(child.pid)


UNIT_SAMPLE = """
[Unit]
Environment=NOT_A_SERVICE_SETTING=1
[Service]
Environment=LG_WD=%t/live-appliance
Environment=GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072
Environment="A=one two" B=3
"""


def test_the_daemon_gets_the_units_environment_without_systemds_directories(
    tmp_path: Path,
) -> None:
    sample = tmp_path / "live-appliance.service"
    sample.write_text(UNIT_SAMPLE)
    assert unit.environment(sample) == {
        "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072",
        "A": "one two",
        "B": "3",
    }
    # The real unit: every variable it sets without a specifier reaches the bench's daemon.
    real = " ".join(unit.service_directives()["Environment"])
    assert all(name in real for name in unit.environment())
    assert "LG_WD" in real and "LG_WD" not in unit.environment()


def test_help_answers_without_loading_the_rig() -> None:
    probe = "import sys, rig.bench.__main__; print('numpy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
    usage = subprocess.run(
        [sys.executable, "-m", "rig.bench", "--help"], capture_output=True, text=True
    )
    assert usage.returncode == 0
    for option in ("--turns", "--out", "--quick"):
        assert option in usage.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "rig.bench", "--turns", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "--turns must be at least 1" in bad.stderr



def test_echo_bench_answers_help_and_refuses_what_it_does_not_know() -> None:
    """Its flags are parsed: `--help` must not start a fifteen-minute run, nor a typo."""
    usage = subprocess.run(
        [sys.executable, "-m", "rig.bench.echo", "--help"], capture_output=True, text=True
    )
    assert usage.returncode == 0
    for option in ("--out", "--quick"):
        assert option in usage.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "rig.bench.echo", "--qiuck"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "unrecognized arguments: --qiuck" in bad.stderr

@pytest.mark.rig
@pytest.mark.timeout(300)
def test_quick_run_reports_every_figure_with_its_method(tmp_path: Path) -> None:
    out = tmp_path / "results" / "bench.json"
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "rig.bench", "--quick", "--turns", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    figures = document["figures"]
    assert set(figures) == FIGURES
    for key, figure in figures.items():
        assert figure["n"] == len(figure["samples"]) >= 1, key
        assert figure["median"] <= figure["p95"] <= figure["max"], key
        assert figure["max"] == max(figure["samples"]), key
        assert figure["method"].endswith(".") and len(figure["method"].split()) > 8, key
        assert figure["unit"] in {"ms", "s/min", "MB", "s", "count"}, key
        assert figure["title"] in result.stdout, key
        assert figure["method"] in result.stdout, key
    # Two latency turns each; the streaming phases really streamed.
    assert figures["press_to_first_bytes"]["n"] == 2
    assert figures["barge_in"]["n"] == 2
    assert figures["cpu_streaming_audio"]["details"]["audio_s_per_s"] > 0.5
    assert figures["cpu_streaming_audio_video"]["details"]["frames_per_s"] > 0
    assert figures["cpu_streaming_audio"]["details"]["frames_per_s"] == 0
    for key in ("cpu_streaming_audio", "cpu_streaming_audio_video"):  # judged, as issue 10 asks
        assert figures[key]["target"] and figures[key]["met"] in (True, False), key
    assert document["plan"]["turns"] == 2
    assert document["machine"]["cpus"] >= 1
    assert time.mktime(time.strptime(document["date"][:19], "%Y-%m-%dT%H:%M:%S")) >= started - 1
    assert f"wrote {out}" in result.stdout
    assert f"on {document['machine']['cpus']} CPUs" in result.stdout, "how busy it was, printed"
    assert len(document["machine"]["loadavg_after"]) == 3
