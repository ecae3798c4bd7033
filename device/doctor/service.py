"""The service check: what systemd says about live-appliance, and what the daemon says."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shlex
import shutil
import time
from collections.abc import Sequence

from device.doctor.daemon import one_line, run_by_hand
from device.doctor.result import Context, Result, Status

UNIT = "live-appliance"
PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus")
TIMEOUT_S = 5.0

FIX_JOURNAL = f"journalctl -u {UNIT} -n 50 shows why; then sudo systemctl restart {UNIT}."
#: Past the unit's StartLimitBurst (5 starts in 10 minutes, the owner's own included) systemd
#: refuses every start, a restart by hand too, until the failure is reset.
FIX_START_LIMIT = (
    f"It was started too often (5 times in 10 minutes, your own restarts included): its "
    f"retry timer starts it again 10 minutes after it failed (systemctl list-timers shows "
    f"when); sooner only by sudo systemctl reset-failed {UNIT} && sudo systemctl start "
    f"{UNIT} (journalctl -u {UNIT} -n 50 shows why it stopped)."
)
#: Between a crash and systemd's restart of it (RestartSec=), and while it starts.
FIX_RESTARTING = (
    f"It stopped and systemd starts it again by itself in a few seconds: "
    f"journalctl -u {UNIT} -n 50 shows why it stopped."
)
#: While it starts: it opens the sound devices, then waits MIC_START_TIMEOUT_S (appliance)
#: for the microphone; the unit's TimeoutStartSec bounds the whole start.
FIX_STARTING = (
    f"It is starting (it opens the sound devices and waits up to 5 s for the microphone; "
    f"systemd allows 90 s, then counts the start failed): run the doctor again in a "
    f"minute; journalctl -u {UNIT} -f shows how far it got."
)


async def systemctl_show(properties: Sequence[str] = PROPERTIES) -> dict[str, str] | str:
    """The unit's properties, or why systemd could not be asked."""
    if shutil.which("systemctl") is None:
        return "no systemctl on this machine"
    proc = await asyncio.create_subprocess_exec(
        "systemctl",
        "show",
        UNIT,
        "-p",
        ",".join(properties),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"systemctl did not answer in {TIMEOUT_S:g} s"
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        return f"systemctl: {lines[0] if lines else f'exit code {proc.returncode}'}"
    pairs = (line.partition("=") for line in out.decode(errors="replace").splitlines())
    return {key: value for key, _, value in pairs if key}


async def take_service_environment(names: Sequence[str]) -> None:
    """Set here those of `names` the service is given (a drop-in's Environment=, as the
    README names Vertex AI's key file) and this shell is not: the doctor sees the box as
    the service does. Without them it failed Vertex AI's key check, "no application
    default credentials", and told the owner to set the variable they had set."""
    missing = [name for name in names if name not in os.environ]
    if not missing:
        return
    props = await systemctl_show(["Environment"])
    if isinstance(props, str):  # no systemd to ask: nothing to take
        return
    for assignment in shlex.split(props.get("Environment", "")):
        name, _, value = assignment.partition("=")
        if name in missing:
            os.environ[name] = value


#: systemd's journal lines about a unit (MESSAGE_ID): "Failed with result" (a crash, the
#: watchdog), "Scheduled restart job" with the count NRestarts shows (N_RESTARTS), and
#: "Started" (a failure before it led to no restart of the run after it).
FAILURE_RESULT = "d9b373ed55a64feb8242e02dbe79a49c"
RESTART_SCHEDULED = "5eb03494b6584870a536b337290809b3"
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"


async def crashes_among(restarts: int) -> int | None:
    """How many of the unit's last `restarts` restarts followed a failure, by systemd's own
    journal lines this boot; the others were asked for (a SIGHUP: exit status 3, no
    failure, started again as the unit says). None when the journal does not tell (closed
    to this user, rotated, no journalctl)."""
    if shutil.which("journalctl") is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        "journalctl", "-b", "-q", "-o", "json", "_PID=1", f"UNIT={UNIT}.service",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    after: list[tuple[str, bool]] = []  # each restart's count, and whether a failure led to it
    failed = False
    for line in out.decode(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        said = entry.get("MESSAGE_ID")
        if said == RESTART_SCHEDULED:
            after.append((str(entry.get("N_RESTARTS")), failed))
        if said in (RESTART_SCHEDULED, UNIT_STARTED, FAILURE_RESULT):
            failed = said == FAILURE_RESULT
    last = after[-restarts:]
    if [count for count, _ in last] != [str(n) for n in range(1, restarts + 1)]:
        return None
    return sum(crashed for _, crashed in last)


#: adjtimex(2)'s answer while the kernel's clock is not synchronized (STA_UNSYNC set).
TIME_ERROR = 5
#: Room for the kernel's struct timex (208 bytes on 64-bit Linux), zeroed: modes 0, a read.
TIMEX_SIZE = 512


def clock_synchronized() -> bool:
    """Whether NTP (systemd-timesyncd, chrony) has set the clock, as the kernel says (what
    timedatectl's NTPSynchronized reads). Until then a Pi's clock is the one fake-hwclock
    saved before its last shutdown, behind by as long as it was unplugged: a file's time
    written by the true clock is no measure against it."""
    try:
        adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):  # not Linux's C library: nothing known
        return False
    return adjtimex(ctypes.create_string_buffer(TIMEX_SIZE)) not in (-1, TIME_ERROR)


async def started_at() -> float | None:
    """When the running service started, by the wall clock (a file's mtime is compared
    with it); None when it is not running or systemd cannot say."""
    props = await systemctl_show(["ActiveState", "ExecMainStartTimestampMonotonic"])
    if isinstance(props, str) or props.get("ActiveState") != "active":
        return None
    try:
        started_us = int(props.get("ExecMainStartTimestampMonotonic", ""))
    except ValueError:
        return None
    if not started_us:
        return None
    # systemd's monotonic clock is CLOCK_MONOTONIC, time.monotonic()'s.
    return time.time() - (time.monotonic() - started_us / 1e6)


async def check_service(ctx: Context) -> Result:
    """Running, how often it restarted, how it last exited; and its own status line."""
    props = await systemctl_show()
    status = await ctx.daemon
    said = f"; daemon: {one_line(status)}" if status is not None else ""
    if isinstance(props, str):
        return Result("service", Status.SKIP, f"{props}{said}")
    data = {"systemd": props, "daemon": status}
    if props.get("LoadState") == "not-found":
        return Result(
            "service", Status.SKIP, f"{UNIT} is not installed as a service{said}", data=data
        )
    active, sub = props.get("ActiveState", "?"), props.get("SubState", "?")
    restarts = int(props.get("NRestarts") or 0)

    def measured_with(why: str = "") -> str:
        return (
            f"{active} ({sub}), {restarts} restarts{why}, last exit status "
            f"{props.get('ExecMainStatus', '?')}{said}"
        )

    measured = measured_with()
    if active != "active" and status is not None and (copy := run_by_hand(status)):
        # Failed or restarting too: each start beside the copy is refused (its lock).
        start = f"reset-failed {UNIT} && sudo systemctl start" if active == "failed" else "start"
        return Result(
            "service",
            Status.WARN,
            measured,
            f"The box runs as {copy}, not as the service: stop it (Ctrl-C where it runs), "
            f"then sudo systemctl {start} {UNIT}; starting the service beside it is refused.",
            data=data,
        )
    if active == "failed":
        # Restart=on-failure restarts every failure but a configuration error's (exit 2):
        # failed for anything else, systemd refused the restart for its start limit, and 252
        # (Debian 12's) then keeps the last crash's Result=, not start-limit-hit (HIL 60).
        config_error = (props.get("Result"), props.get("ExecMainStatus")) == ("exit-code", "2")
        fix = FIX_JOURNAL if config_error else FIX_START_LIMIT
        return Result("service", Status.FAIL, measured, fix, data=data)
    if active == "activating":
        fix = FIX_RESTARTING if sub == "auto-restart" else FIX_STARTING
        return Result("service", Status.WARN, measured, fix, data=data)
    if active != "active":
        return Result(
            "service",
            Status.WARN,
            measured,
            f"The box does not answer the button until sudo systemctl start {UNIT}.",
            data=data,
        )
    crashes = await crashes_among(restarts) if restarts else 0
    if crashes is None:
        return Result(
            "service",
            Status.WARN,
            measured,
            f"It has restarted, after a crash or a SIGHUP (which asks for a new start): "
            f"journalctl -u {UNIT} -b shows why.",
            data=data,
        )
    if crashes:
        return Result(
            "service",
            Status.WARN,
            measured_with(f" ({crashes} after a crash)"),
            f"It has crashed and restarted: journalctl -u {UNIT} -b shows why.",
            data=data,
        )
    if restarts:  # each asked for: news, not a trouble
        measured = measured_with(" (each asked for by a SIGHUP)")
    if status is None:
        return Result(
            "service",
            Status.WARN,
            f"{measured}; the control socket does not answer",
            f"Check [control] socket matches the service's; {FIX_JOURNAL}",
            data=data,
        )
    if status.get("unreadable"):  # it holds the socket but did not say how it is
        return Result(
            "service",
            Status.WARN,
            measured,
            "A daemon that answers nothing is restarted by its watchdog within 30 s; "
            f"without sudo or the {UNIT} group it cannot be asked. {FIX_JOURNAL}",
            data=data,
        )
    # It runs, but without them (a camera that failed is tried in the next conversation).
    camera = ["camera"] if status.get("camera_failure") else []
    if faults := [*map(str, status.get("faults") or ()), *camera]:
        return Result(
            "service",
            Status.WARN,
            f"{measured}; failing: {', '.join(faults)}",
            "The lines for those devices say what to do; the service tries them again "
            f"by itself (journalctl -u {UNIT} -n 50 shows when they went).",
            data=data,
        )
    return Result("service", Status.PASS, measured, data=data)
