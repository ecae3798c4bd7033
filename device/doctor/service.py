"""The service check: what systemd says about live-appliance, and what the daemon says."""

from __future__ import annotations

import asyncio
import shutil

from device.doctor.daemon import one_line, running_status
from device.doctor.result import Context, Result, Status

UNIT = "live-appliance"
PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus")
TIMEOUT_S = 5.0

FIX_JOURNAL = f"journalctl -u {UNIT} -n 50 shows why; then sudo systemctl restart {UNIT}."
#: Past the unit's StartLimitBurst (5 starts in 10 minutes, the owner's own included) systemd
#: refuses every start, a restart by hand too, until the failure is reset.
FIX_START_LIMIT = (
    f"It was started too often (5 times in 10 minutes, your own restarts included) and "
    f"systemd refuses to start it again until: sudo systemctl reset-failed {UNIT} && "
    f"sudo systemctl start {UNIT} (journalctl -u {UNIT} -n 50 shows why it stopped)."
)


async def systemctl_show() -> dict[str, str] | str:
    """The unit's properties, or why systemd could not be asked."""
    if shutil.which("systemctl") is None:
        return "no systemctl on this machine"
    proc = await asyncio.create_subprocess_exec(
        "systemctl",
        "show",
        UNIT,
        "-p",
        ",".join(PROPERTIES),
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


async def check_service(ctx: Context) -> Result:
    """Running, how often it restarted, how it last exited; and its own status line."""
    props = await systemctl_show()
    status = await asyncio.to_thread(running_status, ctx.cfg.control.socket)
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
    measured = (
        f"{active} ({sub}), {restarts} restarts, last exit status "
        f"{props.get('ExecMainStatus', '?')}{said}"
    )
    if active == "failed":
        limited = props.get("Result") == "start-limit-hit"
        fix = FIX_START_LIMIT if limited else FIX_JOURNAL
        return Result("service", Status.FAIL, measured, fix, data=data)
    if active != "active":
        return Result(
            "service",
            Status.WARN,
            measured,
            f"The box does not answer the button until sudo systemctl start {UNIT}.",
            data=data,
        )
    if restarts:
        return Result(
            "service",
            Status.WARN,
            measured,
            f"It has crashed and restarted: journalctl -u {UNIT} -b shows why.",
            data=data,
        )
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
    return Result("service", Status.PASS, measured, data=data)
