"""A second copy of the appliance's commands on a box whose service runs."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import running
from helpers import daemon_saying
from test_control import _run_as_member

from device.audio.devices import AudioDeviceError
from device.audio.playback import Playback
from device.cli import main
from device.control import AlreadyRunning, ControlServer, single_instance

#: What opening a card another process holds raises: PortAudio's "Device unavailable",
#: or, for a card named in the configuration, the card missing from PortAudio's list.
HELD = [
    OSError(-9985, "Device unavailable"),
    AudioDeviceError(
        "no output device matches 'seeed': the card is there, but another program holds it "
        "(on Raspberry Pi OS Desktop, PipeWire): fuser -v /dev/snd/*",
        [],
    ),
]


@pytest.mark.parametrize("held", HELD, ids=["unavailable", "not listed"])
async def test_ask_play_while_the_service_holds_the_speaker_names_the_service(
    held: Exception,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ask --play` over SSH while the box runs: the speaker is the service's. The owner
    was told PipeWire, or only "Device unavailable", and looked for another program."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFakeKeyForTheTest0000000000000000000")

    def busy(self: Playback, *args: Any, **kwargs: Any) -> None:
        raise held

    monkeypatch.setattr(Playback, "start", busy)
    cfg = tmp_path / "config.toml"
    async with daemon_saying({"state": "idle", "status": "idle"}) as sock:
        cfg.write_text(f'[control]\nsocket = "{sock}"\n')
        code = await asyncio.to_thread(main, ["ask", "Hello", "--play", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1, err
    assert "the running service" in err and "systemctl stop live-appliance" in err, err
    assert "PipeWire" not in err, err


@pytest.mark.parametrize("held", HELD, ids=["unavailable", "not listed"])
def test_ask_play_without_the_service_says_what_the_card_said(
    held: Exception,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The service stopped: another program holds the card, and the owner reads the card's
    own words, not the service blamed."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFakeKeyForTheTest0000000000000000000")

    def busy(self: Playback, *args: Any, **kwargs: Any) -> None:
        raise held

    monkeypatch.setattr(Playback, "start", busy)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[control]\nsocket = "{tmp_path / "control.sock"}"\n')
    assert main(["ask", "Hello", "--play", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "running service" not in err and str(held).splitlines()[0].split(";")[0] in err, err
    assert err.count("\n") == 1, err  # the card's summary, not the device listing after it


#: What a lock file may hold as its holder takes it: nothing (a fresh boot's /run), or a
#: gone holder's pid longer than the new one's (the pids wrapped): "123" written over it
#: read "123\n301", no pid, and the refused daemon said "another process" again.
LEFT_IN_THE_LOCK = [None, "4194301\n"]


@pytest.mark.parametrize("left", LEFT_IN_THE_LOCK, ids=["fresh", "longer-pid-left"])
def test_a_second_daemon_is_told_which_process_holds_the_lock(
    left: str | None, tmp_path: Path
) -> None:
    """The service refused at start ("already running, or still stopping: another process
    holds /run/live-appliance/control.sock.lock") while a `sudo live-appliance run` held
    it: the journal line did not say which process, and the owner looked for the service."""
    socket_path = tmp_path / "control.sock"
    if left is not None:
        Path(f"{socket_path}.lock").write_text(left)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(socket_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(AlreadyRunning, match=rf"process {holder.pid} holds "):
            single_instance(socket_path).__enter__()
    finally:
        holder.kill()
        holder.wait()


HOLD_THE_LOCK = """
import sys, time
from device.control import single_instance
with single_instance(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(60)
"""


async def test_a_second_daemon_is_told_which_process_serves_the_socket(tmp_path: Path) -> None:
    """A daemon whose lock it cannot open (another user's), refused by the live socket:
    which process serves it."""

    async def idle(request: dict[str, Any]) -> dict[str, Any]:
        return {"state": "idle"}

    path = tmp_path / "control.sock"
    async with ControlServer(path, idle):
        with pytest.raises(AlreadyRunning, match=rf"process {os.getpid()} serves "):
            await ControlServer(path, idle).start()


async def test_ask_play_while_the_service_has_lost_its_speaker_says_what_the_card_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The speakerphone unplugged: the service runs, says its speaker is failing, and holds
    no speaker. `ask --play` to try it told the owner the running service held it and to
    stop the service; only after that did it say the card is missing."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFakeKeyForTheTest0000000000000000000")
    missing = AudioDeviceError("no output device matches 'seeed'", [])

    def gone(self: Playback, *args: Any, **kwargs: Any) -> None:
        raise missing

    monkeypatch.setattr(Playback, "start", gone)
    status = {
        "state": "error",
        "status": "error: speaker cannot open: no output device matches 'seeed'",
        "faults": ["speaker"],
        "systemd": True,
    }
    cfg = tmp_path / "config.toml"
    async with daemon_saying(status) as sock:
        cfg.write_text(f'[control]\nsocket = "{sock}"\n')
        code = await asyncio.to_thread(main, ["ask", "Hello", "--play", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 1
    assert "no output device matches 'seeed'" in err, err
    assert "systemctl stop" not in err, err


async def test_a_copy_refused_by_the_socket_does_not_say_it_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another user in the service's group (no lock for it) ran `live-appliance run`
    beside the service: the journal said "stopped", then that it is already running. The
    owner reading from the top took the service for stopped; nothing had been started."""
    caplog.set_level(logging.INFO, "device")

    def already_running(parts) -> None:  # type: ignore[no-untyped-def]
        parts.made["control"].fails = AlreadyRunning("process 1234 serves the socket")

    with pytest.raises(AlreadyRunning):
        async with running(tmp_path, prepare=already_running):
            pass
    assert [r.getMessage() for r in caplog.records] == []


#: The group of the socket's directory here (the service's, in /run/live-appliance), and
#: the member of it who asks.
GROUP = MEMBER = 65534

ASK_STATUS = """
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.connect(sys.argv[1])
    s.sendall(b'{"cmd": "status"}\\n')
    print(s.makefile().readline(), end="")
"""


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """/run/live-appliance as systemd makes it (RuntimeDirectoryMode=0750): the group's."""
    place = Path(tempfile.mkdtemp(prefix="live-appliance-run-"))
    try:
        os.chown(place, 0, GROUP)
        place.chmod(0o750)
        yield place
    finally:
        shutil.rmtree(place)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="runs a copy as root, asks as another"
)
async def test_a_copy_run_as_root_answers_a_member_of_the_services_group(run_dir: Path) -> None:
    """`sudo live-appliance run` beside a stopped service made its socket root:root (0660):
    the owner's own `ctl status` and the doctor, run as a member of the service's group, were
    refused, and told to run as a member of its group, which they were."""

    async def idle(request: dict[str, Any]) -> dict[str, Any]:
        return {"state": "idle"}

    path = run_dir / "control.sock"
    async with ControlServer(path, idle):
        asked = await asyncio.to_thread(
            subprocess.run,
            ["setpriv", f"--reuid={MEMBER}", f"--regid={GROUP}", "--clear-groups",
             "/usr/bin/python3", "-c", ASK_STATUS, str(path)],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert '"state": "idle"' in asked.stdout, asked.stdout


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="makes the service's place as root"
)
def test_a_group_members_run_by_hand_is_told_a_way_that_can_read_the_key() -> None:
    """An owner in the service's group runs `live-appliance run` by hand, the service
    stopped: the socket's place is the service user's. They were told to run it as that
    user (`sudo -u live-appliance live-appliance run`), who may not read the key: the
    installer keeps it root's alone (0600), the service gets it as a credential, and sudo
    leaves the owner's GEMINI_API_KEY behind. The way they are told must read the key."""
    with tempfile.TemporaryDirectory(prefix="live-appliance-member-") as place:
        tmp = Path(place)
        key = tmp / "api-key"  # as the installer keeps /etc/live-appliance/api-key (not
        # the test's to write): the run under sudo reads it, the owner's shell's key gone
        key.write_text("AIza" + "x" * 35 + "\n")
        key.chmod(0o600)
        ran = _run_as_member(tmp)  # the stopped service's run directory
        assert ran.returncode == 1, (ran.returncode, ran.stderr)
        assert "systemctl start live-appliance" in ran.stderr, ran.stderr
        if as_user := re.search(r"sudo -u (\S+) live-appliance run", ran.stderr):
            advised = pwd.getpwnam(as_user[1]).pw_uid
        else:
            assert "sudo live-appliance run" in ran.stderr, ran.stderr
            advised = 0
        reads = subprocess.run(
            ["setpriv", f"--reuid={advised}", f"--regid={advised}", "--clear-groups",
             "test", "-r", str(key)],
        )  # fmt: skip
        assert reads.returncode == 0, f"uid {advised} may not read the key: {ran.stderr}"
