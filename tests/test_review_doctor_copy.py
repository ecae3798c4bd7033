"""The doctor beside a daemon run by hand (`sudo live-appliance run`): its lines name it."""

from __future__ import annotations

from typing import Any

import pytest

from device.doctor.audio import _as_the_service_runs
from device.doctor.result import Result, Status
from device.doctor.runner import held_by_the_service

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
    line = held_by_the_service(check, {**BY_HAND, **said}, 17)
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
