"""The systemd unit: systemd accepts it, rates it hardened, and it still lets the daemon work.

These run systemd's own tools on the file the installer copies to the Pi
(`systemd-analyze verify`, `systemd-analyze security --offline=true`,
`systemd-analyze syscall-filter`); no systemd needs to be running.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from device import cli, config
from device.appliance import RESTART_STATUS
from device.doctor.settings import SERVICE_GROUPS, SERVICE_USER
from rig.daemon import to_toml
from rig.unit import directives, service_directives

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "live-appliance.service"
INSTALLED_COMMAND = "/opt/live-appliance/bin/live-appliance"
MAX_EXPOSURE = 2.0

#: What the daemon opens on a Pi, by the names systemd's device ACL uses (/proc/devices).
DEVICES = {
    "char-alsa": "rw",  # /dev/snd/*: microphone and speaker
    "char-gpiochip": "rw",  # /dev/gpiochip*: button and LEDs through lgpio
    "char-spi": "rw",  # /dev/spidev*: APA102 pixels on HATs
    "char-video4linux": "rw",  # /dev/video*, /dev/v4l-subdev*: camera, ISP, sensor
    "char-media": "rw",  # /dev/media*: libcamera's media graph
    "char-dma_heap": "rw",  # /dev/dma_heap/*: camera frame buffers
}

#: System calls the daemon cannot do without, and who makes them.
NEEDED_SYSCALLS = {
    "socket", "connect", "sendmsg", "recvmsg",  # Live API, DNS, journal, notify socket
    "bind", "listen", "accept4",  # the control socket
    "fchmodat",  # the control socket's mode 0660
    "mknodat",  # lgpio's notification FIFO in LG_WD
    "ioctl",  # ALSA, V4L2, media, GPIO character device, spidev, DMA heaps
    "mmap", "munmap", "madvise",  # PortAudio/ALSA and camera buffers
    "clone", "futex",  # PortAudio, gpiozero and picamera2 threads
    "epoll_pwait", "eventfd2",  # the asyncio loop
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is missing: install the Debian package 'systemd' "
            "(apt-get install systemd; scripts/setup does it)"
        )
    return path


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("systemd-analyze"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return directives(UNIT.read_text())


def runnable_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointed at this checkout's own `live-appliance` script.

    `systemd-analyze verify` fails a unit whose ExecStart binary does not exist, and
    /opt/live-appliance exists only on an installed Pi. Everything else is the file
    as it is; the name stays, since verify reads the unit type from it.
    """
    here = Path(sys.executable).parent / "live-appliance"
    assert here.exists(), f"{here}: the package's console script (scripts/setup installs it)"
    assert f"ExecStart={INSTALLED_COMMAND} " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"{INSTALLED_COMMAND} ", f"{here} "))  # ExecStopPost's too
    return copy


def test_systemd_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    # verify exits 0 even for unknown keys and bad values, which it only prints; in a
    # container without systemd as PID 1 it prints nothing at all for a clean unit.
    result = analyze("verify", runnable_copy(tmp_path, UNIT.read_text()))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_as_used_here_does_catch_a_mistake(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strickt")
    result = analyze("verify", runnable_copy(tmp_path, broken))
    assert "strickt" in result.stdout + result.stderr


def test_security_exposure_is_at_most_two() -> None:
    result = analyze("security", "--offline=true", UNIT)
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for [\w.-]+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{result.stdout}"


def test_the_daemon_is_supervised_without_a_restart_storm(unit: dict) -> None:
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["ExecStart"] == [f"{INSTALLED_COMMAND} run"]
    # The LEDs a daemon killed or crashed left lit go dark; its failure is not the unit's.
    assert service["ExecStopPost"] == [f"-{INSTALLED_COMMAND} leds-off"]
    assert service["WatchdogSec"] and service["Restart"] == ["on-failure"]
    assert unit["Unit"]["StartLimitBurst"] and unit["Unit"]["StartLimitIntervalSec"]
    # A configuration error does not go away by restarting.
    assert service["RestartPreventExitStatus"] == [str(cli.EXIT_CONFIG)]
    # A SIGHUP's stop (the daemon's "start me again") is no failure, and it is restarted.
    assert service["SuccessExitStatus"] == [str(RESTART_STATUS)]
    assert service["RestartForceExitStatus"] == [f"{RESTART_STATUS} SIGHUP"]


def test_the_daemon_gets_its_key_sockets_state_and_groups(unit: dict) -> None:
    service = unit["Service"]
    # The doctor judges the service's files as this user and these groups.
    assert service["User"] == service["Group"] == [SERVICE_USER]
    assert service["SupplementaryGroups"] == [" ".join(SERVICE_GROUPS)]
    assert service["LoadCredential"] == [f"{config.CREDENTIAL_NAME}:/etc/live-appliance/api-key"]
    runtime = PurePosixPath("/run") / service["RuntimeDirectory"][0]
    assert PurePosixPath(config.ControlConfig().socket).parent == runtime
    assert service["StateDirectory"] == ["live-appliance"]
    # lgpio writes its FIFOs where LG_WD says; %t is /run for a system service.
    lg_wd = dict(v.split("=", 1) for v in service["Environment"])["LG_WD"]
    assert PurePosixPath(lg_wd.replace("%t", "/run")) == runtime


def test_a_refused_start_leaves_the_lock_of_the_copy_that_refused_it(unit: dict) -> None:
    """A start refused beside a `sudo live-appliance run` (exit 1: the copy holds
    control.sock.lock) removed /run/live-appliance with the copy's lock and socket
    (RuntimeDirectoryPreserve=no removes it at every stop, before each automatic restart
    too): 5 s later the restart took a new lock and ran beside the copy, both opening the
    same microphone, speaker and pins, and `ctl` and the doctor saw only the service.
    Kept, each start is refused for as long as the copy runs; a socket left by a daemon
    that was killed is found stale and replaced (ControlServer._remove_stale), and the
    uninstaller removes it."""
    assert unit["Service"]["RuntimeDirectoryPreserve"] == ["yes"]


def test_the_daemon_may_open_its_devices_and_nothing_else(unit: dict) -> None:
    service = unit["Service"]
    assert service["DevicePolicy"] == ["closed"]
    allowed = dict(entry.split() for entry in service["DeviceAllow"])
    assert allowed == DEVICES
    assert "PrivateDevices" not in service, "a private /dev has no sound, GPIO or camera"


#: The kernel modules that register DEVICES' groups where they are not built in.
GROUP_MODULES = {
    "char-alsa": "snd",
    "char-spi": "spidev",
    "char-video4linux": "videodev",
    "char-media": "mc",
}


def test_the_device_groups_exist_before_the_service_starts(unit: dict) -> None:
    """systemd resolves a DeviceAllow group from /proc/devices when the service starts
    and never again: a sound card or camera whose driver loaded later (at boot) stayed
    refused (EPERM) until a restart. Each group's module is loaded first."""
    wants = " ".join(unit["Unit"]["Wants"]).split()
    after = " ".join(unit["Unit"]["After"]).split()
    for group, module in GROUP_MODULES.items():
        assert group in DEVICES
        assert f"modprobe@{module}.service" in wants, group
        assert f"modprobe@{module}.service" in after, group


def test_the_daemon_may_reach_the_network_and_local_sockets_only(unit: dict) -> None:
    families = set(" ".join(unit["Service"]["RestrictAddressFamilies"]).split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert "PrivateNetwork" not in unit["Service"]


def syscall_groups() -> dict[str, set[str]]:
    """systemd's named system call sets, as `systemd-analyze syscall-filter` lists them."""
    result = analyze("syscall-filter")
    assert result.returncode == 0, result.stderr
    groups: dict[str, set[str]] = {}
    members: set[str] = set()
    for line in result.stdout.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), set())
        elif line.strip() and not line.strip().startswith("#"):
            members.add(line.strip())
    return groups


def expand(name: str, groups: dict[str, set[str]]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(expand(member, groups) for member in groups[name]))


def test_the_system_call_filter_keeps_what_the_daemon_calls(unit: dict) -> None:
    groups = syscall_groups()
    allowed: set[str] = set()
    for entry in unit["Service"]["SystemCallFilter"]:
        if entry.startswith("~"):
            allowed -= set().union(*(expand(n, groups) for n in entry[1:].split()))
        else:
            allowed |= set().union(*(expand(n, groups) for n in entry.split()))
    assert allowed >= NEEDED_SYSCALLS, sorted(NEEDED_SYSCALLS - allowed)
    assert not {"setuid", "chown", "mount", "reboot", "init_module"} & allowed
    assert unit["Service"]["SystemCallErrorNumber"] == ["EPERM"]


HARDENING = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "UMask", "PrivateMounts", "ProtectProc",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectControlGroups", "ProtectClock", "ProtectHostname", "DevicePolicy", "DeviceAllow",
    "RestrictAddressFamilies", "NoNewPrivileges", "CapabilityBoundingSet",
    "AmbientCapabilities", "RestrictSUIDSGID", "RestrictNamespaces", "RestrictRealtime",
    "MemoryDenyWriteExecute", "LockPersonality", "RemoveIPC", "SystemCallArchitectures",
    "SystemCallFilter", "SystemCallErrorNumber",
}


def test_every_hardening_line_says_what_it_protects() -> None:
    lines = UNIT.read_text().splitlines()
    for number, line in enumerate(lines):
        key = line.partition("=")[0]
        if key not in HARDENING:
            continue
        above = number - 1
        while above >= 0 and "=" in lines[above] and not lines[above].startswith("#"):
            above -= 1  # a run of directives under one comment
        comment = []
        while above >= 0 and lines[above].startswith("#"):
            comment.append(lines[above])
            above -= 1
        assert comment, f"line {number + 1}: {line} has no comment"
        if key == "DeviceAllow":  # one comment per device, naming its path
            assert above == number - 1 - len(comment), f"line {number + 1}: {line} shares a comment"
            assert "/dev/" in "".join(comment), f"line {number + 1}: name the device path"


TIMER = ROOT / "systemd" / "live-appliance-retry.timer"
RETRY = ROOT / "systemd" / "live-appliance-retry.service"


def seconds(value: str) -> float:
    """A systemd time span such as 5s, 10min or 600 in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)\s*([a-z]*)", value)
    assert match and match.group(2) in units, value
    return int(match.group(1)) * units[match.group(2)]


def test_systemd_accepts_the_retry_units(tmp_path: Path) -> None:
    copies = []
    for path in (TIMER, RETRY):
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        copies.append(copy)
    result = analyze("verify", *copies)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_a_box_that_failed_is_started_again_later(unit: dict) -> None:
    """Never failed for good: after the start limit, OnFailure= arms a timer that
    starts the service again, much later than a plain restart would (systemd 252 has
    no RestartSteps=); a configuration error is left for the owner."""
    assert unit["Unit"]["OnFailure"] == [TIMER.name]
    timer = directives(TIMER.read_text())
    assert timer["Timer"]["Unit"] == [RETRY.name]
    assert timer["Timer"]["RemainAfterElapse"] == ["no"], "the next failure must re-arm it"
    assert "Install" not in timer, "started only by the failure, never at boot"
    delay = seconds(timer["Timer"]["OnActiveSec"][0])
    assert delay > 10 * seconds(unit["Service"]["RestartSec"][0])
    assert delay >= seconds(unit["Unit"]["StartLimitIntervalSec"][0])
    retry = directives(RETRY.read_text())["Service"]
    assert retry["Type"] == ["oneshot"]
    assert retry["ExecStart"] == [
        "/bin/systemctl reset-failed live-appliance.service",
        "/bin/systemctl start --no-block live-appliance.service",
    ]
    (condition,) = retry["ExecCondition"]
    assert f"exit-code/{cli.EXIT_CONFIG}" in condition


def test_stopping_the_service_stops_its_pending_retry() -> None:
    """`systemctl stop live-appliance` (the README's step before the doctor, or an owner
    who wants the box quiet) must not be undone ten minutes later by a retry armed at
    the last failure: the stop reaches the timer. Only the stop: a restart of the
    service must not arm it."""
    timer = directives(TIMER.read_text())
    assert timer["Unit"].get("StopPropagatedFrom") == [UNIT.name]
    assert "PartOf" not in timer["Unit"] and "BindsTo" not in timer["Unit"]


def test_the_retry_condition_skips_only_a_configuration_error(tmp_path: Path) -> None:
    """The retry's ExecCondition, run with a stand-in systemctl that answers as
    `systemctl show` would for each way the service can have failed."""
    (condition,) = directives(RETRY.read_text())["Service"]["ExecCondition"]
    argv = shlex_split(condition.replace("$$", "$"))
    fake = tmp_path / "systemctl"
    fake.write_text('#!/bin/sh\ncase "$3" in Result) echo "$RESULT" ;; '
                    'ExecMainStatus) echo "$STATUS" ;; esac\n')
    fake.chmod(0o755)
    import os

    def retried(result: str, status: int) -> bool:
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}",
               "RESULT": result, "STATUS": str(status)}
        return subprocess.run(argv, env=env, check=False).returncode == 0

    assert retried("start-limit-hit", 1)
    assert retried("watchdog", 0)
    assert retried("exit-code", 1)
    assert not retried("exit-code", cli.EXIT_CONFIG)


def shlex_split(text: str) -> list[str]:
    import shlex

    return shlex.split(text)


def test_memory_tasks_and_files_are_bounded_above_what_was_measured(unit: dict) -> None:
    """Each bound is there, with the measurement it was sized from in its comment, and
    with room: twice the benchmark's peak RSS (101.9 MB) before memory is squeezed."""
    service = unit["Service"]
    def megabytes(value: str) -> float:
        number, suffix = re.fullmatch(r"(\d+)([KMG]?)", value).groups()  # type: ignore[union-attr]
        return int(number) * {"K": 1 / 1024, "M": 1, "G": 1024, "": 1 / 2**20}[suffix]

    assert megabytes(service["MemoryHigh"][0]) >= 2 * 100
    assert megabytes(service["MemoryMax"][0]) > megabytes(service["MemoryHigh"][0])
    assert megabytes(service["MemoryMax"][0]) <= 512 / 2, "half a Pi Zero 2 W at most"
    assert int(service["TasksMax"][0]) >= 4 * 9
    assert int(service["LimitNOFILE"][0]) >= 4 * 23
    lines = UNIT.read_text().splitlines()
    for key in ("MemoryHigh", "MemoryMax", "TasksMax", "LimitNOFILE"):
        number = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        comment = []
        above = number - 1
        while lines[above].startswith("#"):
            comment.append(lines[above])
            above -= 1
        assert re.search(r"\d+ (MB|measured|threads|open files)|measured", " ".join(comment)), key


#: Deaths by these signals are clean for systemd unless the unit says otherwise
#: (systemd.service, SuccessExitStatus=): Restart=on-failure leaves the unit stopped.
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}


def started_again(returncode: int, service: dict[str, list[str]]) -> bool:
    """Whether systemd (Restart=on-failure) starts the unit again after its main process
    ended with `returncode` (negative: killed by that signal), no stop having been asked."""
    force = " ".join(service.get("RestartForceExitStatus", [])).split()
    if returncode < 0:
        sig = signal.Signals(-returncode)
        return sig.name in force or sig.name.removeprefix("SIG") in force or (
            sig not in CLEAN_SIGNALS
        )
    success = " ".join(service.get("SuccessExitStatus", [])).split()
    prevent = " ".join(service.get("RestartPreventExitStatus", [])).split()
    if str(returncode) in force:
        return True
    return returncode != 0 and str(returncode) not in success + prevent


def test_a_sighup_early_in_the_start_still_has_systemd_start_the_box_again(
    tmp_path: Path,
) -> None:
    """Under systemd a SIGHUP means "start again with the configuration read anew". One
    that came before the daemon's handler was in place (the interpreter starting, the
    imports and the configuration: a second or more on a Pi Zero) kills it by SIGHUP,
    which systemd counts a clean exit: the unit says to start it again all the same, or
    Restart=on-failure would leave the box off for good."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(to_toml({
        "control": {"socket": str(tmp_path / "control.sock")},
        "service": {"state_dir": str(tmp_path / "state")},
        "camera": {"enabled": False},
    }))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "GEMINI_API_KEY": "k",
           "PYTHONPATH": str(ROOT), "GPIOZERO_PIN_FACTORY": "mock"}
    proc = subprocess.Popen([sys.executable, "-m", "device", "run", "--config", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.send_signal(signal.SIGHUP)  # `systemctl kill -s HUP` just as it starts
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    assert proc.returncode in (RESTART_STATUS, -signal.SIGHUP), proc.returncode
    assert started_again(proc.returncode, service_directives()), (
        f"ended with {proc.returncode}: the unit is left stopped"
    )
