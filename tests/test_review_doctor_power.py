"""The doctor's power line: a fix for each warning it gives."""

from __future__ import annotations

from pathlib import Path

from test_power import check, fake_sys

from device.doctor.result import Status


def test_the_doctor_gives_the_heat_fix_for_throttling_said_now_alone(tmp_path: Path) -> None:
    """rpi_volt clears the firmware's "has occurred" bits at each poll: read just after
    one, a Pi throttled now shows only the "now" bit. The line said "throttled now" and
    gave no fix at all (the fix looked at the "since boot" bits only)."""
    status, measured, fix = check(fake_sys(tmp_path, throttled="4"))  # throttled now
    assert status is Status.WARN
    assert "throttled now" in measured
    assert "heatsink" in fix, repr(fix)
