"""The power check: the firmware's under-voltage and throttling flags and the SoC's
temperature, a few small sysfs reads (off the doctor's loop, as the other checks')."""

from __future__ import annotations

import asyncio
from pathlib import Path

from device.doctor.result import Context, Result, Status
from device.hw import power

#: Where the Pi 4's and 5's firmware begins to cap the ARM's clock for heat.
THROTTLES_AT_C = 80


async def check_power(ctx: Context, sys_root: Path = power.SYS) -> Result:
    """PASS with the flags clear, WARN naming under-voltage (now or since boot) or
    throttling with the fix, SKIP off a Pi. `sys_root` stands in for /sys in tests."""
    read = await asyncio.to_thread(power.read, sys_root)
    if read is None:
        return Result(
            "power",
            Status.SKIP,
            "not a Raspberry Pi (its firmware reports no under-voltage or throttling)",
        )
    data = {"flags": read.flags, "under_voltage_alarm": read.alarm, "celsius": read.celsius}
    temperature = "" if read.celsius is None else f"SoC {read.celsius:.0f} °C"
    said = []
    if read.under_voltage_now:
        said.append("under-voltage now")
    elif read.under_voltage_before:
        said.append("under-voltage since boot")
    heat_now, heat_before = read.heat(since_boot=False), read.heat(since_boot=True)
    if heat_now:
        said.append(", ".join(heat_now) + " now")
    elif heat_before:
        said.append(", ".join(heat_before) + " since boot")
    if not said and read.flags is None and (read.celsius or 0) >= THROTTLES_AT_C:
        # No firmware flags to say it (a mainline kernel): the heat alone does.
        said.append("hot enough to be throttled (this kernel reports no throttling)")
    if not said:
        measured = ", ".join(filter(None, [_all_clear(read), temperature]))
        return Result("power", Status.PASS, measured, data=data)
    fixes = []
    if read.under_voltage:
        fixes.append(power.FIX_POWER)
        fixes.append("journalctl -k -b -g voltage says when it sagged.")
    if not read.under_voltage:
        # Throttled (or hot) on a good supply: heat. Now alone too: rpi_volt clears the
        # "since boot" bits at each poll, and the line said "throttled now" with no fix.
        fixes.append(power.FIX_HEAT)
    measured = "; ".join(said) + (f" ({temperature})" if temperature else "")
    return Result(
        "power",
        Status.WARN,
        measured + ": the sound card and the camera may drop out",
        " ".join(fixes),
        data=data,
    )


def _all_clear(read: power.Power) -> str:
    """What a clear reading covers: where rpi_volt runs it clears the firmware's "since
    boot" bits at each poll, and the kernel's log is the record since boot; where it
    runs alone (a mainline kernel) nothing reports throttling."""
    if read.alarm is None:  # the firmware's flags alone: they hold since boot
        return "no under-voltage or throttling"
    checked = "no under-voltage" if read.flags is None else "no under-voltage or throttling"
    unknown = "" if read.flags is not None else "; throttling is not reported by this kernel"
    return f"{checked} now (since boot: journalctl -k -b -g voltage){unknown}"
