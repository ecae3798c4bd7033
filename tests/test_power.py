"""A weak supply or heat, the commonest cause of a USB sound card dropping out, clicks and a
camera failing on a Pi, is told to the owner: a `power` line in the doctor, and a
LIVE_POWER field on the journal's lines of a lost card, camera or overrun. A fake sysfs
root (a tmp dir standing in for /sys) plays the firmware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Captured, journal_lines, until
from test_journal import daemon_log  # noqa: F401  (the daemon's handler chain, put back)

from device import logs
from device.audio.keeper import AudioKeeper
from device.config import AudioConfig, CameraConfig, Config
from device.doctor.progress import Progress
from device.doctor.result import CHECK_NAMES, Context, Options, Status
from device.doctor.runner import run_checks
from device.hw import power
from device.hw.camera import CameraFeed
from device.mic_feed import MicFeed
from device.outbox import Outbox

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


def test_a_clear_reading_where_rpi_volt_runs_says_now_and_where_the_boots_record_is(
    tmp_path: Path,
) -> None:
    """rpi_volt clears the firmware's "since boot" bits at each of its polls: a sag an
    hour ago leaves them clear, and "no under-voltage" was a promise the doctor could not
    keep. It says "now", and where the kernel's record since boot is."""
    status, measured, _ = check(fake_sys(tmp_path, throttled="0", alarm="0"))
    assert status is Status.PASS
    assert "no under-voltage or throttling now" in measured
    assert "journalctl -k -b -g voltage" in measured


def test_a_kernel_without_the_firmwares_flags_does_not_pass_for_no_throttling(
    tmp_path: Path,
) -> None:
    """A mainline kernel has rpi_volt alone: nothing says whether the Pi throttles."""
    status, measured, _ = check(fake_sys(tmp_path, alarm="0"))
    assert status is Status.PASS
    assert "throttling is not reported by this kernel" in measured
    assert "no under-voltage now" in measured


def test_a_hot_soc_without_the_firmwares_flags_is_warned_of_by_its_heat(tmp_path: Path) -> None:
    """At 84 °C, with no flags to read, the line said "no under-voltage or throttling"."""
    root = fake_sys(tmp_path, alarm="0")
    (root / "class/thermal/thermal_zone0/temp").write_text("84500\n")
    status, measured, fix = check(root)
    assert status is Status.WARN
    assert "hot enough to be throttled" in measured and "84 °C" in measured
    assert fix == power.FIX_HEAT


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


class GoneCard:
    """A sound card that is not there: its open raises as a pulled USB card's does."""

    on_change: Callable[[], None] | None = None
    busy = False

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        raise OSError("[Errno -9996] Invalid input device (no default output device)")

    def close_stream(self) -> None: ...

    def stop(self) -> None: ...

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        return "not open"


@pytest.fixture
def weak_supply(tmp_path: Path) -> Iterator[Captured]:
    note = logs.PowerNote(sys_root=fake_sys(tmp_path, throttled="50000"))
    with journal_lines("device", filters=[note], propagate=False) as captured:
        yield captured


async def test_a_lost_sound_card_on_a_weak_supply_says_so_in_the_journal(
    weak_supply: Captured,
) -> None:
    """The keeper's "microphone ... trying again" line carries LIVE_POWER, and once the
    words that name the cause and the fix; a second loss carries the field alone."""
    for _ in range(2):
        keeper = AudioKeeper({"microphone": GoneCard()}, lambda event: None, 0.5)
        await keeper.open()
    lost = [r for r in weak_supply.records if r.get("LIVE_DEVICE") == ("microphone",)]
    assert len(lost) == 2, weak_supply.records
    assert [r.get("LIVE_POWER") for r in lost] == ["under-voltage", "under-voltage"]
    assert "under-voltage" in lost[0]["MESSAGE"] and "5 V" in lost[0]["MESSAGE"]
    assert "5 V" not in lost[1]["MESSAGE"]


def test_a_microphone_overrun_on_a_weak_supply_carries_the_field(weak_supply: Captured) -> None:
    MicFeed(AudioConfig(), Outbox(hold_s=60)).overflowed(3)
    assert weak_supply.records[-1].get("LIVE_POWER") == "under-voltage"


async def test_a_camera_failing_on_a_weak_supply_carries_the_field(weak_supply: Captured) -> None:
    """No camera answers here: the feed's "camera off ... going on without video" line."""
    failures: list[str] = []
    feed = CameraFeed(
        CameraConfig(source="picamera2", fps=10.0, linger_s=0.1), lambda *_: None, failures.append
    )
    feed.start_frames()
    try:
        await until(lambda: bool(failures))
    finally:
        await feed.aclose()
    failed = [r for r in weak_supply.records if r.get("LIVE_CAMERA") == "failed"]
    assert [r.get("LIVE_POWER") for r in failed] == ["under-voltage"], weak_supply.records


def test_lines_of_a_box_on_a_good_supply_carry_no_power_field(tmp_path: Path) -> None:
    note = logs.PowerNote(sys_root=fake_sys(tmp_path, throttled="0"))
    with journal_lines("device", filters=[note], propagate=False) as captured:
        logging.getLogger("device.mic_feed").warning("overflow", extra={"LIVE_MIC_OVERFLOWS": 1})
        logging.getLogger("device.appliance").info("state", extra={"LIVE_STATE": "idle"})
    assert [r.get("LIVE_POWER") for r in captured.records] == [None, None]


def test_an_ordinary_line_never_reads_the_flags(tmp_path: Path) -> None:
    """Only a line of trouble reads sysfs: a state change costs nothing more."""
    note = logs.PowerNote(sys_root=fake_sys(tmp_path, throttled="50005"))
    with journal_lines("device", filters=[note], propagate=False) as captured:
        logging.getLogger("device.appliance").info("state", extra={"LIVE_STATE": "idle"})
    assert captured.records[0].get("LIVE_POWER") is None


@pytest.mark.usefixtures("daemon_log")
def test_the_daemons_journal_handler_adds_the_power_field() -> None:
    logs.setup()
    handlers = logging.getLogger().handlers
    assert any(isinstance(f, logs.PowerNote) for h in handlers for f in h.filters)


def test_the_flags_are_read_as_the_kernel_writes_them(tmp_path: Path) -> None:
    read = power.read(fake_sys(tmp_path, throttled="50005"))
    assert read is not None and read.flags == 0x50005 and read.under_voltage_now
    assert read.heat(since_boot=True) == ["throttled"]
    assert read.celsius == pytest.approx(48.312)


def test_the_words_are_said_once_a_boot_not_again_after_the_service_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd gives the service $RUNTIME_DIRECTORY (/run/live-appliance: emptied at each
    boot, kept across restarts); a restarted service carries the field, not the words."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    sys_root = fake_sys(tmp_path / "sys", throttled="50000")
    said = []
    for _ in range(2):  # the service, then the service restarted
        with journal_lines("device", filters=[logs.PowerNote(sys_root)], propagate=False) as got:
            MicFeed(AudioConfig(), Outbox(hold_s=60)).overflowed(1)
        said.append(got.records[-1])
    assert [r.get("LIVE_POWER") for r in said] == ["under-voltage", "under-voltage"]
    assert ["5 V" in r["MESSAGE"] for r in said] == [True, False]


def test_the_doctor_gives_the_heat_fix_for_throttling_said_now_alone(tmp_path: Path) -> None:
    """rpi_volt clears the firmware's "has occurred" bits at each poll: read just after
    one, a Pi throttled now shows only the "now" bit. The line said "throttled now" and
    gave no fix at all (the fix looked at the "since boot" bits only)."""
    status, measured, fix = check(fake_sys(tmp_path, throttled="4"))  # throttled now
    assert status is Status.WARN
    assert "throttled now" in measured
    assert "heatsink" in fix, repr(fix)


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


class KernelsGetThrottled:
    """The firmware's get_throttled as a Raspberry Pi OS kernel serves it: deprecated, and
    the first read of it each boot puts a WARNING with a call trace in the kernel's log
    and taints the kernel (drivers/firmware/raspberrypi.c: get_throttled_show,
    WARN_ONCE(1, "deprecated, use hwmon sysfs instead")). A FIFO here: `read` says
    whether anyone opened it to read."""

    def __init__(self, path: Path, flags: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        self._path = path
        self._closing = False
        self.read = threading.Event()

        def serve() -> None:
            fd = os.open(path, os.O_WRONLY)  # returns once a reader has opened it
            if not self._closing:
                self.read.set()
            with contextlib.suppress(OSError):
                os.write(fd, f"{flags}\n".encode())
            os.close(fd)

        self._server = threading.Thread(target=serve, daemon=True)
        self._server.start()

    def close(self) -> None:
        self._closing = True
        if not self.read.is_set():  # let the writer's open return
            reader = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
            self._server.join(5)
            os.close(reader)
        self._server.join(5)


def test_a_lost_card_notes_under_voltage_without_the_kernel_warning(tmp_path: Path) -> None:
    """A box on a weak supply whose microphone overruns: the journal's line says
    under-voltage (rpi_volt's alarm), and the kernel's log has no "WARNING ... get_throttled_show"
    call trace for it: the daemon read the deprecated file at each boot's first trouble
    though rpi_volt, read from the same poll of the firmware, says the same."""
    throttled = KernelsGetThrottled(tmp_path / "devices/platform/soc/soc:firmware/get_throttled",
                                    "50005")  # fmt: skip
    hwmon = tmp_path / "class/hwmon/hwmon1"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("rpi_volt\n")
    (hwmon / "in0_lcrit_alarm").write_text("1\n")
    try:
        note = logs.PowerNote(sys_root=tmp_path)
        with journal_lines("device", filters=[note], propagate=False) as captured:
            MicFeed(AudioConfig(), Outbox(hold_s=60)).overflowed(3)
    finally:
        throttled.close()
    assert captured.records[-1].get("LIVE_POWER") == "under-voltage"
    assert not throttled.read.is_set(), "get_throttled was read: the kernel logged a WARNING"
