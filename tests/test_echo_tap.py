"""The rig's recording of the echo canceller (`rig.echo_tap`): a conversation recorded
replays offline bit for bit, and shows what reached the server frame by frame (the daemon
run through it: tests/test_echo_e2e.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from test_audio_echo import (
    SPEAKER_RATE,
    T0,
    VOICE_DBFS,
    LeavesSome,
    Room,
    frames_dbfs,
    reply,
    run,
    spoken,
)

from device.audio.echo import RATE, Canceller, FarEnd
from rig import echo_tap
from rig.echo_tap import SENT, TappedModule, held_by_guard, read, replay, tapping


def recorded(directory: Path) -> tuple[np.ndarray, np.ndarray, Path]:
    """A reply of 3 s with a person talking over it from 2 s, recorded in `directory`:
    the microphone, what the canceller handed on, and the recording's file."""
    talker = np.zeros(3 * RATE)
    words = spoken("Stop, that is enough.", -20.0)[: RATE]
    talker[2 * RATE : 2 * RATE + words.size] = words
    with tapping(directory):
        mic, out, _ = run(reply(3.0), talker, Room())
    (path,) = directory.glob("canceller-*.tap")
    return mic, out, path


def test_a_recorded_conversation_replays_bit_for_bit_with_what_went_on(tmp_path: Path) -> None:
    _, out, path = recorded(tmp_path)
    again = replay(path)
    assert again.calls >= 70  # 3 s in 40 ms blocks
    assert again.differing == []
    _, calls = read(path)
    sent = np.concatenate([c.arrays[2] for c in calls if c.kind == SENT])
    assert np.array_equal(sent, out)  # everything the canceller handed on, as it did


def test_what_went_on_is_stamped_with_when_it_was_recorded(tmp_path: Path) -> None:
    """The stamps are what `replay --at` and the benchmark's guard figure read against the
    server's log: each block handed on, by when its last sample was recorded (the
    canceller's output is in step with its input, held back by the module's latency)."""
    _, _, path = recorded(tmp_path)
    _, calls = read(path)
    handed_on = 0
    for call in (c for c in calls if c.kind == SENT):
        handed_on += call.arrays[2].size
        assert abs(call.t - (T0 + handed_on / RATE)) <= 0.0015  # the simulation's jitter


def test_a_module_that_worked_otherwise_is_found_out(tmp_path: Path) -> None:
    """A replay that could not tell a different output would prove nothing."""
    _, _, path = recorded(tmp_path)
    data = bytearray(path.read_bytes())
    data[-4000:-3900] = bytes(100)  # the end of a late call's output
    path.write_bytes(bytes(data))
    again = replay(path)
    assert len(again.differing) >= 1
    assert again.differing[0] > T0 + 2.5


def test_the_frames_before_a_moment_show_the_person_loud_and_the_echo_not(
    tmp_path: Path,
) -> None:
    _, out, path = recorded(tmp_path)
    _, calls = read(path)
    before = echo_tap.frames(calls, T0 + 1.2, T0 + 1.9)  # the box speaking, nobody else
    over = echo_tap.frames(calls, T0 + 2.1, T0 + 2.6)  # the person over it
    assert before and not any(f.loud for f in before)
    spoken_frames = int(np.sum(frames_dbfs(out, 2.1, 2.6) > VOICE_DBFS))  # 20 ms each
    assert sum(f.loud for f in over) >= spoken_frames  # 10 ms each: twice as many, less edges
    assert np.median([f.mic - f.sent for f in before]) > 30  # the echo taken out


def test_the_replay_command_prints_the_frames_before_a_time(tmp_path: Path) -> None:
    _, _, path = recorded(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "rig.echo_tap", "replay", str(path), "--at", str(T0 + 2.5),
         "--before", "0.5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, second, *rows = done.stdout.splitlines()
    assert "replayed: bit for bit" in first
    assert "0.5 s before" in second
    assert 30 <= len(rows) <= 60  # half a second of 10 ms frames, by the calls' times
    assert any(row.endswith("LOUD") for row in rows)


def test_the_daemon_runs_through_the_tap_with_its_own_arguments(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rig.echo_tap", str(tmp_path), "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "live-appliance" in done.stdout
    bare = subprocess.run([sys.executable, "-m", "rig.echo_tap"], capture_output=True, text=True)
    assert bare.returncode == 2
    assert "usage" in bare.stderr


def test_it_tells_how_long_the_guard_held_back_a_person_the_module_let_through(
    tmp_path: Path,
) -> None:
    """A person starting over the box in the canceller's second second, whose first
    syllables the module lets through 15 dB down (over the server's threshold still):
    the guard takes them for what a converging module leaves and holds them back. Later
    in the reply the same start goes straight on."""
    far_end = FarEnd()
    with tapping(tmp_path):
        canceller = Canceller(far_end)
    module = LeavesSome()
    canceller._apm = TappedModule(
        module, tmp_path / "held.tap", echo=True, noise=False, latency_s=canceller.latency_s
    )
    rng = np.random.default_rng(3)
    mic = rng.standard_normal(3 * RATE) * 2000  # the box's echo, -24 dBFS
    for start in (1.52, 2.52):  # a person, -14 dBFS, for 200 ms
        at = round(start * RATE)
        mic[at : at + round(0.2 * RATE)] = rng.standard_normal(round(0.2 * RATE)) * 6500
    mic16 = np.round(mic).astype(np.int16)
    with tapping(tmp_path):
        for i in range(0, mic16.size, 640):
            t = i / RATE
            first_block = any(start <= t < start + 0.04 for start in (1.52, 2.52))
            person = any(start + 0.04 <= t < start + 0.2 for start in (1.52, 2.52))
            module.left_db = -15.0 if first_block else -1.0 if person else -40.0
            piece = np.full(round(0.04 * SPEAKER_RATE), 8000, dtype=np.int16)
            far_end.played(piece, SPEAKER_RATE, T0 + t)
            canceller.process(mic16[i : i + 640], T0 + t)
    _, calls = read(tmp_path / "held.tap")
    converging = held_by_guard(calls, T0 + 1.5, T0 + 1.7)
    assert converging is not None and 0.02 <= converging <= 0.06
    assert held_by_guard(calls, T0 + 2.5, T0 + 2.7) == 0.0
    assert held_by_guard(calls, T0 + 0.5, T0 + 0.7) is None  # only the echo: nothing loud
