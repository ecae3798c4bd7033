"""The last stop's leftovers an owner would notice: files the box ignores or half-reads
without a word, and lines that leave out what the owner needs."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import CHUNK, RealCaptureParts, config, running
from helpers import journal_lines, until
from system_view import require
from test_appliance import busy_closing, numbered
from test_camera import Frames, camera, feed_for, picamera2  # noqa: F401 (camera: a fixture)

from device import config as config_mod
from device.audio.earcons import earcon
from device.live.turn import UNSAVED_MOST_S, WireTurn, unsaved_limit
from device.live.wire import MIC_RATE
from device.persist import StateFile
from device.states import DeviceFailed, Earcon, Reconnected, Reconnecting, SetupComplete


@pytest.mark.parametrize("content", ["[0.5]", '"loud"', "0.5", "null", "true"])
def test_a_state_file_of_json_that_is_no_object_is_said_once_when_ignored(
    tmp_path: Path, content: str
) -> None:
    """`[0.5]` in state.json (edited by hand, written by another program): the box started
    at its configured volume, the owner's kept volume gone, and the journal said nothing,
    where a damaged file says "ignoring ... damaged"."""
    path = tmp_path / "state.json"
    path.write_text(content)
    state = StateFile(path)
    with journal_lines("device.persist") as journal:
        assert state.load() == {}
        assert state.load() == {}
    said = [r for r in journal.records if str(path) in r["MESSAGE"]]
    assert len(said) == 1, journal.records
    assert int(said[0]["PRIORITY"]) <= 4  # a warning, as for a damaged file


async def test_an_empty_configuration_file_is_said_at_the_start(tmp_path: Path) -> None:
    """A power cut while the owner saved config.toml leaves it zero bytes long: the box
    started on the defaults (their pins, voice and mode gone) without a word, and the
    owner looked everywhere but there. The journal names the file."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"")
    cfg = config_mod.load(path, key=False)
    with journal_lines("device.appliance") as journal:
        async with running(tmp_path, cfg):
            pass
    said = [r for r in journal.records if str(path) in r["MESSAGE"]]
    assert len(said) == 1, journal.records
    assert int(said[0]["PRIORITY"]) <= 4


async def test_a_configuration_of_comments_only_is_not_said(tmp_path: Path) -> None:
    """The defaults chosen on purpose (every line a comment) are no fault."""
    path = tmp_path / "config.toml"
    path.write_text("# all defaults\n")
    cfg = config_mod.load(path, key=False)
    with journal_lines("device.appliance") as journal:
        async with running(tmp_path, cfg):
            pass
    assert not [r for r in journal.records if str(path) in r["MESSAGE"]], journal.records


GROUP = MEMBER = 65534  # nobody: in the group of the run directory below, not its owner
SERVICE = 1  # daemon: stands in for the user live-appliance, the run directory's owner


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="makes the service's place as root"
)
def test_a_group_members_run_beside_the_stopped_service_is_no_configuration_error() -> None:
    """A member of the service's group runs `live-appliance run` to try the box by hand
    while the service is stopped: /run/live-appliance is the service user's (0750, its
    lock in it). The run said "configuration error: [control] socket: cannot listen" and
    exited 2, and the owner went through a configuration nothing is wrong with. It says
    whose place the socket's is, what to run instead, and exits 1 (as beside a running
    service)."""
    with tempfile.TemporaryDirectory(prefix="live-appliance-member-") as place:
        ran = _run_as_member(Path(place))
    assert ran.returncode == 1, (ran.returncode, ran.stderr)
    assert "configuration error" not in ran.stderr, ran.stderr
    assert "systemctl start live-appliance" in ran.stderr, ran.stderr


def _run_as_member(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`live-appliance run` as a member of the group of a run directory the service made."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chown(run_dir, SERVICE, GROUP)
    run_dir.chmod(0o750)
    lock = run_dir / "control.sock.lock"  # the stopped service's, mode 0600
    lock.write_text("")
    lock.chmod(0o600)
    os.chown(lock, SERVICE, SERVICE)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[control]\nsocket = "{run_dir / "control.sock"}"\n')
    tmp_path.chmod(0o755)
    return subprocess.run(
        ["setpriv", f"--reuid={MEMBER}", f"--regid={GROUP}", "--clear-groups",
         sys.executable, "-m", "device", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).parents[1],
        env={**os.environ, "GEMINI_API_KEY": "AIza" + "x" * 35, "HOME": str(tmp_path)},
    )  # fmt: skip


@pytest.mark.parametrize("stuck_in", ["start", "stop"])
async def test_the_off_line_after_a_stuck_camera_call_counts_the_runs_frames(
    camera: Any,  # noqa: F811 (test_camera's fixture)
    caplog: pytest.LogCaptureFixture,
    stuck_in: str,
) -> None:
    """`journalctl LIVE_CAMERA=off` gives each camera run's frames in LIVE_CAMERA_FRAMES,
    what a privacy-minded owner counts: the run whose start or stop got stuck ended on an
    "off" line without it (a missing field, where every other run has one)."""
    caplog.set_level(logging.INFO, logger="device.hw.camera")
    gate = threading.Event()
    setattr(camera, f"{stuck_in}_gate", gate)
    frames = Frames()
    feed = feed_for(picamera2(), frames, switch_timeout_s=0.2)
    cameras = lambda: [r for r in caplog.records if hasattr(r, "LIVE_CAMERA")]  # noqa: E731
    try:
        feed.start_frames()
        if stuck_in == "stop":
            await until(lambda: frames.jpegs)
            feed.stop_frames()
        await until(lambda: any(r.LIVE_CAMERA == "stuck" for r in cameras()), within=3)
        await feed.aclose()
    finally:
        gate.set()
    await until(lambda: cameras()[-1].LIVE_CAMERA == "off", within=3)
    await feed.shutdown()
    stuck = next(r for r in cameras() if r.LIVE_CAMERA == "stuck")
    off = cameras()[-1]
    assert getattr(off, "LIVE_CAMERA_FRAMES", None) == stuck.LIVE_CAMERA_FRAMES, off.__dict__


async def test_the_restart_earcon_waits_for_the_release_of_a_press_held_through_it(
    tmp_path: Path,
) -> None:
    """Push-to-talk, a goAway mid-question whose resumption handle the service refused:
    the new session started afresh, and its earcon played at once, into the question the
    held button was still sending (the box's own beep in the person's words). It plays
    once the button is up, after the end-of-turn earcon."""
    restart, listen_end = earcon(Earcon.RESTART), earcon(Earcon.LISTEN_END)
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.mic.record(CHUNK)
        await box.settle()
        box.link.deliver(Reconnecting, reason="goAway", reply_lost=False)
        box.link.deliver(Reconnected, history_lost=True)
        box.mic.record(CHUNK)
        await box.settle()
        assert restart not in box.speaker.buffered + box.speaker.heard, "beeped mid-question"
        await box.ctl("release")
        box.mic.record(CHUNK)
        await box.settle()
        played = bytes(box.speaker.buffered + box.speaker.heard)
        assert played.count(restart) == 1, "the restart never said"
        assert played.index(listen_end) < played.index(restart)


async def test_a_late_press_refused_for_a_failed_speaker_is_not_said_a_lost_question(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The speaker failed while the box was busy closing a session, and a press and its
    release waited behind the close. The machine refuses any press while a device is
    failing (the error earcon), yet the journal said "the whole question (0.6 s) is lost",
    sending the owner after a slow box instead of the speaker."""
    caplog.set_level(logging.WARNING, "device.appliance")
    cfg = config(audio={"reopen_s": 60.0})
    async with running(tmp_path, cfg, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        now = time.monotonic()
        box.appliance.post(DeviceFailed("speaker", "the fake went"))
        box.button.on_edge("pressed", now - 6.0)
        box.button.on_edge("released", now - 5.4)
        for n in range(150):
            mic.record(numbered(n), now - 6.0 + 0.04 * (n + 1))
        box.camera.hang.set()
        await box.settle()
        assert "speaker" in box.appliance.status()["faults"]
    said = [r.getMessage() for r in caplog.records if "the press was taken" in r.getMessage()]
    assert not said, said


@pytest.mark.parametrize("device", ["microphone", "speaker"])
def test_ctl_status_says_a_sound_card_plugged_in_is_tried_at_once(device: str) -> None:
    """A USB card gone for an hour: `ctl status` said it is tried "less often the longer it
    stays away", and the owner who plugged it back in waited, or restarted the service,
    where the box looks at the sound hardware every second and tries a new card at once."""
    from device.doctor.daemon import summary_lines

    lines = summary_lines({"status": f"error: {device}: gone", "faults": [device]})
    (faults,) = [line for line in lines if line.startswith("faults:")]
    assert "at once" in faults and "plugged in" in faults, faults
    button = summary_lines({"status": "error: button", "faults": ["button"]})
    assert not any("plugged in" in line for line in button), button  # a GPIO line: no card


def test_a_press_just_past_what_is_kept_says_how_little_a_switch_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A press held a moment past what is kept to send again (UNSAVED_MOST_S), and the
    connection switched under it: the journal said "its first 0 s are lost", a loss of
    nothing in the owner's reading. It says the fraction it was."""
    chunk = b"\x01\x00" * (MIC_RATE // 25)  # 40 ms, as the microphone hands them on
    turn = WireTurn(unsaved_limit=unsaved_limit(3600))
    turn.sent("activity_start")
    for _ in range(round(UNSAVED_MOST_S * 25) + 1):
        turn.spoke(chunk)
    with caplog.at_level(logging.WARNING):
        turn.words_to_repeat()
    assert "its first 0.04 s are lost" in caplog.text, caplog.text


def test_ask_audio_on_a_full_card_is_refused_before_the_session(tmp_path: Path) -> None:
    """`ask "..." --audio reply.wav` with the card full: the check before the session
    opened the (existing) file and passed, the session ran (the owner waited for every
    turn, and paid for it), and only then was the reply lost to "No space left". It is
    said before any connection is tried."""
    card = tmp_path / "card"
    card.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text('[live]\nbase_url = "http://127.0.0.1:9"\n')  # discard: never reached
    wav = card / "reply.wav"
    fill = f"head -c 65536 /dev/zero >{card}/fill 2>/dev/null; : >{wav} &&"
    script = f'mount -t tmpfs -o size=8k tmpfs {card} && {fill} exec "$@"'
    command = [sys.executable, "-m", "device", "ask", "Hello", "--audio", str(wav),
               "--config", str(cfg)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
           "GEMINI_API_KEY": "AIza" + "x" * 35}  # fmt: skip
    done = subprocess.run(
        [require("unshare", "util-linux"), "--mount", "sh", "-c", script, "sh", *command],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--audio" in lines[0], done.stderr  # nothing of a session
    assert os.strerror(errno.ENOSPC) in lines[0], done.stderr


def test_a_run_directory_out_of_inodes_is_no_configuration_error(tmp_path: Path) -> None:
    """/run (a small tmpfs) out of inodes, a runaway program's files in it: the daemon
    said "configuration error: [control] socket: cannot make the lock ...: No space left
    on device" and exited 2, which systemd does not restart: the box stayed off until the
    retry timer, ten minutes, and the owner searched a configuration with nothing wrong.
    It says the place is full and how to see it, and exits 1 (systemd tries again)."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[control]\nsocket = "{run / "control.sock"}"\n')
    script = f'mount -t tmpfs -o nr_inodes=1 tmpfs {run} && exec "$@"'  # the root's only
    command = [sys.executable, "-m", "device", "run", "--config", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
           "GEMINI_API_KEY": "AIza" + "x" * 35}  # fmt: skip
    done = subprocess.run(
        [require("unshare", "util-linux"), "--mount", "sh", "-c", script, "sh", *command],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "configuration error" not in done.stderr, done.stderr
    assert f"df -h -i {run}" in done.stderr, done.stderr
