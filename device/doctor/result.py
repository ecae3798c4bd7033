"""What a check reports, and what every check is given to run with."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.doctor.daemon import running_status

if TYPE_CHECKING:
    import asyncio

    from device.config import Config
    from device.doctor.progress import Progress


#: Every check, in the order they run: what an owner rules out first comes first.
CHECK_NAMES = (
    "config",
    "key",
    "network",
    "power",
    "devices",
    "mic",
    "speaker",
    "echo",
    "leds",
    "button",
    "camera",
    "card",
    "service",
)


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"  # works, but not as it should: the fix says what to look at
    FAIL = "FAIL"  # does not work: the box cannot do its job until fixed
    SKIP = "SKIP"  # not checked: the measured text says why


@dataclass(frozen=True)
class Result:
    """One line of the report: what was measured and, unless it passed, the fix."""

    name: str
    status: Status
    measured: str
    fix: str | None = None
    #: The numbers behind `measured`, for --json readers.
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}


@dataclass(frozen=True)
class Options:
    """What the owner asked for on the command line."""

    turn: bool = False  # network: one short text turn after the setup
    quiet: bool = False  # speaker: no test tone
    button: bool = True  # button: wait for a press (off: --no-button, or not a terminal)
    button_wait_s: float = 10.0
    mic_seconds: float = 3.0
    camera_out: Path = Path("/tmp/live-appliance-camera.jpg")


@dataclass(frozen=True)
class Context:
    """Everything a check may use: the configuration, the options, the progress display."""

    cfg: Config
    options: Options
    progress: Progress

    @functools.cached_property
    def daemon(self) -> asyncio.Future[dict[str, Any] | None]:
        """The running daemon's status (None: nothing serves the socket), asked once a run:
        the hardware lines, the echo line and the service line all read it, and a daemon
        that does not answer costs each ask its 2 s timeout."""
        import asyncio  # here: `ctl`, which reads CHECK_NAMES, runs without asyncio

        return asyncio.ensure_future(_daemon_status(self.cfg.control.socket))


async def _daemon_status(socket_path: str) -> dict[str, Any] | None:
    """`running_status`; and where this user may not use the socket (not yet in the
    service's group: that takes a new login), systemd's word: a service stopped holds no
    hardware, and the checks it would skip ("in use") test the devices after all."""
    import asyncio

    from device.doctor.service import systemctl_show

    status = await asyncio.to_thread(running_status, socket_path)
    if status is not None and status.get("barred"):
        unit = await systemctl_show(["ActiveState"])
        if isinstance(unit, dict) and unit.get("ActiveState") in {"inactive", "failed"}:
            return None
    return status
