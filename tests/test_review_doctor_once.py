"""One doctor run asks the running daemon for its status once: the hardware lines, the
echo line and the service line read the same answer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from device.control import ControlServer
from device.doctor import service
from device.doctor.progress import Progress
from device.doctor.result import Options, Status
from device.doctor.runner import run_checks
from rig.daemon import scratch_dir, to_toml


async def test_one_doctor_run_asks_the_daemon_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon slow to answer (up to the 2 s timeout) cost each of the runner, the echo
    line and the service line a wait of its own."""

    async def no_systemctl() -> str:
        return "no systemctl on this machine"

    monkeypatch.setattr(service, "systemctl_show", no_systemctl)
    asked: list[dict[str, Any]] = []

    async def answer(request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request)
        return {"ready": True, "state": "idle", "status": "idle", "mode": "toggle",
                "session_open": False, "faults": [], "turns": [],
                "mic_during_playback": "gate", "mic_missing": None}  # fmt: skip

    sock = scratch_dir("doctor-once-") / "control.sock"
    path = tmp_path / "config.toml"
    path.write_text(to_toml({"control": {"socket": str(sock)}, "button": {"mode": "toggle"},
                             "audio": {"mic_during_playback": "gate"}}))  # fmt: skip
    try:
        async with ControlServer(sock, answer):
            found = await run_checks(
                ("mic", "speaker", "echo", "service"), Options(), str(path), Progress(), print
            )
    finally:
        shutil.rmtree(sock.parent, ignore_errors=True)
    assert [r.name for r in found] == ["mic", "speaker", "echo", "service"]
    assert found[0].status is Status.SKIP and "idle" in found[0].measured
    assert "idle" in found[3].measured
    assert len(asked) == 1, asked
