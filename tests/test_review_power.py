"""A weak supply or heat, the commonest cause of a USB sound card dropping out, clicks and a
camera failing on a Pi, is told to the owner: a `power` line in the doctor. A fake sysfs
root (a tmp dir standing in for /sys) plays the firmware."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from device.config import Config
from device.doctor.progress import Progress
from device.doctor.result import CHECK_NAMES, Context, Options, Status
from device.doctor.runner import run_checks
from device.hw import power

THROTTLED = "devices/platform/soc/soc:firmware/get_throttled"


def fake_sys(root: Path, throttled: str | None = None, alarm: str | None = None) -> Path:
    """A /sys with the firmware's flags as a Raspberry Pi OS kernel writes them ("%x\\n"),
    and/or mainline's rpi_volt hwmon, and the SoC at 48.3 °C."""
    if throttled is not None:
        (root / THROTTLED).parent.mkdir(parents=True)
        (root / THROTTLED).write_text(f"{throttled}\n")
    hwmon = root / "class/hwmon"
    (hwmon / "hwmon0").mkdir(parents=True)
    (hwmon / "hwmon0/name").write_text("cpu_thermal\n")
    if alarm is not None:
        (hwmon / "hwmon1").mkdir()
        (hwmon / "hwmon1/name").write_text("rpi_volt\n")
        (hwmon / "hwmon1/in0_lcrit_alarm").write_text(f"{alarm}\n")
    (root / "class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "class/thermal/thermal_zone0/temp").write_text("48312\n")
    return root


def check(sys_root: Path) -> tuple[Status, str, str]:
    from device.doctor.power import check_power

    ctx = Context(Config(), Options(), Progress(spinner=False))
    result = asyncio.run(check_power(ctx, sys_root=sys_root))
    assert result.name == "power"
    return result.status, result.measured, result.fix or ""


def test_the_doctor_passes_a_pi_whose_flags_are_clear_and_gives_its_temperature(
    tmp_path: Path,
) -> None:
    status, measured, _ = check(fake_sys(tmp_path, throttled="0"))
    assert status is Status.PASS
    assert "48" in measured and "°C" in measured


@pytest.mark.parametrize(
    ("throttled", "alarm", "words"),
    [
        ("50005", None, "under-voltage now"),  # the classic weak supply: now and since boot
        ("50000", None, "under-voltage since boot"),
        (None, "1", "under-voltage now"),  # a mainline kernel: rpi_volt's alarm only
    ],
)
def test_the_doctor_warns_of_under_voltage_with_the_supply_to_use(
    tmp_path: Path, throttled: str | None, alarm: str | None, words: str
) -> None:
    status, measured, fix = check(fake_sys(tmp_path, throttled=throttled, alarm=alarm))
    assert status is Status.WARN
    assert words in measured
    assert "5 V" in fix and "3 A" in fix and "cable" in fix and "hub" in fix


def test_the_doctor_warns_of_throttling_from_heat(tmp_path: Path) -> None:
    status, measured, fix = check(fake_sys(tmp_path, throttled="80008"))  # soft limit
    assert status is Status.WARN
    assert "soft temperature limit" in measured and "under-voltage" not in measured
    assert "heatsink" in fix


def test_the_doctor_skips_power_off_a_pi_and_says_why(tmp_path: Path) -> None:
    status, measured, _ = check(fake_sys(tmp_path))  # a thermal zone, no firmware flags
    assert status is Status.SKIP
    assert "not a Raspberry Pi" in measured


def test_power_is_one_of_the_doctors_checks_and_runs_before_the_sound_card() -> None:
    assert CHECK_NAMES.index("power") < CHECK_NAMES.index("devices")
    lines = asyncio.run(
        run_checks(("power",), Options(button=False), None, Progress(spinner=False), print)
    )
    assert [r.name for r in lines] == ["power"]  # this machine: not a Pi, a SKIP


def test_the_flags_are_read_as_the_kernel_writes_them(tmp_path: Path) -> None:
    read = power.read(fake_sys(tmp_path, throttled="50005"))
    assert read is not None and read.flags == 0x50005 and read.under_voltage_now
    assert read.heat(since_boot=True) == ["throttled"]
    assert read.celsius == pytest.approx(48.312)
