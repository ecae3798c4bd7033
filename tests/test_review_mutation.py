"""Mutants of the last stop's changes outside the echo canceller that the tests let live,
killed by what an owner reads: the doctor's echo line on a push-to-talk box, and a
script's --help."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import config
from helpers import daemon_saying

from device.audio import echo
from device.doctor.audio import _mic_plan, check_echo
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from tests.test_script_help import ROOT, STAND_INS, VENV_TOOLS, _stand_in


def _without_the_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """32-bit Raspberry Pi OS: pywebrtc-audio has no wheel, nothing imports."""
    monkeypatch.setitem(sys.modules, echo.BINDING, None)


def test_the_doctor_on_a_push_to_talk_box_without_the_binding_says_hands_free_would_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default box (push-to-talk, "cancel") on 32-bit Raspberry Pi OS needs no
    canceller and the service does not look; the owner who would switch to hands-free
    learns from the doctor that the box would mute itself while it speaks, and why; the
    line still passes (nothing is wrong as the box is set)."""
    _without_the_binding(monkeypatch)
    result = _mic_plan(Context(config(), Options(), Progress()))
    assert result.status is Status.PASS, result
    assert "while the box speaks hands-free: gate (cancel cannot run: " in result.measured
    assert result.data["mic_during_playback"] == "gate"


def test_the_doctor_says_why_the_module_cannot_run_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Push-to-talk with [audio] noise_suppression = true on 32-bit Raspberry Pi OS: the
    line warns of the missing module, and says why once, not once for noise suppression
    and again for the hands-free canceller."""
    _without_the_binding(monkeypatch)
    ctx = Context(config(audio={"noise_suppression": True}), Options(), Progress())
    result = _mic_plan(ctx)
    assert result.status is Status.WARN, result
    assert result.measured.count("no wheel for this platform") == 1, result.measured


def test_the_doctor_on_a_push_to_talk_box_with_the_binding_says_cancel_plainly() -> None:
    result = _mic_plan(Context(config(), Options(), Progress()))
    assert result.status is Status.PASS, result
    assert "while the box speaks hands-free: cancel;" in result.measured, result.measured
    assert "cannot run" not in result.measured and "None" not in result.measured
    assert "(push-to-talk: the microphone is open only while the button is held)" in result.measured


async def test_the_echo_line_beside_a_push_to_talk_service_asks_for_no_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The push-to-talk service keeps its configured "cancel" (it needs no canceller, and
    did not look); the doctor finds hands-free would gate here. That is no configuration
    edited since the service started: the line passes, and asks for no restart."""
    _without_the_binding(monkeypatch)
    said = {"ready": True, "state": "idle", "status": "idle", "mode": "push_to_talk",
            "session_open": False, "faults": [], "turns": [],
            "mic_during_playback": "cancel", "mic_missing": None}  # fmt: skip
    async with daemon_saying(said) as sock:
        ctx = Context(config(control={"socket": str(sock)}), Options(), Progress())
        result = await check_echo(ctx)
    assert result.status is Status.PASS, result
    assert "restart" not in (result.fix or "")


def _checkout(tmp_path: Path) -> Path:
    """A copy of scripts/ whose tools would set things up: stand-ins that say who called."""
    checkout = tmp_path / "a checkout"
    shutil.copytree(ROOT / "scripts", checkout / "scripts")
    (checkout / ".venv" / "bin").mkdir(parents=True)
    for name in VENV_TOOLS:
        _stand_in(checkout / ".venv" / "bin" / name, tmp_path / "calls.log")
    return checkout


def _script(cwd: Path, tmp_path: Path, *command: str) -> tuple[str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in STAND_INS:
        _stand_in(bin_dir / name, tmp_path / "calls.log")
    result = subprocess.run(
        ["bash", *command],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(bin_dir / "python3")},
        cwd=cwd, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    log = tmp_path / "calls.log"
    return result.stdout, log.read_text().splitlines() if log.exists() else []


def test_help_asked_from_inside_scripts_is_the_scripts_header(tmp_path: Path) -> None:
    """`cd scripts && ./demo --help`: the help is the demo's header, as from the checkout."""
    checkout = _checkout(tmp_path)
    out, calls = _script(checkout / "scripts", tmp_path, "demo", "--help")
    assert out.startswith("Show the appliance working on this machine"), out
    assert calls == ["python -m rig.demo --help"], calls


def test_help_is_the_header_alone_and_the_modules_options(tmp_path: Path) -> None:
    """The header ends at its first line that is no comment: the script's own comments
    further down are no help; and the module's fuller help follows it."""
    checkout = _checkout(tmp_path)
    out, calls = _script(tmp_path, tmp_path, str(checkout / "scripts" / "demo"), "--help")
    assert "Run where it was typed" not in out, out
    assert out.rstrip().endswith("usage: python"), out  # the stand-in's answer to --help
    assert calls == ["python -m rig.demo --help"], calls


def test_help_after_a_double_dash_is_the_tools_not_the_scripts(tmp_path: Path) -> None:
    """`scripts/lock --upgrade-package x -- --help`: what follows `--` goes to the tool
    (uv pip compile here), the script's help is not printed instead."""
    checkout = _checkout(tmp_path)
    uv = checkout / ".venv" / "bin" / "uv"
    uv.write_text(f'#!/bin/bash\necho "uv $*" >> "{tmp_path / "calls.log"}"\necho "uv 0.13.9"\n')
    out, calls = _script(tmp_path, tmp_path, str(checkout / "scripts" / "lock"), "--", "--help")
    assert "Make the Pi installer's lock files" not in out, out
    assert any(call.startswith("uv pip compile") and call.endswith("-- --help") for call in calls)
