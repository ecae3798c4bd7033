"""The Pi's power and heat, as its firmware reports them: one read of a few sysfs files.

A weak supply (under-voltage) or heat (throttling) is the commonest cause of a USB
sound card dropping out, clicks and a camera failing; the doctor's "power" line and
the journal's LIVE_POWER field both read it from here.

- `devices/platform/soc/soc:firmware/get_throttled` (Raspberry Pi OS kernels; on a Pi 5
  `soc@107c000000/soc@107c000000:firmware`, its bus named by its address): the
  firmware's flags in hex without 0x. Bits 0-3: under-voltage now, ARM frequency
  capped, throttled now, soft temperature limit; bits 16-19: the same, "has occurred".
  Deprecated: the first read of it each boot puts a WARNING with a call trace in the
  kernel's log and taints the kernel (raspberrypi.c, get_throttled_show's WARN_ONCE),
  so only what needs its heat bits (the doctor) reads it where rpi_volt answers.
- `class/hwmon/*/` named `rpi_volt` (mainline kernels, and Raspberry Pi OS beside the
  file above): `in0_lcrit_alarm`, 1 while under-voltage. This driver asks the firmware
  to clear the "has occurred" bits at each of its polls (every 2 s), so where it runs
  those bits cover the last poll, not the whole boot: the kernel's own "Undervoltage
  detected!" lines (`journalctl -k -b -g voltage`) are then the record since boot.
- `class/thermal/thermal_zone0/temp`: the SoC's temperature, in thousandths of a degree.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

SYS = Path("/sys")
#: The firmware device under the SoC's bus, whatever the bus is called (`soc` up to the
#: Pi 4, `soc@107c000000` on a Pi 5).
THROTTLED = "devices/platform/soc*/soc*:firmware/get_throttled"
HWMON = Path("class/hwmon")
HWMON_NAME = "rpi_volt"
TEMPERATURE = Path("class/thermal/thermal_zone0/temp")

UNDER_VOLTAGE_NOW = 1 << 0
CAPPED_NOW = 1 << 1
THROTTLED_NOW = 1 << 2
SOFT_LIMIT_NOW = 1 << 3
HAS_OCCURRED = 16  # the "now" bits shifted up: the same since boot (or the last poll)

FIX_POWER = (
    "Use the official Raspberry Pi supply (5 V 3 A; 5 V 5 A for a Pi 5) on a short, "
    "thick cable, and plug the sound card into the Pi itself, not a bus-powered hub."
)
FIX_HEAT = "Give the Pi a heatsink or a fan and air around its case."


@dataclass(frozen=True)
class Power:
    """What the firmware says; None where this kernel does not say it."""

    flags: int | None  # get_throttled
    alarm: bool | None  # rpi_volt's in0_lcrit_alarm
    celsius: float | None

    def _bits(self, mask: int, since_boot: bool) -> bool:
        if self.flags is None:
            return False
        return bool(self.flags & (mask << HAS_OCCURRED if since_boot else mask))

    @property
    def under_voltage_now(self) -> bool:
        return bool(self.alarm) or self._bits(UNDER_VOLTAGE_NOW, since_boot=False)

    @property
    def under_voltage_before(self) -> bool:
        """Under-voltage has occurred (since boot, or the hwmon driver's last poll)."""
        return self._bits(UNDER_VOLTAGE_NOW, since_boot=True)

    @property
    def under_voltage(self) -> bool:
        return self.under_voltage_now or self.under_voltage_before

    def heat(self, since_boot: bool) -> list[str]:
        """The firmware's answers to heat (or to a supply too weak to run at full speed)."""
        words = {
            CAPPED_NOW: "ARM frequency capped",
            THROTTLED_NOW: "throttled",
            SOFT_LIMIT_NOW: "soft temperature limit",
        }
        return [word for bit, word in words.items() if self._bits(bit, since_boot)]


def read(sys_root: Path = SYS, *, heat: bool = True) -> Power | None:
    """The flags and the temperature; None off a Pi (no firmware flags of either kind).
    Files that cannot be read count as not there: this is a hint, never a failure.

    `heat=False` (under-voltage is all that is wanted) leaves the deprecated firmware
    flags unread where rpi_volt's alarm answers: that alarm is bit 16 of the same poll
    of the firmware that the flags file shows."""
    alarm = None
    with contextlib.suppress(OSError):
        for hwmon in sorted((sys_root / HWMON).iterdir()):
            if _text(hwmon / "name") == HWMON_NAME:
                value = _number(hwmon / "in0_lcrit_alarm", base=10)
                alarm = None if value is None else bool(value)
                break
    flags = None
    if heat or alarm is None:
        for path in sorted(sys_root.glob(THROTTLED)):
            if (flags := _number(path, base=16)) is not None:
                break
    if flags is None and alarm is None:
        return None
    millidegrees = _number(sys_root / TEMPERATURE, base=10)
    return Power(flags, alarm, None if millidegrees is None else millidegrees / 1000)


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _number(path: Path, base: int) -> int | None:
    text = _text(path)
    try:
        return None if text is None else int(text, base)
    except ValueError:
        return None
