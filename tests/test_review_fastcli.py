"""What an owner types over SSH answers at once: no heavy import before the answer, and a
hung daemon is named as hung, with what to do, within `ctl`'s bound."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.control_client import ControlError, request

#: Each a tenth of a second or more on a Pi Zero (google-genai alone a second): none of
#: them is needed to print help, talk to the control socket or refuse a configuration.
HEAVY = (
    "google.genai", "google.auth", "numpy", "pydantic", "websockets", "PIL", "simplejpeg",
    "soxr", "webrtc_audio_processing", "gpiozero", "picamera2", "pyaudio",
)  # fmt: skip

HELP_COMMANDS = [
    [],
    ["run"],
    ["ctl"],
    ["ctl", "press"],
    ["ctl", "release"],
    ["ctl", "status"],
    ["ctl", "text"],
    ["devices"],
    ["doctor"],
    ["ask"],
]


def heavy_after(argv: list[str], *, allowed: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The exit code of `live-appliance ARGV` in a Python of its own, and the heavy
    modules (`allowed` apart) it had imported by then."""
    probe = (
        "import json, sys\n"
        "from device.cli import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules and m not in {allowed!r}]\n"
        "print(code, json.dumps(heavy), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, env=env
    )
    code, _, heavy = result.stderr.strip().splitlines()[-1].partition(" ")
    return code, json.loads(heavy)


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_every_help_imports_nothing_heavy(command: list[str]) -> None:
    assert heavy_after([*command, "--help"]) == ("0", [])


def test_devices_imports_portaudio_and_nothing_else_heavy(tmp_path: Path) -> None:
    settings = tmp_path / "config.toml"
    settings.write_text(
        f'[tools]\nenabled = ["get_time"]\n[control]\nsocket = "{tmp_path / "none.sock"}"\n'
    )
    code, heavy = heavy_after(["devices", "--config", str(settings)], allowed=("pyaudio",))
    assert code in ("0", "1") and heavy == []


def test_ask_refuses_a_configuration_before_importing_numpy(tmp_path: Path) -> None:
    """A configuration file missing or wrong is said at once: numpy (half a second on a
    Pi Zero) is for writing the reply's WAV, which no refused `ask` gets to."""
    settings = tmp_path / "config.toml"
    settings.write_text("[audio]\nchunk_ms = 'soon'\n")
    assert heavy_after(["ask", "Hello", "--config", str(tmp_path / "none.toml")]) == ("2", [])
    assert heavy_after(["ask", "Hello", "--config", str(settings)]) == ("2", [])


def test_a_daemon_that_takes_the_request_and_never_answers_is_named_hung(
    tmp_path: Path,
) -> None:
    """Its event loop stuck: the kernel queues the connection and takes the line, and the
    owner waited out the bound to read only that there was no answer; the same daemon
    with its queue full was named hung, with the fix."""
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(8)  # never accepted: a loop that no longer runs
        started = time.monotonic()
        with pytest.raises(ControlError) as raised:
            request(path, "status", timeout=0.3)
    assert time.monotonic() - started < 2
    message = str(raised.value)
    assert "0.3 s" in message and "sudo systemctl restart live-appliance" in message
