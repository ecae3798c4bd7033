"""A newcomer's first hour: the commands and the README as someone new to the box meets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [("devices",), ("doctor", "--no-button"), ("ask", "Hello")])
def test_a_python_without_the_packages_dependencies_says_which_command_to_use(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """README: "`python -m device ...` is the same command". In a checkout, the system's
    `python3 -m device doctor` (not the venv's) ended in a traceback, ModuleNotFoundError:
    No module named 'pyaudio', and nothing said that the checkout's own command is
    `.venv/bin/live-appliance`. `-S` leaves out site-packages: the package's own modules
    are there (run from the checkout), its dependencies are not."""
    settings = tmp_path / "config.toml"
    settings.write_text("")
    env = {**os.environ, "GEMINI_API_KEY": "AIzaNotARealKey"}
    result = subprocess.run(
        [sys.executable, "-S", "-m", "device", *command, "--config", str(settings)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert "No module named" in result.stderr and ".venv/bin/live-appliance" in result.stderr


def test_a_demo_out_it_cannot_write_is_said_before_the_rig_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sudo scripts/demo` once (setup wanted packages), then `scripts/demo` as oneself:
    demo-out's WAVs are root's. The whole demo ran (server, sound server, daemon, a turn),
    and only then ended in a traceback (PermissionError) with no timeline printed. A WAV
    it cannot write (here a directory in its place: root may write any file) is now said
    in one line before anything starts."""
    from rig import demo

    out = tmp_path / "demo-out"
    (out / "question.wav").mkdir(parents=True)
    started: list[str] = []

    def nothing_may_start(*args: object, **kwargs: object) -> None:
        started.append("rig")
        raise AssertionError("the rig started")

    monkeypatch.setattr(demo, "speak", lambda text: b"\0\0" * 1600)
    monkeypatch.setattr(demo, "PulseLoopback", nothing_may_start)
    monkeypatch.setattr(demo, "ServerThread", nothing_may_start)
    status = demo.main(["--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and not started
    assert err.startswith("demo: failed: cannot write ") and "question.wav" in err
    assert err.count("\n") == 1


def test_the_local_servers_export_lines_are_all_ask_needs(tmp_path: Path) -> None:
    """README: `.venv/bin/python -m rig.server` "prints GOOGLE_GEMINI_BASE_URL and
    SSL_CERT_FILE to use". A newcomer pasted its `export` lines and typed
    `live-appliance ask "Hello"`: "configuration error: no API key" (exit 2), the key the
    server takes shown only as a line of prose above them."""
    settings = tmp_path / "config.toml"
    settings.write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "LIVE_APPLIANCE_CONFIG")}
    server = subprocess.Popen(
        [sys.executable, "-m", "rig.server", "--pace", "0"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        printed = [server.stdout.readline() for _ in range(5)]
        for line in printed:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                env[name] = value
        asked = subprocess.run(
            [sys.executable, "-m", "device", "ask", "Hello", "--config", str(settings)],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
        )  # fmt: skip
    finally:
        server.terminate()
        assert server.wait(10) == 0
    assert asked.returncode == 0, (printed, asked.stderr)
    assert "Reply 1" in asked.stdout
