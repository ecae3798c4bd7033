"""A service that flaps: what the owner is told once systemd has given up on it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes import FakeParts, RecordingLeds, running
from fakes import config as box_config
from helpers import run_cli, until

from device import config
from device.appliance import Appliance, exit_status
from device.audio.keeper import DriverStuck
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.service import check_service
from device.hw.led_patterns import dark
from device.hw.leds import LedAnimator, NullLeds

ROOT = Path(__file__).resolve().parents[1]


def no_daemon(tmp_path: Path) -> Context:
    path = tmp_path / "config.toml"
    path.write_text(f'[control]\nsocket = "{tmp_path / "none.sock"}"\n')
    return Context(config.load(path), Options(), Progress(spinner=False))


#: How Debian 12's systemd (252) leaves the unit once it refused a restart for the start
#: limit: Result= keeps the last crash's (tests/hil/test_60_restarts.py sees "signal").
GAVE_UP = {
    "killed at start": ("signal", "9"),
    "a task died": ("exit-code", "1"),
    "watchdog": ("watchdog", "6"),
    "out of memory": ("oom-kill", "9"),
}


@pytest.mark.parametrize(("result", "code"), GAVE_UP.values(), ids=GAVE_UP.keys())
async def test_after_a_crash_burst_the_doctor_gives_a_fix_that_systemd_takes(
    systemctl: Callable[..., None], tmp_path: Path, result: str, code: str
) -> None:
    """Five crashes in ten minutes and systemd refuses every start, a restart by hand too
    ("Start request repeated too quickly") until reset-failed: the doctor told the owner
    to `sudo systemctl restart` it whenever systemd had not written start-limit-hit (252
    never does), and said nothing of the retry timer that brings it back by itself."""
    systemctl(LoadState="loaded", ActiveState="failed", SubState="failed", Result=result,
              NRestarts="4", ExecMainStatus=code)  # fmt: skip
    found = await check_service(no_daemon(tmp_path))
    assert found.status is Status.FAIL
    fix = found.fix or ""
    assert "reset-failed" in fix and "list-timers" in fix, fix


async def test_a_configuration_error_is_told_to_be_fixed_then_restarted(
    systemctl: Callable[..., None], tmp_path: Path
) -> None:
    """Exit status 2 is never restarted nor retried (RestartPreventExitStatus=, the retry
    unit's ExecCondition=): one start, so a restart after the edit is taken."""
    systemctl(LoadState="loaded", ActiveState="failed", SubState="failed", Result="exit-code",
              NRestarts="0", ExecMainStatus="2")  # fmt: skip
    found = await check_service(no_daemon(tmp_path))
    fix = found.fix or ""
    assert found.status is Status.FAIL and "sudo systemctl restart" in fix, fix
    assert "10 minutes" not in fix, "the retry timer skips a configuration error"


async def test_pixels_a_killed_daemon_left_lit_go_dark_as_the_next_one_opens_them(
    tmp_path: Path,
) -> None:
    """APA102 pixels keep the last frame they were sent: a daemon killed mid-turn (the
    watchdog's abort, the OOM killer) leaves them lit, listening say, with nobody
    listening. The next start opened them, then showed nothing until its sound devices
    had opened and the microphone delivered (seconds; 20 s and more with a card that
    hangs PortAudio), and a start that crashed meanwhile left them so."""
    parts = FakeParts(box_config(), tmp_path)
    appliance = Appliance(parts.cfg, parts)
    opening, driver = threading.Event(), threading.Event()

    def hang(loop: object = None) -> None:
        opening.set()
        driver.wait(8)  # a hang in this test ends, to fail it

    parts.made["speaker"].start = hang
    task = asyncio.create_task(appliance.run(), name="appliance")
    try:
        await until(opening.is_set)
        leds = parts.made["leds"]
        assert leds.frames[-1:] == [dark(leds.pixels)], "the pixels kept what they showed"
    finally:
        appliance.stopping.set()
        driver.set()
        async with asyncio.timeout(5):
            await task


async def test_pixels_that_open_late_in_the_start_up_go_dark_too() -> None:
    """Pixels that open only at a second try (tried again 2 s on, while the start-up
    still waits for a sound card) kept what the killed daemon had sent them too."""
    animator = LedAnimator(NullLeds())
    pixels = RecordingLeds()
    await animator.use(pixels)
    assert pixels.frames == [dark(pixels.pixels)]
    await animator.aclose()


STUCK = "the speaker's driver has not returned from a call for 60 s"
DIED = {
    "a driver stuck for good": (DriverStuck(STUCK), STUCK),
    "a bug": (RuntimeError("no such session"), "no such session"),
}


@pytest.mark.parametrize(("failure", "said"), DIED.values(), ids=DIED.keys())
async def test_a_daemon_stopping_because_a_part_failed_tells_systemd_why(
    tmp_path: Path, failure: Exception, said: str
) -> None:
    """systemd keeps a service's last STATUS= until its next start, through the restart
    and the failed state past the start limit: a daemon that stopped because one of its
    tasks died left "connecting" (or "idle") there, and `systemctl status` showed a box
    failed, or between restarts, as if it were working. Nor did it send STOPPING=1, so
    systemd took it for running while it shut down."""
    async with running(tmp_path, box_config()) as box:

        def fail(session: int) -> None:
            raise failure

        box.link.open = fail  # type: ignore[method-assign]
        await box.control.ask("press")
        async with asyncio.timeout(5):
            await box.appliance.stopping.wait()
    assert exit_status(box.appliance) == 1
    messages = box.notifier.messages
    assert "STOPPING=1" in messages, messages
    status = [m for m in messages if m.startswith("STATUS=")][-1]
    assert said in status and "systemd starts it again" in status, status


def test_ctl_while_the_service_is_down_points_to_what_says_why(tmp_path: Path) -> None:
    """Between crashes, or failed past the start limit for ten minutes, `ctl status` said
    only "just started, it listens within a second or two": the owner waited, asked
    again, and was never sent to systemd, which knows why it is down."""
    stale = tmp_path / "control.sock"  # a killed daemon's, left in its kept directory
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = run_cli("ctl", "status", "--socket", str(stale), env=env)
    assert result.returncode == 1
    assert "systemctl status live-appliance" in result.stderr, result.stderr


async def test_a_box_stopped_by_its_owner_is_said_stopped_not_stopping(tmp_path: Path) -> None:
    """`systemctl stop live-appliance` (before the doctor, or for a quiet evening), then
    `systemctl status`: "inactive (dead)" beside Status: "stopping", for as long as it
    stays off (systemd keeps the last STATUS= until the next start)."""
    async with running(tmp_path, box_config()) as box:
        box.appliance._on_stop_signal(signal.SIGTERM)
    statuses = [m for m in box.notifier.messages if m.startswith("STATUS=")]
    assert "STOPPING=1" in box.notifier.messages
    assert statuses[-1] == "STATUS=stopped", statuses
