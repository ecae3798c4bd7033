"""What the HIL tests share: the machine under test, driven as its owner would.

Commands run for real (systemctl, journalctl, aplay, arecord, the installer, the
`live-appliance` command); the local Live server runs in the test process, so the
tests can see every byte it received.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MODE = os.environ.get("LIVE_APPLIANCE_HIL", "")
IN_VM = MODE == "vm"
SOURCE = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("HIL_RESULTS", "/tmp/live-appliance-hil"))
UNIT = "live-appliance.service"
KEY = "AIzaHILtestKey0123456789abcdefghijklmno"
OWNER = "owner" if IN_VM else os.environ.get("SUDO_USER", "root")
#: Where the owner cloned the code: in the VM a fresh copy in their home.
CHECKOUT = Path(f"/home/{OWNER}/live-appliance") if IN_VM else SOURCE
CONFIG = Path("/etc/live-appliance/config.toml")
KEY_FILE = Path("/etc/live-appliance/api-key")
#: The local server's throw-away CA, trusted by the unit through a drop-in (as an
#: owner behind a TLS-intercepting proxy would trust the proxy's).
CA_FILE = Path("/etc/live-appliance-hil/ca.pem")
#: In the VM, that CA's key (root only), kept for the second boot: the service started at
#: that boot trusts the CA file as it was then, and the local server of the second boot
#: signs with the same CA (see `server`).
CA_KEY_FILE = CA_FILE.with_name("ca-key.pem")
DROP_IN_DIR = Path("/etc/systemd/system/live-appliance.service.d")
DROP_IN = DROP_IN_DIR / "hil.conf"
SERVER_PORT = 8443
SPEECH_HZ = 300.0  # the "speech" played into the microphone
BUTTON_JUMPER = os.environ.get("HIL_BUTTON_JUMPER")

#: A VM has no GPIO: gpiozero's mock pins, with PWM so that the LEDs fade as on a Pi
#: (test_65_no_gpio.py: without PWM, and without any pins).
MOCK_PINS = {"GPIOZERO_PIN_FACTORY": "mock", "GPIOZERO_MOCK_PIN_CLASS": "mockpwmpin"}

vm_only = pytest.mark.skipif(not IN_VM, reason="changes the system as only a throw-away VM may")


# ---- commands ------------------------------------------------------------------------


def sh(argv: list[str] | str, *, check: bool = True, timeout: float = 300,
       user: str | None = None, input: str | None = None,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (a string: through bash), as root or as ``user`` in a login shell."""
    if isinstance(argv, str):
        argv = ["bash", "-c", argv]
    if user is not None:
        # A login shell: the user's groups as they are now, as after logging in again.
        argv = ["runuser", "-l", user, "-c", " ".join(shlex_quote(a) for a in argv)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            input=input, env=env, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited with {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def sh_live(command: str, *, user: str, log: str, timeout: float = 1800) -> tuple[int, str]:
    """A long command (the installer), its output shown as it comes (for the run's log)
    and kept in RESULTS/log."""
    argv = ["runuser", "-l", user, "-c", command]
    lines: list[str] = []
    started = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print(f"    [{time.monotonic() - started:6.1f}s] {line}", end="", flush=True)
            if time.monotonic() - started > timeout:
                proc.kill()
        status = proc.wait()
    save(log, "".join(lines))
    return status, "".join(lines)


def show(prop: str, unit: str = UNIT) -> str:
    return sh(["systemctl", "show", "-P", prop, unit]).stdout.strip()


_SPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def span_s(prop: str, unit: str = UNIT) -> float:
    """A time property of the unit in seconds. `systemctl show` prints spans as systemd
    writes them ("30s", "1min 30s", "500ms"; "infinity"), not in microseconds."""
    text = show(prop, unit)
    if text == "infinity":
        return float("inf")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(us|ms|min|s|h|d)", text)
    assert parts, f"{prop}={text!r} is not a time span"
    return sum(float(n) * _SPAN_UNITS[u] for n, u in parts)


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.5) -> Any:
    """Poll until ``check()`` is truthy; a generous deadline, never a timed assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}\n{unit_report()}")
        time.sleep(interval)


def unit_report() -> str:
    status = sh(["systemctl", "status", "--no-pager", "-n", "30", UNIT], check=False)
    return status.stdout[-4000:]


def active() -> bool:
    return show("ActiveState") == "active" and show("SubState") == "running"


def main_pid() -> int:
    return int(show("MainPID"))


def open_files(pid: int) -> list[str]:
    """What process `pid` holds open. A descriptor closed between the listing and its
    readlink (a file the start-up is done with) is left out, not an error."""
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held.append(os.readlink(fd))
        except FileNotFoundError:
            continue
    return held


def wait_active(timeout: float = 240) -> int:
    """Wait for the unit to be up (READY=1 received) and return its main PID."""
    wait_until(active, timeout, "the service active (running)")
    return main_pid()


def restart_service() -> int:
    sh(["systemctl", "restart", UNIT], timeout=300)
    return wait_active()


def restarts_counted_from_now() -> int:
    """systemd's automatic restarts of the service, counted from zero: a manual restart
    resets the count, so an earlier test's restart would seem to vanish after one."""
    sh(["systemctl", "reset-failed", UNIT], check=False)
    return int(show("NRestarts"))


def daemon_reload() -> None:
    sh(["systemctl", "daemon-reload"])


#: The service's venv, as the installer makes it.
APP_VENV = Path("/opt/live-appliance/venv")


def venv_distributions(venv: Path = APP_VENV) -> dict[str, str]:
    """Every distribution installed in ``venv``, name to version: what `pip list --local`
    lists, read from the metadata in its site-packages (pip's own start takes seconds
    under emulation)."""
    site = next(venv.glob("lib/python3*/site-packages"))
    found: dict[str, str] = {}
    for dist in metadata.distributions(path=[str(site)]):
        name = dist.metadata.get("Name")
        if name:
            found[name] = dist.version
    return found


# ---- the journal -----------------------------------------------------------------------


def cursor() -> str:
    """The journal's position now: entries after it belong to what follows."""
    out = sh(["journalctl", "-n", "0", "--show-cursor", "--no-pager"]).stdout
    match = re.search(r"-- cursor: (\S+)", out)
    assert match, out
    return match.group(1)


def journal(after: str | None = None, *matches: str, unit: str = UNIT) -> list[dict[str, Any]]:
    """The unit's journal entries (as JSON objects), optionally after a cursor."""
    argv = ["journalctl", "-u", unit, "-o", "json", "--no-pager", *matches]
    if after:
        argv += ["--after-cursor", after]
    out = sh(argv, check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def daemon_entries(after: str | None = None) -> list[dict[str, Any]]:
    """What the daemon itself logged (not systemd's lines about the unit)."""
    return [e for e in journal(after) if e.get("SYSLOG_IDENTIFIER") == "live-appliance"
            or "LIVE_STATE" in e or e.get("_COMM") == "live-appliance"]


def states(after: str | None = None) -> list[str]:
    return [e["LIVE_STATE"] for e in journal(after) if "LIVE_STATE" in e]


# ---- control -------------------------------------------------------------------------


def ctl(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """The `live-appliance ctl` command, a process as an owner runs it: seconds of Python
    start-up under emulation. The tests' own polls and presses use `control`."""
    return sh(["live-appliance", "ctl", *args], user=user, check=False, timeout=60)


def control_socket() -> str:
    """The control socket as `live-appliance ctl` finds it: from the configuration, read
    by the checkout's own `device.config` (standard library only); ConfigError if bad."""
    from device.config import load

    return load(CONFIG).control.socket


def control(cmd: str, timeout: float = 10.0) -> dict[str, Any]:
    """One request to the daemon over its control socket, from this process (root) with
    the client `live-appliance ctl` uses (device.control_client.request); ControlError if none."""
    from device.control_client import request

    return request(control_socket(), cmd, timeout=timeout)


def status() -> dict[str, Any]:
    """The daemon's status reply, as `ctl status --json` prints it; {} if it gives none."""
    from device.control_client import ControlError
    from device.errors import ConfigError

    try:
        reply = control("status")
    except (ControlError, ConfigError, OSError):  # what makes `ctl status` exit non-zero
        return {}
    return reply if reply.get("ok", True) else {}


def state() -> str:
    return str(status().get("state", ""))


class Button:
    """The button: a wire from a spare GPIO output to its pin (--button-jumper), else the
    control socket (what `ctl press` and `ctl release` send)."""

    def __init__(self) -> None:
        self.jumper = None
        if BUTTON_JUMPER:
            from gpiozero import DigitalOutputDevice

            # The button pulls its pin to ground; the jumper does the same when "on".
            self.jumper = DigitalOutputDevice(int(BUTTON_JUMPER), active_high=False,
                                              initial_value=False)

    def press(self) -> None:
        if self.jumper is not None:
            self.jumper.on()
        else:
            reply = control("press")
            assert reply.get("ok", True), reply

    def release(self) -> None:
        if self.jumper is not None:
            self.jumper.off()
        else:
            reply = control("release")
            assert reply.get("ok", True), reply


# ---- the loopback sound card -------------------------------------------------------------


def loopback_card() -> int | None:
    text = Path("/proc/asound/cards").read_text() if Path("/proc/asound/cards").exists() else ""
    match = re.search(r"^\s*(\d+) \[Loopback\s*\]", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def device_names() -> tuple[str, str]:
    """The daemon's microphone and speaker, as PortAudio names them: both on the
    loopback's device 1 (subdevice 0), so that the tests use device 0 on both sides:
    what the test plays into hw:Loopback,0,0 the daemon records, what the daemon
    plays the test records from hw:Loopback,0,0."""
    card = loopback_card()
    assert card is not None, "no Loopback sound card: modprobe snd-aloop"
    name = f"Loopback: PCM (hw:{card},1)"
    return name, name


def tone(hz: float, seconds: float, rate: int, amplitude: float = 0.4) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    if samples.size < rate // 10:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


def loud_seconds(pcm: bytes, rate: int, threshold: float = 0.05) -> float:
    """How much of ``pcm`` carries sound (10 ms blocks above ``threshold`` RMS)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64) / 32768
    block = rate // 100
    n = samples.size // block
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(samples[: n * block].reshape(n, block) ** 2, axis=1))
    return float(np.count_nonzero(rms > threshold)) / 100


class Recorder:
    """arecord on the loopback's capture side: what reached the daemon's speaker."""

    RATE = 24000

    def __init__(self, path: Path) -> None:
        self.path = path
        card = loopback_card()
        self.proc = subprocess.Popen(
            ["arecord", "-q", "-D", f"hw:{card},0,0", "-f", "S16_LE", "-r", str(self.RATE),
             "-c", "1", "-t", "raw", str(path)],
            stderr=subprocess.PIPE, text=True,
        )

    def stop(self) -> bytes:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.path.read_bytes() if self.path.exists() else b""


def play(pcm: bytes, rate: int = 16000) -> subprocess.Popen[bytes]:
    """aplay into the loopback's playback side: the daemon's microphone hears it. Returns
    at once: aplay reads a file (a pipe would hold this call until all but the pipe's
    last 64 KiB had played)."""
    card = loopback_card()
    with tempfile.TemporaryFile() as speech:
        speech.write(pcm)
        speech.seek(0)
        return subprocess.Popen(
            ["aplay", "-q", "-D", f"hw:{card},0,0", "-f", "S16_LE", "-r", str(rate), "-c", "1",
             "-t", "raw"],
            stdin=speech, stderr=subprocess.PIPE,
        )


# ---- the local Live server -------------------------------------------------------------


def api_key() -> str:
    """The key the box holds: the test's own in the VM, the owner's on a Pi."""
    if not IN_VM and KEY_FILE.exists():
        return KEY_FILE.read_text().strip()
    return KEY


@pytest.fixture(scope="session", autouse=True)
def restore_the_pi() -> Iterator[None]:
    """--here: put the owner's config and drop-in back afterwards, and restart."""
    if IN_VM:
        yield
        return
    config = CONFIG.read_bytes() if CONFIG.exists() else None
    drop_in = DROP_IN.read_bytes() if DROP_IN.exists() else None
    yield
    if config is not None:
        CONFIG.write_bytes(config)
    if drop_in is None:
        DROP_IN.unlink(missing_ok=True)
    else:
        DROP_IN.write_bytes(drop_in)
    daemon_reload()
    sh(["systemctl", "restart", UNIT], check=False)


#: Whether the `server` fixture found the CA file as it left it: the same CA as the one
#: the service read at its start (it reads the file once, at start).
_SERVER_CA = {"as_trusted": False}


def kept_ca() -> Any | None:
    """In the VM, the local server's CA: made at the first boot with its key kept (root
    only), read back at the second. None elsewhere: rig makes a new one per server."""
    if not IN_VM:
        return None
    import trustme

    if os.environ.get("HIL_PHASE") == "2" and CA_FILE.exists() and CA_KEY_FILE.exists():
        return trustme.CA.from_pem(CA_FILE.read_bytes(), CA_KEY_FILE.read_bytes())
    ca = trustme.CA(organization_name="live-appliance local Live API")
    CA_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    CA_KEY_FILE.unlink(missing_ok=True)
    with os.fdopen(os.open(CA_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(ca.private_key_pem.bytes())
    return ca


def server_ca_as_trusted() -> bool:
    """Whether the running local server's CA is the one in the CA file before the server
    started: what a service started before it (at boot) trusts."""
    return _SERVER_CA["as_trusted"]


@pytest.fixture(scope="session")
def server() -> Iterator[Any]:
    from rig.server.server import ServerThread  # the checkout's own local Live server

    server_thread = ServerThread(host="127.0.0.1", port=SERVER_PORT, api_key=api_key(),
                                 reply_seconds=1.5, ca=kept_ca())
    server_thread.start()
    trusted = CA_FILE.read_bytes() if CA_FILE.exists() else None
    CA_FILE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(server_thread.ca_file, CA_FILE)
    CA_FILE.chmod(0o644)
    _SERVER_CA["as_trusted"] = CA_FILE.read_bytes() == trusted
    yield server_thread
    server_thread.stop()


def client_env() -> dict[str, str]:
    """What a command the owner runs needs to trust the local server (the unit has it
    from the drop-in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_APPLIANCE")}
    env["SSL_CERT_FILE"] = str(CA_FILE)
    if IN_VM:
        env.update(MOCK_PINS)
    return env


def write_drop_in() -> None:
    """The unit's drop-in: trust the local server's CA; in the VM, gpiozero's mock pins
    (a VM has no GPIO)."""
    DROP_IN_DIR.mkdir(parents=True, exist_ok=True)
    lines = ["[Service]", f"Environment=SSL_CERT_FILE={CA_FILE}"]
    if IN_VM:
        lines += [f"Environment={name}={value}" for name, value in MOCK_PINS.items()]
    DROP_IN.write_text("\n".join(lines) + "\n")


def point_config_at_rig(text: str) -> str:
    """The owner's config, with the sound devices on the loopback card and the Live API
    at the local server: keys set right under their section headers."""
    mic, speaker = device_names()
    settings = {
        "audio": [f'input_device = "{mic}"', f'output_device = "{speaker}"'],
        # An emulated VM on a busy machine is many times slower than a Pi: the first
        # TLS handshake and setup alone can take longer than the default 5 s.
        "live": [f'base_url = "https://127.0.0.1:{SERVER_PORT}"', "connect_timeout_s = 30"],
        "camera": ["enabled = false"],
        # The reboot test has the service call it: the volume it sets must outlive a boot.
        "tools": ['enabled = ["set_volume"]'],
    }
    keys = {section: {line.split("=")[0].strip() for line in lines}
            for section, lines in settings.items()}
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[(\w+)\]", line.strip())
        if header:
            section = header.group(1)
        key = line.split("=")[0].strip() if "=" in line and not line.startswith("#") else ""
        if key and key in keys.get(section, ()):
            continue  # set again right under its header
        out.append(line)
        if header and section in settings:
            out.extend(settings.pop(section))
    for section, lines in settings.items():
        out += ["", f"[{section}]", *lines]
    return "\n".join(out) + "\n"


# ---- a turn --------------------------------------------------------------------------


class Turn:
    def __init__(self, heard: bytes, server_audio: bytes, cursor: str) -> None:
        self.heard = heard  # what reached the speaker, 24 kHz
        self.server_audio = server_audio  # what reached the server, 16 kHz
        self.cursor = cursor


def speak_a_turn(server: Any, button: Button, tmp: Path, speech_s: float = 1.5,
                 wait_s: float = 120) -> Turn:
    """Speech into the loopback microphone while the button is held; the reply recorded
    from the loopback speaker until the box is idle again."""
    wait_until(lambda: state() == "idle", 120, "the box idle before the turn")
    before = len(server.log.audio_in())
    mark = cursor()
    recorder = Recorder(tmp / "heard.raw")
    try:
        time.sleep(0.5)
        # As a person does: press, and talk once the box listens (it opens its session
        # first: a second or more under emulation).
        button.press()
        wait_until(lambda: "listening" in states(mark), wait_s, "listening after the press")
        player = play(tone(SPEECH_HZ, speech_s, 16000))
        if player.wait(timeout=60) != 0:
            raise AssertionError(f"aplay failed: {player.stderr.read() if player.stderr else ''!r}")
        time.sleep(0.3)  # the tail of the speech, then the release
        button.release()
        wait_until(lambda: "speaking" in states(mark), wait_s, "a reply (state speaking)")
        wait_until(lambda: state() == "idle", wait_s, "idle again after the reply")
        time.sleep(0.5)
    finally:
        heard = recorder.stop()
    return Turn(heard, server.log.audio_in()[before:], mark)


def save(name: str, data: str | bytes) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


@contextlib.contextmanager
def dropin(name: str, text: str, unit: str = UNIT) -> Iterator[None]:
    """A temporary drop-in for ``unit``, gone (and systemd reloaded) afterwards."""
    directory = Path(f"/etc/systemd/system/{unit}.d")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    daemon_reload()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        daemon_reload()


@pytest.fixture(scope="session")
def button() -> Button:
    return Button()


@pytest.fixture(scope="session")
def installed(server: Any) -> None:
    """The tests after the install need it to have worked."""
    if not Path(f"/etc/systemd/system/{UNIT}").exists():
        pytest.skip("the appliance is not installed (the install test failed)")
    if not active():
        restart_service()


__all__ = [
    "APP_VENV",
    "CA_FILE",
    "CA_KEY_FILE",
    "CHECKOUT",
    "CONFIG",
    "DROP_IN",
    "IN_VM",
    "KEY",
    "KEY_FILE",
    "MOCK_PINS",
    "MODE",
    "OWNER",
    "RESULTS",
    "SOURCE",
    "SPEECH_HZ",
    "UNIT",
    "Button",
    "Recorder",
    "Turn",
    "active",
    "api_key",
    "button",
    "client_env",
    "control",
    "control_socket",
    "ctl",
    "cursor",
    "daemon_entries",
    "daemon_reload",
    "device_names",
    "dominant_hz",
    "dropin",
    "installed",
    "journal",
    "loopback_card",
    "loud_seconds",
    "main_pid",
    "open_files",
    "play",
    "point_config_at_rig",
    "restart_service",
    "restore_the_pi",
    "save",
    "server",
    "server_ca_as_trusted",
    "sh",
    "show",
    "speak_a_turn",
    "state",
    "states",
    "status",
    "tone",
    "unit_report",
    "venv_distributions",
    "vm_only",
    "wait_active",
    "wait_until",
    "write_drop_in",
]
