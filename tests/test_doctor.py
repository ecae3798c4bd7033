"""`live-appliance doctor` as an owner runs it: against the local server, the loopback
audio and mock pins, healthy and then with one fault at a time.

The command line runs as a child process and the tests read what it prints and its
exit code. The button and the LEDs are also checked in-process, where the test can
drive a mock pin and read the LED pins.
"""

from __future__ import annotations

import asyncio
import grp
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from fakes import DEAD, FakeParts, RecordingNotifier, running
from helpers import (
    closed_port,
    daemon_saying,
    lines_of,
    only_proxy,
    open_refused,
    proxy,
    trusted_server,
    unknown_name,
)
from helpers import mock_pins as pins
from test_audio_playback import _PulledCard

from device import config
from device.appliance import MIC_START_TIMEOUT_S
from device.audio import pcm
from device.audio.capture import Capture
from device.audio.devices import AudioDeviceError
from device.audio.playback import RATE, Playback
from device.config import Config, LiveConfig, Secret
from device.control import ControlServer
from device.doctor import settings
from device.doctor.audio import _as_the_service_runs, check_mic, check_speaker
from device.doctor.camera import check_camera
from device.doctor.daemon import one_line, summary_lines
from device.doctor.gpio import check_button, check_leds
from device.doctor.network import FIXES, check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Result, Status
from device.doctor.runner import Check, _run_one, exit_code, held_by_the_service, run_checks
from device.doctor.service import check_service
from device.doctor.settings import check_config, check_key
from rig.daemon import rig_settings, scratch_dir, start_daemon, to_toml
from rig.loopback import PulseLoopback
from rig.notify import NotifySocket
from rig.server.server import LiveServer, ServerThread

MIC_RATE = 16000
SPEAKER_RATE = 24000


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = scratch_dir("doctor-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(pace=0) as thread:
        yield thread


def write_config(scratch: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    """The rig's configuration (local server, private socket, RGB LEDs), overridden."""
    settings = rig_settings(base_url, scratch)
    for name, table in sections.items():
        settings.setdefault(name, {}).update(table)
    path = scratch / "config.toml"
    path.write_text(to_toml(settings))
    return path


def child_env(loopback: PulseLoopback, server: ServerThread, **extra: str) -> dict[str, str]:
    env = {
        **loopback.child_env(),
        "GEMINI_API_KEY": server.api_key,
        "SSL_CERT_FILE": server.ca_file,
        "GPIOZERO_PIN_FACTORY": "mock",
        "GPIOZERO_MOCK_PIN_CLASS": "mockpwmpin",
        **extra,
    }
    return {k: v for k, v in env.items() if v}  # an empty value removes the variable


def doctor(
    cfg: Path, env: dict[str, str], *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", "doctor", *args, "--config", str(cfg)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {name: line.split()[0] for name, line in lines_of(result).items()}


def square_wave(seconds: float, rate: int = MIC_RATE, hz: float = 500.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return pcm.from_float(np.sign(np.sin(2 * np.pi * hz * t)))


def test_a_healthy_box_passes_every_check(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url, camera={"enabled": True, "source": "synthetic"})
    photo = scratch / "camera.jpg"
    voice = loopback.play(pcm.from_float(pcm.tone(300, 30_000, MIC_RATE, 0.1)), MIC_RATE)
    speaker = loopback.record(SPEAKER_RATE)
    try:
        speaker.wait_started()
        result = doctor(cfg, child_env(loopback, server), "--no-button", "--camera-out", str(photo))
    finally:
        voice.stop()
        heard = speaker.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    passed = ["config", "key", "network", "devices", "mic", "speaker", "echo", "leds", "camera"]
    # in the order they ran; not a Pi, no systemd here, nobody at a terminal to press the button
    assert list(statuses(result).items()) == [
        *((name, "PASS") for name in passed[:3]), ("power", "SKIP"),
        *((name, "PASS") for name in passed[3:8]), ("button", "SKIP"), ("camera", "PASS"),
        ("card", "PASS"), ("service", "SKIP"),
    ]  # fmt: skip
    lines = lines_of(result)
    assert f"{cfg}: loaded" in lines["config"]
    assert server.api_key not in result.stdout + result.stderr
    assert "Live setup" in lines["network"]
    rms = float(lines["mic"].split("RMS ")[1].split()[0])
    assert -26 < rms < -20  # the 0.1 amplitude tone played into the microphone: -23 dBFS
    assert "768x768 JPEG" in lines["camera"] and photo.read_bytes()[:2] == b"\xff\xd8"
    # The tone really reached the speaker.
    assert abs(pcm.dominant_frequency(heard, SPEAKER_RATE) - 660) < 20
    assert result.stdout.splitlines()[-1] == "10 passed, 3 skipped"
    # Progress: each check announced itself on stderr as it started.
    assert "... mic: listening for 3 s" in result.stderr


def test_json_gives_the_same_results(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url)
    result = doctor(cfg, child_env(loopback, server), "config", "key", "network", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["config", "key", "network"]
    assert {c["status"] for c in report["checks"]} == {"PASS"}
    network = report["checks"][2]["data"]
    assert network["host"] == "127.0.0.1" and set(network["ms"]) == {"DNS", "TCP", "TLS", "setup"}


def test_turn_times_the_first_reply(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url)
    result = doctor(cfg, child_env(loopback, server), "network", "--turn")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "first reply audio" in lines_of(result)["network"]
    assert "client_content" in server.log.kinds(direction="in")


def test_server_down_fails_at_tcp(loopback: PulseLoopback, server: ServerThread, scratch: Path):
    cfg = write_config(scratch, f"https://127.0.0.1:{closed_port()}")
    result = doctor(cfg, child_env(loopback, server), "network")
    assert result.returncode == 1
    line = lines_of(result)["network"]
    assert line.startswith("FAIL  network  TCP: connection refused")
    assert "fix: Check the network path to 127.0.0.1 port" in line


def test_an_unknown_host_fails_at_dns(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, "https://no-such-host.invalid")
    result = doctor(cfg, child_env(loopback, server), "network")
    assert result.returncode == 1
    line = lines_of(result)["network"]
    assert line.startswith("FAIL  network  DNS: ")
    assert "fix: Check the box's network and DNS" in line


#: The network check with a resolver that never answers (glibc's gives up after 15-25 s).
SILENT_PROGRAM = textwrap.dedent(f"""
    import asyncio, socket, sys, time
    from device.config import Config, LiveConfig
    from device.doctor.network import FIXES, check_network
    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options

    real = socket.getaddrinfo

    def silent(host, *args, **kwargs):
        if host == {DEAD!r}:
            time.sleep(30)
        return real(host, *args, **kwargs)

    socket.getaddrinfo = silent
    cfg = Config(live=LiveConfig(base_url="https://{DEAD}", connect_timeout_s=1))
    result = asyncio.run(check_network(Context(cfg, Options(), Progress())))
    print(result.status, result.measured, flush=True)
""")


def test_the_doctor_ends_at_its_dns_timeout_with_the_resolver_silent() -> None:
    """`doctor` with the internet down said "DNS: ... timed out" after the connect timeout,
    then sat until glibc gave up (15-25 s; --json printed nothing till then): the end of
    asyncio.run waits for every thread of its pool, the lookup's too."""
    started = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-c", SILENT_PROGRAM], capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - started
    assert ran.returncode == 0, ran.stderr
    assert "DNS" in ran.stdout, ran.stdout
    assert took < 10, f"the doctor ended {took:.0f} s after it started"


#: The network check where the only thing that takes time is importing the SDK (5 s, as
#: on a Pi Zero): the doctor's clock is a fake that moves only then.
SLOW_IMPORT_PROGRAM = textwrap.dedent("""
    import asyncio, sys
    from types import SimpleNamespace

    now = [0.0]

    class SlowSdkImport:
        def find_spec(self, name, path=None, target=None):
            if name == "google.genai":
                now[0] += 5.0
            return None

    sys.meta_path.insert(0, SlowSdkImport())
    from device.config import Config, LiveConfig
    from device.doctor import network
    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options

    network.time = SimpleNamespace(monotonic=lambda: now[0])
    cfg = Config(live=LiveConfig(base_url="https://127.0.0.1:{port}", connect_timeout_s=2))
    result = asyncio.run(network.check_network(Context(cfg, Options(), Progress())))
    print(result.data["ms"], "SDK imported" if now[0] else "SDK not imported")
""")


def test_the_doctors_dns_time_is_the_lookups_not_the_sdks_import() -> None:
    """The TCG VM on Trixie showed "DNS 4575 ms" for 127.0.0.1: the SDK's first import
    (seconds on a small Pi) was timed as the name lookup, and sent the owner after DNS."""
    program = SLOW_IMPORT_PROGRAM.replace("{port}", str(closed_port()))
    ran = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "{'DNS': 0.0} SDK imported"


def test_an_untrusted_certificate_fails_at_tls(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url)
    result = doctor(cfg, child_env(loopback, server, SSL_CERT_FILE=""), "network")  # certifi's CAs
    assert result.returncode == 1
    line = lines_of(result)["network"]
    assert line.startswith("FAIL  network  TLS: CERTIFICATE_VERIFY_FAILED")
    assert "unable to get local issuer certificate" in line
    assert "fix: Sign in to the network if it asks" in line  # an issuer not trusted: not the clock
    assert server.log.kinds() == []  # the SDK was never let loose on an untrusted server


def test_wrong_key_fails_at_setup_with_1008_and_is_never_shown(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url)
    wrong = "not-the-key-1234"
    result = doctor(cfg, child_env(loopback, server, GEMINI_API_KEY=wrong), "key", "network")
    assert result.returncode == 1
    lines = lines_of(result)
    assert lines["key"].startswith("PASS")
    assert lines["network"].startswith("FAIL  network  Live setup: the service refused the API key")
    assert "close code 1008" in lines["network"] and "fix: Check the API key" in lines["network"]
    assert wrong not in result.stdout + result.stderr


def test_no_key_fails_the_key_check_and_skips_the_handshake(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url)
    env = child_env(
        loopback, server, GEMINI_API_KEY="", GOOGLE_API_KEY="", CREDENTIALS_DIRECTORY=""
    )
    result = doctor(cfg, env, "key", "network")
    assert result.returncode == 1
    lines = lines_of(result)
    assert lines["key"].startswith("FAIL  key      no API key in")
    assert "fix: Put it in /etc/live-appliance/api-key" in lines["key"]
    assert lines["network"].startswith("WARN") and "Live setup not tried" in lines["network"]
    assert server.log.kinds() == []  # nothing reached the server's Live endpoint


def test_a_microphone_that_does_not_exist(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url, audio={"input_device": "no such microphone"})
    result = doctor(cfg, child_env(loopback, server), "devices", "mic")
    assert result.returncode == 1
    lines = lines_of(result)
    for name in ("devices", "mic"):
        assert (
            "FAIL" in lines[name] and "no input device matches 'no such microphone'" in lines[name]
        )
        assert "fix: Plug the device in, or set [audio] input_device" in lines[name]


def test_a_silent_microphone_warns(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url)
    result = doctor(cfg, child_env(loopback, server), "mic")
    assert result.returncode == 0  # a warning is not a failure
    line = lines_of(result)["mic"]
    assert line.startswith("WARN  mic      RMS -inf dBFS") and ": silence" in line
    assert "fix: Unmute the microphone" in line


def test_a_clipping_microphone_warns(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    cfg = write_config(scratch, server.base_url)
    loud = loopback.play(square_wave(30), MIC_RATE)
    try:
        result = doctor(cfg, child_env(loopback, server), "mic", "--json")
    finally:
        loud.stop()
    assert result.returncode == 0
    (mic,) = json.loads(result.stdout)["checks"]
    assert mic["status"] == "WARN" and "clipping" in mic["measured"]
    assert mic["data"]["peak_dbfs"] > -0.1 and mic["data"]["clipped_share"] > 0.01
    assert mic["fix"].startswith("Lower the microphone's capture level")


@pytest.mark.parametrize("missing", [False, True])
def test_the_doctor_says_how_the_box_keeps_its_own_voice_out(
    loopback: PulseLoopback, server: ServerThread, scratch: Path, missing: bool
) -> None:
    cfg = write_config(scratch, server.base_url, button={"mode": "toggle"})  # cancel: the default
    env = child_env(loopback, server)
    if missing:  # 32-bit Raspberry Pi OS: no wheel, the import fails
        (scratch / "pywebrtc_audio").mkdir()
        (scratch / "pywebrtc_audio" / "__init__.py").write_text("raise ImportError('no wheel')\n")
        env["PYTHONPATH"] = str(scratch)
    result = doctor(cfg, env, "echo", "--json")
    assert result.returncode == 0, result.stdout + result.stderr  # a warning at most
    (check,) = json.loads(result.stdout)["checks"]
    if missing:
        assert check["status"] == "WARN" and check["fix"]
        assert check["data"] == {"mic_during_playback": "gate", "noise_suppression": False}
    else:
        assert check["status"] == "PASS"
        assert check["data"] == {"mic_during_playback": "cancel", "noise_suppression": False}


def test_a_missing_camera_fails(loopback: PulseLoopback, server: ServerThread, scratch: Path):
    cfg = write_config(scratch, server.base_url, camera={"enabled": True, "source": "picamera2"})
    result = doctor(cfg, child_env(loopback, server), "camera")
    assert result.returncode == 1
    line = lines_of(result)["camera"]
    assert line.startswith("FAIL  camera   picamera2: picamera2 is not installed")
    assert "fix: " in line


def test_a_broken_configuration_fails_and_skips_the_rest(scratch: Path) -> None:
    cfg = scratch / "config.toml"
    cfg.write_text("[audio]\nchunk_ms = 'fast'\n")
    result = doctor(cfg, {**os.environ}, "mic", "network")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    found = lines_of(result)
    assert found["config"].startswith(f"FAIL  config   {cfg}: [audio] chunk_ms: must be an integer")
    assert found["network"].startswith("SKIP") and found["mic"].startswith("SKIP")


def test_doctor_shows_a_path_that_is_not_utf8_instead_of_a_traceback(scratch: Path) -> None:
    """A UTF-8 terminal (Raspberry Pi OS's en_GB.UTF-8) and a directory named in Latin-1
    (a backup from an old system): the doctor's line, not UnicodeEncodeError."""
    path = Path(os.fsdecode(os.fsencode(scratch) + b"/K\xfcche/config.toml"))
    result = doctor(path, {**os.environ, "PYTHONIOENCODING": "utf-8"}, "config")
    assert "Traceback" not in result.stderr, result.stderr
    assert "no such configuration file" in result.stdout


def test_hardware_the_running_service_holds_is_not_touched(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    assert server.server is not None
    notify = NotifySocket()  # started by systemd, as the service is
    daemon = start_daemon(
        scratch, loopback, server.server, env={"NOTIFY_SOCKET": str(notify.path)}
    )
    try:
        daemon.wait_ready()
        cfg = scratch / "config.toml"  # the daemon's own
        result = doctor(cfg, child_env(loopback, server), "mic", "leds", "network")
    finally:
        daemon.terminate()
        notify.close()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = lines_of(result)
    for name in ("mic", "leds"):
        assert lines[name].startswith(
            f"SKIP  {name:<8} in use by the running service "
            "(sudo systemctl stop live-appliance to test it); it says: idle, session closed"
        )
    assert lines["network"].startswith("PASS")


def test_hardware_a_copy_run_by_hand_holds_is_said_to_be_its(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    """`live-appliance run` in a shell (no NOTIFY_SOCKET): no service to stop."""
    assert server.server is not None
    daemon = start_daemon(scratch, loopback, server.server)
    try:
        daemon.wait_ready()
        result = doctor(scratch / "config.toml", child_env(loopback, server), "mic")
    finally:
        daemon.terminate()
    assert lines_of(result)["mic"].startswith(
        f"SKIP  mic      in use by a live-appliance run by hand, pid {daemon.proc.pid} "
        "(stop it, Ctrl-C where it runs, to test it)"
    ), result.stdout


# -- in-process: the pins ------------------------------------------------------------------


@pytest.fixture
def mock_pins() -> Iterator[Any]:
    from gpiozero.pins.mock import MockPWMPin

    with pins(MockPWMPin) as factory:
        yield factory


def config_file(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(to_toml(sections))
    return path


def context(tmp_path: Path, options: Options, **sections: dict[str, Any]) -> Context:
    """What the runner gives a check, for a configuration of `sections`."""
    return Context(config.load(config_file(tmp_path, **sections)), options, Progress(spinner=False))


SYNTHETIC_CAMERA = {"camera": {"enabled": True, "source": "synthetic"}}


async def test_the_doctors_picture_of_the_room_is_for_whoever_ran_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved in a shared /tmp, it was any local user's to read (0644, root's)."""
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(b"an earlier run's")
    photo.chmod(0o644)
    monkeypatch.setenv("SUDO_UID", "4321")  # `sudo live-appliance doctor` by uid 4321
    monkeypatch.setenv("SUDO_GID", "4322")
    result = await check_camera(context(tmp_path, Options(camera_out=photo), **SYNTHETIC_CAMERA))
    assert result.status is Status.PASS, result
    saved = photo.stat()
    assert saved.st_mode & 0o777 == 0o600 and photo.read_bytes()[:2] == b"\xff\xd8"
    if os.geteuid() == 0:
        assert (saved.st_uid, saved.st_gid) == (4321, 4322)
    target = tmp_path / "not-a-picture"
    target.write_text("kept")
    photo.unlink()
    photo.symlink_to(target)  # a link put where the picture goes is not followed
    result = await check_camera(context(tmp_path, Options(camera_out=photo), **SYNTHETIC_CAMERA))
    assert result.status is Status.PASS and not photo.is_symlink()
    assert target.read_text() == "kept"


async def test_a_fifo_where_the_doctor_saves_its_picture_does_not_hold_the_doctor(
    tmp_path: Path,
) -> None:
    """The picture goes to /tmp by default, where any local user may put a FIFO: opening
    it to write waited for a reader, and `sudo live-appliance doctor` never ended."""
    photo = tmp_path / "camera.jpg"
    os.mkfifo(photo, 0o666)
    options = Options(camera_out=photo)
    check = asyncio.create_task(check_camera(context(tmp_path, options, **SYNTHETIC_CAMERA)))
    done, _ = await asyncio.wait([check], timeout=5)
    if not done:  # a reader comes, or the thread stuck in open() keeps the test process
        await asyncio.to_thread(photo.read_bytes)
    assert done, "the doctor waited on the FIFO"
    result = check.result()
    assert result.status is not Status.FAIL, result


async def test_a_file_held_open_where_the_doctor_saves_its_picture_never_gets_it(
    tmp_path: Path,
) -> None:
    """A local user who made the file and holds it open read the room's picture through
    it, whatever its owner and mode became once the doctor had written it."""
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(b"")
    with photo.open("rb") as held:  # opened before the doctor ran, by someone else
        options = Options(camera_out=photo)
        result = await check_camera(context(tmp_path, options, **SYNTHETIC_CAMERA))
        assert result.status is Status.PASS, result
        assert held.read() == b"", "the picture went into a file another process held"
    assert photo.read_bytes()[:2] == b"\xff\xd8"
    assert photo.stat().st_mode & 0o777 == 0o600


async def test_button_press_passes(mock_pins: Any, tmp_path: Path) -> None:
    pin = mock_pins.pin(17)
    check = asyncio.create_task(check_button(context(tmp_path, Options(button_wait_s=5))))
    deadline = time.monotonic() + 5
    while not check.done() and time.monotonic() < deadline:  # a person pressing, again
        pin.drive_low()
        await asyncio.sleep(0.05)
        pin.drive_high()
        await asyncio.sleep(0.05)
    result = await check
    assert result.status is Status.PASS and "press seen on GPIO 17" in result.measured


async def test_button_never_pressed_fails(mock_pins: Any, tmp_path: Path) -> None:
    result = await check_button(context(tmp_path, Options(button_wait_s=0.2), button={"pin": 22}))
    assert result.status is Status.FAIL
    assert result.measured == "no press on GPIO 22 in 0.2 s"
    assert result.fix is not None and "GPIO 22" in result.fix


async def test_button_held_down_from_the_start_warns(mock_pins: Any, tmp_path: Path) -> None:
    from gpiozero.pins.mock import MockPin

    class ShortedToGround(MockPin):
        def _set_pull(self, value: str) -> None:
            self._pull = value  # the pull-up loses against the short: the pin stays low

    mock_pins.pin_class = ShortedToGround
    result = await check_button(context(tmp_path, Options(button_wait_s=0.2)))
    assert result.status is Status.WARN and "reads pressed" in result.measured


async def test_no_button_skips(mock_pins: Any, tmp_path: Path) -> None:
    result = await check_button(context(tmp_path, Options(button=False)))
    assert result.status is Status.SKIP


async def test_leds_show_every_colour_and_end_dark(
    mock_pins: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("device.doctor.gpio.LED_STEP_S", 0.05)  # no one watches here
    result = await check_leds(
        context(tmp_path, Options(), leds={"kind": "rgb", "pins": [5, 6, 13]})
    )
    assert result.status is Status.PASS
    assert result.data["states"] == ["idle", "connecting", "listening", "thinking", "speaking",
                                     "error"]  # fmt: skip
    for number in (5, 6, 13):
        values = [state.state for state in mock_pins.pin(number).states]
        assert max(values) == 1.0, f"pin {number} never lit"
        assert values[-1] == 0.0, f"pin {number} left on"


async def test_doctor_leds_lights_each_pixel_of_a_strip_alone_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's way to find a dead pixel or a wrong count: each lights white alone, in
    strip order; it only ever played the state patterns."""
    from device.hw.leds import OFF, WHITE

    class Strip:
        pixels = 3

        def __init__(self) -> None:
            self.frames: list[tuple[object, ...]] = []

        def show(self, frame: tuple[object, ...]) -> None:
            self.frames.append(tuple(frame))

        def close(self) -> None: ...

    strip = Strip()
    monkeypatch.setattr("device.hw.leds.open_leds", lambda cfg: strip)
    monkeypatch.setattr("device.doctor.gpio.LED_STEP_S", 0.01)
    result = await check_leds(context(tmp_path, Options(), leds={"kind": "apa102", "count": 3}))
    alone = [frame.index(WHITE) for frame in strip.frames
             if sorted(frame) == sorted([WHITE, OFF, OFF])]  # fmt: skip
    assert result.status is Status.PASS and alone == [0, 1, 2], strip.frames
    assert "each of its 3 lights alone in turn" in result.measured


async def test_leds_that_cannot_be_opened_fail(mock_pins: Any, tmp_path: Path) -> None:
    from gpiozero import LED

    held = LED(5)  # another program holds a pin
    try:
        result = await check_leds(
            context(tmp_path, Options(), leds={"kind": "rgb", "pins": [5, 6, 13]})
        )
    finally:
        held.close()
    assert (
        result.status is Status.FAIL and "cannot open rgb LEDs on pins 5, 6, 13" in result.measured
    )


# -- in-process: systemd's view ------------------------------------------------------------


RUNNING = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running",
           "NRestarts": "0", "ExecMainStatus": "0"}  # fmt: skip
NO_DAEMON = {"control": {"socket": "/nonexistent/sock"}}


@pytest.mark.parametrize(
    ("props", "status", "words", "fix"),
    [
        ({"LoadState": "not-found"}, Status.SKIP, "not installed as a service", None),
        ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
          "NRestarts": "5", "ExecMainStatus": "1"}, Status.FAIL, "failed (failed), 5 restarts",
         "reset-failed"),
        ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
          "Result": "exit-code", "NRestarts": "0", "ExecMainStatus": "2"}, Status.FAIL,
         "failed (failed), 0 restarts", "then sudo systemctl restart"),
        ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
          "Result": "start-limit-hit", "NRestarts": "4", "ExecMainStatus": "0"}, Status.FAIL,
         "failed (failed), 4 restarts", "reset-failed"),
        ({"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead",
          "NRestarts": "0", "ExecMainStatus": "0"}, Status.WARN, "inactive (dead)",
         "does not answer the button until sudo systemctl start"),
        ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running",
          "NRestarts": "2", "ExecMainStatus": "0"}, Status.WARN, "active (running), 2 restarts",
         "It has restarted, after a crash or a SIGHUP"),  # no journal here tells which
        ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running",
          "NRestarts": "0", "ExecMainStatus": "0"}, Status.WARN, "control socket does not answer",
         "Check [control] socket"),
    ],
)  # fmt: skip
async def test_service_states(
    systemctl: Any,
    tmp_path: Path,
    props: dict[str, str],
    status: Status,
    words: str,
    fix: str | None,
) -> None:
    """Each state has its own advice: the measured line names the state whatever the
    branch (a stopped or a crashed service read "the control socket does not answer",
    sent to check a setting, and passed), so the fix line is what tells them apart."""
    systemctl(**props)
    result = await check_service(context(tmp_path, Options(), **NO_DAEMON))
    assert result.status is status and words in result.measured
    assert (result.fix is None) if fix is None else (fix in (result.fix or "")), result.fix
    if props.get("ActiveState") == "failed":  # a restart alone is refused past the limit
        limited = (props.get("Result"), props.get("ExecMainStatus")) != ("exit-code", "2")
        assert result.fix is not None and ("reset-failed" in result.fix) == limited
        # ... until the unit's OnFailure= timer starts it again ("refuses ... until
        # reset-failed" was not so)
        assert ("10 minutes" in result.fix and "list-timers" in result.fix) == limited


@pytest.mark.parametrize(
    ("sub", "words"),
    [("auto-restart", "starts it again by itself"), ("start", "starting")],
)
async def test_a_service_between_restarts_or_starting_is_not_told_to_be_started(
    systemctl: Any, tmp_path: Path, sub: str, words: str
) -> None:
    """In its 5 s restart backoff (it crashed) systemd starts it again by itself: "does
    not answer the button until sudo systemctl start" sent the owner to do what systemd
    is about to do, and not to the journal that says why it crashed. Starting (systemd
    allows 90 s) it is told to be started too."""
    systemctl(**{**RUNNING, "ActiveState": "activating", "SubState": sub, "NRestarts": "3"})
    result = await check_service(context(tmp_path, Options(), **NO_DAEMON))
    assert result.status is Status.WARN and result.fix is not None
    assert "systemctl start" not in result.fix, result.fix
    assert words in result.fix


async def test_a_starting_service_is_said_to_wait_as_long_as_it_does(
    systemctl: Any, tmp_path: Path
) -> None:
    """"a microphone slow to deliver holds it up to 90 s": the start waits MIC_START_TIMEOUT_S
    for the microphone; the 90 s are the unit's TimeoutStartSec, after which systemd counts
    the start failed. An owner waited a minute and a half for a microphone, and looked at
    it, not at the journal, when the start took longer."""
    unit = (Path(__file__).parents[1] / "systemd" / "live-appliance.service").read_text()
    (start_s,) = re.findall(r"^TimeoutStartSec=(\d+)s$", unit, re.MULTILINE)
    systemctl(**{**RUNNING, "ActiveState": "activating", "SubState": "start"})
    result = await check_service(context(tmp_path, Options(), **NO_DAEMON))
    fix = result.fix or ""
    assert f"systemd allows {start_s} s" in fix, fix
    assert f"{MIC_START_TIMEOUT_S:g} s for the microphone" in fix, fix


async def test_a_daemon_whose_socket_does_not_answer_is_no_pass(
    systemctl: Any, tmp_path: Path
) -> None:
    """A loop stuck: the socket takes the connection and nothing answers."""
    systemctl(**RUNNING)
    sock = scratch_dir("doctor-sock-") / "control.sock"

    async def stuck(request: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    try:
        async with ControlServer(sock, stuck):
            options = Options()
            result = await check_service(context(tmp_path, options, control={"socket": str(sock)}))
    finally:
        shutil.rmtree(sock.parent, ignore_errors=True)
    assert result.status is Status.WARN and "unreadable" in result.measured
    assert result.fix is not None and "watchdog" in result.fix


async def test_service_running_and_answering_passes(systemctl: Any, tmp_path: Path) -> None:
    systemctl(**RUNNING)
    async with daemon_saying({"status": "idle", "session_open": False, "turns": []}) as sock:
        result = await check_service(context(tmp_path, Options(), control={"socket": str(sock)}))
    assert result.status is Status.PASS
    assert result.measured == (
        "active (running), 0 restarts, last exit status 0; daemon: idle, session closed"
    )


class HandRunParts(FakeParts):
    """A box started from a shell (`sudo live-appliance run`), not by systemd: no
    NOTIFY_SOCKET."""

    def notifier(self) -> RecordingNotifier:
        notifier = super().notifier()
        notifier.address = None
        return notifier


async def test_a_box_run_by_hand_is_not_taken_for_the_service(
    systemctl: Any, tmp_path: Path
) -> None:
    """`sudo live-appliance run` in one SSH session, to see its logs, and the doctor in
    another: the microphone was "in use by the running service (sudo systemctl stop
    live-appliance to test it)", which stops nothing, and the service "does not answer the
    button until sudo systemctl start", which starts a second daemon beside the first."""
    systemctl(**{**RUNNING, "ActiveState": "inactive", "SubState": "dead"})
    async with running(tmp_path / "box", parts_class=HandRunParts) as box:
        status = box.appliance.status()
    async with daemon_saying(status) as sock:
        path = config_file(tmp_path, control={"socket": str(sock)})
        mic, service = await run_checks(
            ("mic", "service"), Options(button=False), str(path), Progress(), print
        )
    by_hand = f"live-appliance run by hand, pid {os.getpid()}"
    assert by_hand in mic.measured and "service" not in mic.measured, mic
    assert service.status is Status.WARN and service.fix is not None, service
    assert by_hand in service.fix and "until sudo systemctl start" not in service.fix, service


def idle_with(status: str, faults: list[str]) -> dict[str, Any]:
    """A ready daemon's status, its `faults` the devices it reports failing."""
    return {"ready": True, "state": "idle" if faults == ["button"] else "error",
            "status": status, "session_open": False, "faults": faults, "turns": []}  # fmt: skip


@pytest.mark.parametrize(
    ("check", "status"),
    [
        ("mic", idle_with("error: microphone: cannot open: no such device", ["microphone"])),
        ("speaker", idle_with("error: speaker: cannot open: no such device", ["speaker"])),
        ("button", idle_with("error: button on GPIO 17: GPIO busy", ["button"])),
    ],
)
async def test_a_device_the_running_service_reports_failed_is_no_skip_and_no_pass(
    tmp_path: Path, systemctl: Any, check: str, status: dict[str, Any]
) -> None:
    """The microphone unplugged (or the button's pin taken) while the service runs: the
    daemon knows, `ctl status` says so. The doctor printed SKIP for that device ("in use
    by the running service") and PASS for the service, and exited 0: "nothing failed"."""
    systemctl(**RUNNING)
    async with daemon_saying(status) as sock:
        path = config_file(tmp_path, control={"socket": str(sock)})
        found: list[Result] = await run_checks(
            (check, "service"), Options(button=False), str(path), Progress(), print
        )
    results = {result.name: result for result in found}
    assert results[check].status is Status.FAIL, results[check]
    assert status["status"].removeprefix("error: ") in results[check].measured
    assert results["service"].status is not Status.PASS
    assert exit_code(found) == 1


async def test_one_doctor_run_asks_the_daemon_once(tmp_path: Path, systemctl: Any) -> None:
    """A daemon slow to answer (up to the 2 s timeout) cost each of the runner, the echo
    line and the service line a wait of its own: they read one answer."""
    systemctl(**RUNNING)
    asked: list[dict[str, Any]] = []
    said = {"ready": True, "state": "idle", "status": "idle", "mode": "toggle",
            "session_open": False, "faults": [], "turns": [],
            "mic_during_playback": "gate", "mic_missing": None}  # fmt: skip
    async with daemon_saying(said, asked) as sock:
        path = config_file(tmp_path, control={"socket": str(sock)}, button={"mode": "toggle"},
                           audio={"mic_during_playback": "gate"})  # fmt: skip
        found = await run_checks(
            ("mic", "speaker", "echo", "service"), Options(), str(path), Progress(), print
        )
    assert [r.name for r in found] == ["mic", "speaker", "echo", "service"]
    assert found[0].status is Status.SKIP and "idle" in found[0].measured
    assert "idle" in found[3].measured
    assert len(asked) == 1, asked


def test_the_speaker_line_does_not_take_the_microphones_reason() -> None:
    """A USB speakerphone unplugged, named `input_device = "speakerphone"`: both fail to
    open, the microphone last, so the service's status names the microphone's reason. The
    speaker's line said it as its own (it names a "speaker")."""
    said = idle_with("error: microphone: cannot open: no input device matches 'speakerphone'",
                     ["microphone", "speaker"])  # fmt: skip
    speaker = held_by_the_service("speaker", said, Config())
    mic = held_by_the_service("mic", said, Config())
    assert speaker.status is Status.FAIL and mic.status is Status.FAIL
    assert "input device" not in speaker.measured, speaker.measured
    assert "no input device matches 'speakerphone'" in mic.measured


def test_a_microphone_the_running_service_hears_only_zeros_from_is_a_warning() -> None:
    """Muted (alsamixer's capture switch, a speakerphone's button), the microphone reads
    on time: the journal said so once, the doctor's line was SKIP "in use" and `ctl
    status` said nothing, while every press went unanswered."""
    said = {"ready": True, "state": "idle", "status": "idle", "session_open": False,
            "faults": [], "turns": [], "mic_silent": True}  # fmt: skip
    mic = held_by_the_service("mic", said, Config())
    assert mic.status is Status.WARN and mic.fix is not None and "alsamixer" in mic.fix
    assert held_by_the_service("speaker", said, Config()).status is Status.SKIP
    assert any("digital silence" in line for line in summary_lines(said))


def test_a_daemon_still_opening_its_microphone_is_not_said_to_be_idle() -> None:
    """Before READY (the microphone slow to deliver, or a driver stuck in its open, up to
    the unit's 90 s) the daemon's state reads idle: `ctl status` says "starting", the
    doctor's lines said "it says: idle"."""
    said = one_line({"ready": False, "status": "idle", "session_open": False})
    assert said.startswith("starting"), said


@pytest.mark.parametrize(
    ("where", "fix"),
    [
        ("unreadable file", "run the doctor with sudo"),
        ("environment", "Set the variable to the key again"),
        ("file", "Write the key into that file again"),
        ("token on v1beta", "Remove [live] api_version"),
        ("no such home", "as a full path, without ~"),
    ],
)
async def test_a_key_that_is_there_but_unusable_gets_the_fix_for_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, fix: str
) -> None:
    """Every cause got "Write the key into that file again": also a file only root may
    read (the doctor run without sudo) and a key in an environment variable."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    key_file = tmp_path / "api-key"
    key_file.write_text("AIza with a space\n")
    live: dict[str, Any] = {} if where == "environment" else {"api_key_file": str(key_file)}
    if where == "token on v1beta":
        key_file.write_text("auth_tokens/abc\n")
        live["api_version"] = "v1beta"
    if where == "environment":
        monkeypatch.setenv("GEMINI_API_KEY", "AIza with a space")
    if where == "no such home":
        live["api_key_file"] = "~no-such-user-here/api-key"
    if where == "unreadable file":
        def unreadable(path: Path, source: str) -> str:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(config, "_read_key", unreadable)
    path = tmp_path / "config.toml"
    path.write_text(to_toml({"live": live}))
    cfg = config.load(path, key=False)  # as the doctor's config check leaves it for this one
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.FAIL and result.fix is not None
    assert fix in result.fix, result.fix
    assert "with a space" not in result.measured + result.fix


async def test_an_empty_key_file_the_service_waits_for_gets_a_fix_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service now starts with [live] api_key_file empty (a power cut, a minter not run
    yet) and looks again at every press. The doctor's fix was "[live] api_key_file ... is
    missing or empty.": what is wrong, said twice, and nothing to do about it."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", tmp_path / "no-installed-key")
    key_file = tmp_path / "token"
    key_file.write_bytes(b"")
    cfg = config.load(config_file(tmp_path, live={"api_key_file": str(key_file)}), key=False)
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.FAIL and result.fix is not None
    assert str(key_file) in result.measured
    assert result.fix.startswith("Write the key"), result.fix
    assert "no restart" in result.fix, "the service reads it at the next press by itself"


async def test_the_key_line_without_sudo_does_not_send_a_working_box_to_write_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installer's key in /etc/live-appliance/api-key (root's alone, the service's
    credential, read first) and [live] api_key_file for a token not written yet: the
    service works. The doctor run without sudo said to write the key into the token's
    file, "no restart needed", not that only root may read the key the service uses."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    installed = tmp_path / "api-key"
    installed.write_text("AIzaInstalledKey\n")
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", installed)
    open_refused(monkeypatch, lambda path: path == installed)  # as the owner finds it
    live = {"api_key_file": str(tmp_path / "token")}
    cfg = config.load(config_file(tmp_path, live=live), key=False)
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.fix is not None and "only root may read" in result.fix.lower(), result
    assert not result.fix.startswith("Write the key"), result.fix


async def test_vertex_without_credentials_fails_the_key_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    live = {"backend": "vertex", "project": "my-project", "location": "us-central1"}
    result = await check_key(context(tmp_path, Options(), live=live))
    assert result.status is Status.FAIL
    assert result.measured.startswith(
        "Vertex AI, project my-project, location us-central1: no application default credentials"
    )
    assert result.fix is not None and "GOOGLE_APPLICATION_CREDENTIALS" in result.fix


async def test_vertex_with_only_an_api_key_fails_and_says_the_key_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's Vertex AI client takes project and location only: a key beside them
    is no credential, and the doctor must not pass on it."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-not-for-vertex")
    live = {"backend": "vertex", "project": "my-project", "location": "us-central1"}
    result = await check_key(context(tmp_path, Options(), live=live))
    assert result.status is Status.FAIL
    assert "no application default credentials" in result.measured
    assert "the API key from environment variable GEMINI_API_KEY is not used" in result.measured
    assert "AIza-not-for-vertex" not in result.measured


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("us-central1", "us-central1-aiplatform.googleapis.com"),
        ("global", "aiplatform.googleapis.com"),
        ("eu", "aiplatform.eu.rep.googleapis.com"),
        ("us", "aiplatform.us.rep.googleapis.com"),
    ],
)
def test_the_vertex_host_is_the_one_the_sdk_connects_to(
    tmp_path: Path, location: str, host: str
) -> None:
    from google import genai

    from device.live.endpoint import endpoint

    live = {"backend": "vertex", "project": "my-project", "location": location}
    cfg = context(tmp_path, Options(), live=live).cfg
    client = genai.Client(vertexai=True, project="my-project", location=location)
    assert endpoint(cfg) == (host, 443)
    assert host in client._api_client._websocket_base_url()


# -- progress --------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stream that says it is a terminal and tells when something is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.wrote.set()
        return super().write(text)

    async def shows(self, text: str) -> None:
        async with asyncio.timeout(5):
            while text not in self.getvalue():
                self.wrote.clear()
                await self.wrote.wait()


async def test_progress_is_a_line_per_step_off_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out)
    async with (
        progress.step("mic: opening the microphone"),
        progress.step("mic: listening for 3 s"),  # a step inside a step
    ):
        pass
    assert out.getvalue() == "... mic: opening the microphone\n... mic: listening for 3 s\n"


async def test_progress_spins_on_a_terminal_and_wipes_its_line() -> None:
    screen = Terminal()
    progress = Progress(screen)
    async with progress.step("button: press it now") as update:
        await screen.shows("| button: press it now")
        update("button: still waiting")
        await screen.shows("button: still waiting")
    assert screen.getvalue().endswith("\r\x1b[K")  # the line is clear for the result


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="lgpio loads here")
def test_without_gpio_the_doctor_says_why_lgpio_did_not_load_in_one_line(tmp_path: Path) -> None:
    """gpiozero warned once per pin driver it fell back from: eight lines of warnings on
    stderr (and in the journal at every start) before the one that matters. Left out;
    the failure says why lgpio, the Pi's own driver, did not load."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('[leds]\nkind = "single"\npins = [5]\n')
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = doctor(cfg, env, "leds")
    assert "Falling back" not in result.stderr + result.stdout
    assert "warn" not in result.stderr, result.stderr
    line = lines_of(result)["leds"]
    assert "BadPinFactory" in line and "(lgpio: No module named 'lgpio')" in line, line


async def test_a_machine_without_gpio_is_told_so_not_to_check_its_pins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pin factory at all (not a Pi, or no lgpio): no pin number is wrong."""
    from gpiozero.exc import BadPinFactory

    def no_gpio(*_args: Any, **_kwargs: Any) -> Any:
        raise BadPinFactory("Unable to load any default pin factory!")

    monkeypatch.setattr("device.hw.leds.open_leds", no_gpio)
    monkeypatch.setattr("device.hw.button.ButtonInput.start", no_gpio)
    ctx = context(tmp_path, Options(button_wait_s=0.2))
    for result in (await check_leds(ctx), await check_button(ctx)):
        assert result.status is Status.FAIL and result.fix is not None
        assert "no GPIO that gpiozero can drive" in result.fix and "Check [" not in result.fix


async def test_a_machine_without_gpio_not_waiting_for_a_press_skips_the_button(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain Debian box or a VM has no pin driver, and no setting says "no button":
    `doctor --no-button`, or the doctor from a script or a hook, failed the button there
    for good (exit 1, the code a hook tests) where it had skipped it. Asked for by name,
    it still fails with the fix."""
    from gpiozero.exc import BadPinFactory

    def no_gpio(*_args: Any, **_kwargs: Any) -> Any:
        raise BadPinFactory("Unable to load any default pin factory!")

    monkeypatch.setattr("device.hw.button.ButtonInput.start", no_gpio)
    result = await check_button(context(tmp_path, Options(button=False)))
    assert result.status is Status.SKIP, result
    assert "BadPinFactory" in result.measured and "not waiting for a press" in result.measured


async def test_a_check_that_crashes_does_not_show_the_key_its_error_quotes(
    tmp_path: Path,
) -> None:
    """"the check itself failed: ..." prints the exception's text on the owner's terminal
    (and in --json, which they are told to paste into a report): a key in it, too."""
    from device.doctor.runner import Check, _run_one

    key = config.Secret("gateway-key-0123456789abcdef").reveal()

    async def crashes(ctx: Context) -> Any:
        raise RuntimeError(f"cannot sign in: Token {key}")

    ctx = context(tmp_path, Options())
    result = await _run_one(Check("network", crashes, "reaching the Live API"), ctx)
    assert "cannot sign in" in result.measured and key not in result.measured


def audio_context() -> Context:
    """The doctor's context for a check of the configured sound devices."""
    return Context(config.Config(), Options(mic_seconds=0.5), Progress(spinner=False))


async def test_the_doctor_fails_a_microphone_whose_driver_hangs_in_its_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`doctor mic` on a wedged USB card (the open never returns): a FAIL line within
    the daemon's own limit for a call into the driver, not a doctor that hangs, its
    timeout never firing because the open held the event loop."""
    import device.doctor.audio
    from device.audio.capture import Capture
    from device.doctor.audio import check_mic

    driver = threading.Event()
    release = threading.Timer(12, driver.set)  # a hang in this test ends, to fail it
    release.start()

    def wedged(self: Capture, loop: object = None) -> None:
        driver.wait()
        raise OSError("the device went")

    monkeypatch.setattr(Capture, "start", wedged)
    monkeypatch.setattr(device.doctor.audio, "CALL_TIMEOUT_S", 1.0, raising=False)
    ctx = audio_context()
    started = time.monotonic()
    try:
        result = await check_mic(ctx)
    finally:
        release.cancel()
        driver.set()
    assert time.monotonic() - started < 3
    assert result.status is Status.FAIL
    assert result.measured == "opening the input device did not return in 1 s"


@pytest.mark.parametrize(
    ("check", "stream", "direction"),
    [(check_mic, Capture, "input"), (check_speaker, Playback, "output")],
)
async def test_a_device_not_found_is_named_by_its_summary(
    monkeypatch: pytest.MonkeyPatch, check: Any, stream: type, direction: str
) -> None:
    def missing(self: object, loop: object = None) -> None:
        raise AudioDeviceError("no device matches 'usb'", [])

    monkeypatch.setattr(stream, "start", missing)
    result = await check(audio_context())
    assert result.status is Status.FAIL
    assert result.measured == "no device matches 'usb'"
    assert direction in (result.fix or "")


@pytest.mark.parametrize(
    ("check", "stream", "direction"),
    [(check_mic, Capture, "input"), (check_speaker, Playback, "output")],
)
async def test_a_busy_device_says_what_to_close(
    monkeypatch: pytest.MonkeyPatch, check: Any, stream: type, direction: str
) -> None:
    def busy(self: object, loop: object = None) -> None:
        raise OSError("Device or resource busy")

    monkeypatch.setattr(stream, "start", busy)
    result = await check(audio_context())
    assert result.status is Status.FAIL
    assert result.measured == f"cannot open the {direction} device: Device or resource busy"
    assert "fuser" in (result.fix or "")


async def test_the_doctor_checks_the_way_the_daemon_goes_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A school or office network: the box reaches the internet only through HTTPS_PROXY,
    and its resolver knows no outside names (the proxy resolves them). The daemon talks
    through the proxy; `doctor network` resolved and connected to the Live API's host
    itself, and failed on DNS: "Check the box's network and DNS"."""
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2) as server:
        port = urlsplit(server.base_url).port
        assert port is not None
        async with proxy(to_port=port) as (proxy_port, asked):
            only_proxy(monkeypatch, f"http://127.0.0.1:{proxy_port}")
            unknown_name(monkeypatch, "localhost")  # an outside name, for this box
            cfg = Config(live=LiveConfig(base_url=f"https://localhost:{port}"),
                         api_key=Secret(server.api_key))
            result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.PASS, (result.measured, result.fix)
    assert asked == [f"CONNECT localhost:{port} HTTP/1.1".encode()]
    assert f"through the proxy 127.0.0.1:{proxy_port}" in result.measured, result.measured


async def test_a_proxy_that_intercepts_tls_is_told_as_tls_not_try_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A school's proxy that opens the tunnel, then shows its own certificate (the box does
    not trust it). Behind HTTPS_PROXY TLS is checked at setup; its failure there was told
    "try again in a minute, the service may be down", not the clock or the intercepting
    proxy (the TLS fix, as the README says)."""
    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        port = urlsplit(server.base_url).port
        assert port is not None
        async with proxy(to_port=port) as (proxy_port, _):
            for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):  # the proxy's CA is not trusted
                monkeypatch.delenv(name, raising=False)
            only_proxy(monkeypatch, f"http://127.0.0.1:{proxy_port}")
            cfg = Config(live=LiveConfig(base_url=f"https://localhost:{port}"),
                         api_key=Secret(server.api_key))
            result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert "certificate" in result.measured, result.measured
    assert result.fix == FIXES["TLS"], (result.measured, result.fix)


@pytest.mark.parametrize(
    "status", [b"407 Proxy Authentication Required", b"403 Forbidden"]
)
async def test_a_proxy_that_refuses_the_tunnel_is_told_to_check_the_proxy(
    monkeypatch: pytest.MonkeyPatch, status: bytes
) -> None:
    """The school's proxy wants a login (407) or refuses CONNECT (403). The doctor said to
    renew the API key (407), or to try again in a minute (403): neither helps."""
    async with proxy(b"HTTP/1.1 " + status) as (proxy_port, _):
        only_proxy(monkeypatch, f"http://127.0.0.1:{proxy_port}")
        cfg = Config(live=LiveConfig(base_url="https://localhost:443"),
                     api_key=Secret("AIza-not-a-real-key-0123456789abcdefghij"))
        result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert "proxy refused the tunnel" in result.measured, result.measured
    fix = result.fix or ""
    assert "HTTPS_PROXY" in fix, fix
    assert "API key" not in fix, fix


async def test_a_proxy_setting_websockets_cannot_use_is_what_the_doctor_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY=proxy.lan:3128 (curl's way) on a network whose resolver knows no outside
    names: the service fails on "HTTPS_PROXY's proxy.lan:3128 cannot be used", but the
    doctor, taking no proxy, resolved the Live API's host itself and said to check the
    box's network and DNS."""
    only_proxy(monkeypatch, "proxy.lan:3128")

    def no_outside_names(*_args: object, **_kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_outside_names)
    cfg = Config(live=LiveConfig(), api_key=Secret("AIza-not-a-real-key-0123456789abcdefghij"))
    result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert "HTTPS_PROXY's proxy.lan:3128 cannot be used" in result.measured, result.measured
    assert "HTTPS_PROXY" in (result.fix or ""), result.fix


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("http://[bad", "http://[bad cannot be used: Invalid IPv6 URL"),
        ("http://proxy.lan:312800",
         "http://proxy.lan:312800 cannot be used: Port out of range 0-65535"),
        # A password pasted with a character a URL gives a meaning to, unencoded: the
        # password's mask stopped at a '/', and the doctor printed it whole.
        ("http://alice:pr0xy/pa55word@proxy.lan:3128",
         "http://alice:***@proxy.lan:3128 cannot be used: path is meaningless"),
        ("http://alice:pr0xy?pa55word@proxy.lan:3128",
         "http://alice:***@proxy.lan:3128 cannot be used: query is meaningless"),
        ("http://alice:pr0xy#pa55word@proxy.lan:3128",
         "http://alice:***@proxy.lan:3128 cannot be used: fragment is meaningless"),
    ],
)
async def test_a_proxy_setting_urllib_cannot_parse_is_what_the_doctor_names(
    monkeypatch: pytest.MonkeyPatch, setting: str, said: str
) -> None:
    """HTTPS_PROXY=http://[bad (a bracket left open): websockets' parse raises a bare
    ValueError, which the doctor's network check did not catch; the service says the
    setting cannot be used, and the doctor must say the same, with the proxy's fix,
    never the password."""
    only_proxy(monkeypatch, setting)
    cfg = Config(live=LiveConfig(), api_key=Secret("AIza-not-a-real-key-0123456789abcdefghij"))
    result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.measured == f"proxy: HTTPS_PROXY's {said}", result.measured
    assert result.fix == FIXES["proxy"], result.fix


#: A proxy's name no resolver knows (`.invalid`, RFC 2606).
PROXY_HOST = "proxy.lan.invalid"


async def doctor_network() -> Result:
    """`doctor network`'s answer, with a key shaped as a Gemini key."""
    cfg = Config(live=LiveConfig(), api_key=Secret("AIza-not-a-real-key-0123456789abcdefghij"))
    return await check_network(Context(cfg, Options(), Progress()))


async def test_a_proxy_the_box_cannot_resolve_is_what_the_doctor_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY names a host the box's resolver does not know (a typo, or the office's
    name used at home): the doctor must blame the proxy's name and have the owner ping
    it, not "cannot resolve the Live API host", which sends them after the wrong name."""
    only_proxy(monkeypatch, f"http://{PROXY_HOST}:3128")
    unknown_name(monkeypatch, PROXY_HOST)
    result = await doctor_network()
    assert result.status is Status.FAIL
    assert result.data["layer"] == "DNS", result.data
    assert f"{PROXY_HOST}:3128" in result.measured, result.measured
    assert "Live API host" not in result.measured, result.measured
    assert f"ping -c1 {PROXY_HOST}" in (result.fix or ""), result.fix


async def test_the_doctor_quotes_the_path_websockets_blames_with_the_password_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """"path is meaningless" must show the path it means: the owner looks for it in the
    setting the line quotes."""
    only_proxy(monkeypatch, f"http://alice:pr0xy-pa55word@{PROXY_HOST}:3128/login")
    result = await doctor_network()
    assert result.measured == (
        f"proxy: HTTPS_PROXY's http://alice:***@{PROXY_HOST}:3128/login cannot be used: "
        "path is meaningless"
    )


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


#: The service started beside a copy run by hand: each start refused ("already running"),
#: systemd starting it again every 5 s, then no more (5 starts in 10 minutes).
REFUSED_BESIDE_A_COPY = [
    {"ActiveState": "activating", "SubState": "auto-restart", "NRestarts": "3"},
    {"ActiveState": "failed", "SubState": "failed", "Result": "start-limit-hit",
     "NRestarts": "4"},
]  # fmt: skip


@pytest.mark.parametrize("unit", REFUSED_BESIDE_A_COPY, ids=["restarting", "start-limit"])
async def test_a_service_refused_beside_a_copy_run_by_hand_is_told_to_stop_the_copy(
    unit: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sudo live-appliance run` left in a tmux, then `systemctl start live-appliance`: the
    doctor said "it stopped and systemd starts it again by itself" or to reset-failed and
    start it, each start refused again for as long as the copy, which it knew of, ran."""
    bin_dir = scratch_dir("review-bin-")
    props = {"LoadState": "loaded", "ExecMainStatus": "1", **unit}
    (bin_dir / "answer").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\ncat {bin_dir / 'answer'}\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    copy = {"ready": True, "state": "idle", "status": "idle", "systemd": False, "pid": 4242}
    async with daemon_saying(copy) as sock:
        path = tmp_path / "config.toml"
        path.write_text(f'[control]\nsocket = "{sock}"\n')
        cfg = config.load(path)
        result = await check_service(Context(cfg, Options(), Progress(spinner=False)))
    assert "run by hand, pid 4242" in (result.fix or ""), result
    assert "Ctrl-C" in (result.fix or ""), result
    if unit["ActiveState"] == "failed":  # past its start limit a plain start is refused too
        assert "sudo systemctl reset-failed live-appliance && sudo" in (result.fix or "")


#: What a copy run by hand in a shell says of itself: systemd did not start it.
BY_HAND: dict[str, Any] = {"ready": True, "session_open": False, "turns": [],
                           "systemd": False, "pid": 4242}  # fmt: skip


@pytest.mark.parametrize(
    ("check", "said"),
    [
        ("mic", {"state": "idle", "status": "idle", "faults": [], "mic_silent": True}),
        ("mic", {"state": "error", "status": "error: microphone: gone", "faults": ["microphone"]}),
        ("speaker", {"state": "error", "status": "error: speaker: gone", "faults": ["speaker"]}),
        (
            "button",
            {"state": "idle", "status": "error: button on GPIO 17: busy", "faults": ["button"]},
        ),
    ],
)
def test_a_copy_run_by_hand_is_named_not_called_the_running_service(
    check: str, said: dict[str, Any]
) -> None:
    """A failing device or a muted microphone in a copy run by hand: the doctor said "the
    running service says" and sent the owner to systemctl and the service's journal, where
    nothing runs and nothing is written (the copy writes to its terminal)."""
    line = held_by_the_service(check, {**BY_HAND, **said}, Config())
    assert line.status in (Status.FAIL, Status.WARN)
    assert "run by hand, pid 4242" in line.measured, line.measured
    assert "service" not in line.measured, line.measured
    assert "systemctl" not in (line.fix or "") and "journalctl" not in (line.fix or ""), line.fix
    assert "the service" not in (line.fix or ""), line.fix


@pytest.mark.parametrize(
    "said",
    [
        {"mic_during_playback": "gate", "mic_missing": "pywebrtc-audio failed"},
        {"mic_during_playback": "gate", "mic_missing": None},  # the file edited since
    ],
)
def test_the_echo_line_names_a_copy_run_by_hand_and_how_to_restart_it(
    said: dict[str, Any],
) -> None:
    """The echo line as the daemon has it: for a copy run by hand it said "the running
    service" and to restart it with systemctl, which restarts no copy."""
    here = Result("echo", Status.PASS, "echo cancellation",
                  data={"mic_during_playback": "cancel", "noise_suppression": True})  # fmt: skip
    line = _as_the_service_runs(here, {**BY_HAND, **said})
    assert line.status is Status.WARN
    assert "run by hand, pid 4242" in line.measured and "service" not in line.measured
    assert "systemctl" not in (line.fix or "") and "journalctl" not in (line.fix or ""), line.fix
    as_the_service = _as_the_service_runs(here, {**BY_HAND, **said, "systemd": True})
    assert "the running service" in as_the_service.measured
    assert "sudo systemctl restart live-appliance" in (as_the_service.fix or "")


@pytest.mark.parametrize("setting", ["api_key_file", "installer"])
def test_the_doctor_warns_of_a_key_others_may_read(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """A token job's file written 0644 where everyone may go, or the installer's key written
    again with `sudo tee` (0644) after a `rm`: a guest on the box could `cat` the key and
    spend the owner's quota, and `sudo live-appliance doctor` said PASS."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(settings, "SERVICE_USER", "nogroup")  # a group this machine has
    key_file = open_dir / "api-key"
    key_file.write_text("AIzaReadableByOthers\n")
    key_file.chmod(0o644)
    live: dict[str, Any] = {}
    if setting == "api_key_file":
        live["api_key_file"] = str(key_file)
        monkeypatch.setattr(config, "INSTALLED_KEY_FILE", open_dir / "no-installed-key")
    else:
        monkeypatch.setattr(config, "INSTALLED_KEY_FILE", key_file)
    (open_dir / "config.toml").write_text(to_toml({"live": live}))
    _, cfg = check_config(open_dir / "config.toml")  # as the doctor's first check leaves it
    assert cfg is not None

    def key_check() -> Result:
        return asyncio.run(check_key(Context(cfg, Options(), Progress(spinner=False))))

    result = key_check()
    assert result.status is Status.WARN, result
    assert "any local user" in result.measured and str(key_file) in result.measured
    assert result.fix is not None and "chmod 0" in result.fix and str(key_file) in result.fix
    assert "ReadableByOthers" not in result.measured + result.fix
    key_file.chmod(0o600 if setting == "installer" else 0o640)
    assert key_check().status is Status.PASS
    key_file.chmod(0o644)
    os.chown(open_dir, -1, grp.getgrnam("nogroup").gr_gid)
    open_dir.chmod(0o750)  # as /etc/live-appliance: the service's group may enter it
    result = key_check()
    if setting == "installer":  # root's alone, says the README: not the household's
        assert result.status is Status.WARN and "every member of group nogroup" in result.measured
    else:  # the service's group reads a token file by design (root:live-appliance 0640)
        assert result.status is Status.PASS, result


def test_the_doctor_warns_of_vertex_credentials_any_local_user_may_read(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS (the README's /etc/live-appliance/vertex.json, root
    and the service's group, 0640) copied 0644 where everyone may go: any local user
    could take the box's Google Cloud credentials, and the doctor said PASS."""
    creds = open_dir / "vertex.json"
    creds.write_text(
        '{"type": "authorized_user", "client_id": "id", "client_secret": "SecretOfTheBox", '
        '"refresh_token": "RefreshOfTheBox"}'
    )
    creds.chmod(0o644)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
    live = {"backend": "vertex", "project": "my-project", "location": "us-central1"}
    (open_dir / "config.toml").write_text(to_toml({"live": live}))
    _, cfg = check_config(open_dir / "config.toml")
    assert cfg is not None

    def key_check() -> Result:
        return asyncio.run(check_key(Context(cfg, Options(), Progress(spinner=False))))

    result = key_check()
    assert result.status is Status.WARN, result
    assert str(creds) in result.measured and "any local user" in result.measured
    assert result.fix is not None and "chmod 0640" in result.fix
    assert "OfTheBox" not in result.measured + result.fix
    creds.chmod(0o640)
    assert key_check().status is Status.PASS


def test_the_doctor_warns_of_a_configuration_others_may_change(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doctor and `ask`, run with sudo to read the root-only key, send it where the
    configuration's [live] base_url says: a configuration the service's group (the
    household's other owners) may write hands them the key, and the doctor said PASS."""
    monkeypatch.delenv("LIVE_APPLIANCE_CONFIG", raising=False)
    place = open_dir / "config.toml"
    monkeypatch.setattr(config, "DEFAULT_PATH", place)  # the service's own
    place.write_text('[button]\nmode = "toggle"\n')
    os.chown(place, 0, grp.getgrnam("nogroup").gr_gid)  # root, the service's group
    place.chmod(0o664)
    result, _ = check_config(None)
    assert result.status is Status.WARN, result
    assert "group nogroup" in result.measured and result.fix is not None
    assert f"chmod go-w {place}" in result.fix, result.fix
    place.chmod(0o640)
    assert check_config(None)[0].status is Status.PASS
    os.chown(open_dir, 0, grp.getgrnam("nogroup").gr_gid)
    open_dir.chmod(0o770)  # the file replaced in its directory: as good as written
    result, _ = check_config(None)
    assert result.status is Status.WARN and f"may change {open_dir}:" in result.measured
    open_dir.chmod(0o750)
    place.chmod(0o646)  # others may write it, but not reach it
    assert check_config(None)[0].status is Status.PASS


class FailingWrites:
    """Pixels whose every frame fails with an I/O error, as the SPI device's writes do when
    it is gone (a HAT not seated fails no write: nothing on an SPI bus answers a write)."""

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.closed = False

    def show(self, frame: tuple[object, ...]) -> None:
        raise OSError(5, "Input/output error")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("pixels", [1, 3])
async def test_doctor_leds_fails_leds_that_showed_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int
) -> None:
    driver = FailingWrites(pixels)
    monkeypatch.setattr("device.hw.leds.open_leds", lambda cfg: driver)
    monkeypatch.setattr("device.doctor.gpio.LED_STEP_S", 0.01)
    ctx = context(tmp_path, Options(), leds={"kind": "apa102", "count": pixels})
    result = await _run_one(Check("leds", check_leds, "showing every state"), ctx)
    assert result.status is Status.FAIL, result
    assert "Input/output error" in result.measured
    assert "Report this" not in (result.fix or ""), result.fix  # no bug: the hardware's
    assert driver.closed


#: systemd's MESSAGE_IDs: "Scheduled restart job" (N_RESTARTS=), "Failed with result".
SCHEDULED = "5eb03494b6584870a536b337290809b3"
FAILED = "d9b373ed55a64feb8242e02dbe79a49c"
STARTED = "39f53479d3a045ac8e11786248231fbf"
IDLE = {"status": "idle", "session_open": False, "turns": []}


def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: list[dict[str, str]]) -> None:
    """A `journalctl` on PATH that prints `entries` (its JSON output), whatever it is asked."""
    bin_dir = tmp_path / "journal-bin"
    bin_dir.mkdir()
    (bin_dir / "entries").write_text("".join(json.dumps(e) + "\n" for e in entries))
    script = bin_dir / "journalctl"
    script.write_text(f"#!/bin/sh\ncat {bin_dir / 'entries'}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


async def service_check(tmp_path: Path) -> Any:
    async with daemon_saying(IDLE) as sock:
        return await check_service(context(tmp_path, Options(), control={"socket": str(sock)}))


async def test_restarts_a_sighup_asked_for_are_not_called_crashes(
    systemctl: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`systemctl kill -s HUP live-appliance` twice (what tools send for "read your
    configuration again"): the daemon stopped with status 3 and systemd started it again,
    as the unit asks; NRestarts counts each. The doctor warned "It has crashed and
    restarted" of a box that never had."""
    systemctl(**{**RUNNING, "NRestarts": "2"})
    journal(tmp_path, monkeypatch, [
        {"MESSAGE_ID": FAILED, "UNIT_RESULT": "exit-code"},  # a bad config, fixed since
        {"MESSAGE_ID": STARTED},  # the owner's start
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "1"},
        {"MESSAGE_ID": STARTED},
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "2"},
        {"MESSAGE_ID": STARTED},
    ])  # fmt: skip
    result = await service_check(tmp_path)
    assert result.status is Status.PASS, result
    assert "crash" not in result.measured + (result.fix or ""), result


async def test_a_crash_among_asked_restarts_is_still_said(
    systemctl: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemctl(**{**RUNNING, "NRestarts": "2"})
    journal(tmp_path, monkeypatch, [
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "1"},  # an older run of restarts
        {"MESSAGE_ID": STARTED},
        {"MESSAGE_ID": FAILED, "UNIT_RESULT": "watchdog"},
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "1"},
        {"MESSAGE_ID": STARTED},
        {"MESSAGE_ID": SCHEDULED, "N_RESTARTS": "2"},  # a SIGHUP
        {"MESSAGE_ID": STARTED},
    ])  # fmt: skip
    result = await service_check(tmp_path)
    assert result.status is Status.WARN, result
    assert result.fix is not None and "crashed" in result.fix, result
    assert "2 restarts (1 after a crash)" in result.measured, result.measured


async def test_a_journal_that_does_not_tell_is_not_taken_for_no_crash(
    systemctl: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user the journal is closed to (not in group adm), or a journal rotated since:
    the restarts are still said, as restarts."""
    systemctl(**{**RUNNING, "NRestarts": "2"})
    journal(tmp_path, monkeypatch, [])
    result = await service_check(tmp_path)
    assert result.status is Status.WARN, result
    assert result.fix is not None and "journalctl -u live-appliance -b" in result.fix, result


def test_doctor_quiet_plays_no_tone_at_the_speaker(
    loopback: PulseLoopback, tmp_path: Path
) -> None:
    with ServerThread(pace=0) as server:
        cfg = write_config(tmp_path, server.base_url)
        speaker = loopback.record(SPEAKER_RATE)
        try:
            speaker.wait_started()
            result = doctor(cfg, child_env(loopback, server), "--quiet", "--no-button")
        finally:
            heard = speaker.stop()
    assert statuses(result)["speaker"] == "SKIP", result.stdout
    assert "--quiet" in lines_of(result)["speaker"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(heard) > SPEAKER_RATE  # the recording ran through the doctor's checks
    assert pcm.rms_dbfs(heard) < -60, "a sound reached the speaker of a doctor told --quiet"


@pytest.mark.parametrize(
    ("tried_again", "fix_says", "never_says"),
    [(True, "free its pins", "apt install"), (False, "apt install", "free its pins")],
    ids=["pins busy at boot", "no pin driver"],
)
def test_the_doctor_beside_the_service_fixes_unopened_leds_by_why_they_did_not_open(
    tried_again: bool, fix_says: str, never_says: str
) -> None:
    """LEDs the service could not open: pins another program held at boot (tried again)
    are freed or corrected; a machine with no pin driver at all gets lgpio installed.
    Each fix given for the other cause sends the owner after what is not wrong."""
    from test_doctor import RUNNING

    from device.config import Config
    from device.doctor.result import Status
    from device.doctor.runner import held_by_the_service

    said = {"ready": True, "state": "idle", "status": "idle", "session_open": False,
            "faults": [], "turns": [], "unit": RUNNING,
            "leds_off": {"reason": "GPIO busy", "tried_again": tried_again}}  # fmt: skip
    line = held_by_the_service("leds", said, Config())
    assert line.status is Status.FAIL, line
    assert fix_says in (line.fix or "") and never_says not in (line.fix or ""), line.fix
