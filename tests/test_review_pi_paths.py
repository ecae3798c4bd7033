"""The Pi-only paths as they run on a Raspberry Pi, with the fakes laid out as the real
kernel, firmware and libraries lay them out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from device.config import Config
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status

#: Where a Pi 5 (BCM2712) running Raspberry Pi OS's kernel keeps the firmware's flags: its
#: bus is `soc@107c000000` (bcm2712.dtsi) and the firmware node a child of it
#: (bcm2712-rpi.dtsi), named by the kernel "<bus>:<node>".
PI5_THROTTLED = "devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled"


def test_the_doctor_warns_of_a_pi_5_throttled_by_heat(tmp_path: Path) -> None:
    """A Pi 5 at its limit, throttled now and since boot; rpi_volt, beside it, sees no
    under-voltage. The doctor said "no under-voltage or throttling" (it read the Pi 4's
    path only, and on a Pi 5 only the alarm)."""
    from device.doctor.power import check_power

    throttled = tmp_path / PI5_THROTTLED
    throttled.parent.mkdir(parents=True)
    throttled.write_text("e000e\n")  # capped, throttled, soft limit: now and since boot
    hwmon = tmp_path / "class/hwmon/hwmon2"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("rpi_volt\n")
    (hwmon / "in0_lcrit_alarm").write_text("0\n")
    zone = tmp_path / "class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("85350\n")

    ctx = Context(Config(), Options(), Progress(spinner=False))
    result = asyncio.run(check_power(ctx, sys_root=tmp_path))
    assert result.status is Status.WARN, result.measured
    assert "throttled" in result.measured and "now" in result.measured
    assert "heatsink" in (result.fix or "")
