"""The card check: whether the file system under the state directory has room, is
writable, and keeps what is written past a boot.

A Raspberry Pi runs from an SD card. Full (the journal of a year, an owner's files),
or remounted read-only by the kernel after an error, the box still answers, but
forgets the volume it was told at each start, and the journal keeps nothing: this
line says so before the owner wonders why.
"""

from __future__ import annotations

import os
from pathlib import Path

from device.doctor.result import Context, Result, Status
from device.persist import DEFAULT_STATE_DIR, state_dir

#: Less room than this is a full card: journald stops at 15% of it by itself, and the
#: next apt upgrade or log of another program takes the rest.
LOW_BYTES = 16 * 1024 * 1024
#: Fewer free inodes than this is a full card too: no file can be made, whatever the room.
LOW_INODES = 1000

FIX_FULL = (
    "The SD card is full (df -h shows it): sudo journalctl --vacuum-size=50M frees the "
    "journal's share; remove what else filled it. The next volume the box sets is kept."
)
FIX_READ_ONLY = (
    "The SD card is read-only: the kernel remounts it so after an error (dmesg | grep -i "
    "ext4 says which). sudo reboot lets fsck repair it; if it comes back, the card is "
    "failing: copy it to a new one."
)


FIX_OVERLAY = (
    "Expected with Raspberry Pi OS's overlay file system on: to keep a volume, or an edit "
    "of the configuration, turn it off (sudo raspi-config, Performance Options, Overlay "
    "File System), reboot, make the change, then turn it on again."
)
MOUNTINFO = Path("/proc/self/mountinfo")


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, its options) of each mount, in mount order."""
    mounts = []
    for line in MOUNTINFO.read_text().splitlines():
        fields, _, after = line.partition(" - ")
        point = fields.split()[4].replace("\\040", " ")
        fstype, _, options = [*after.split(), "", ""][:3]
        mounts.append((point, fstype, options))
    return mounts


def _mount_of(path: Path, mounts: list[tuple[str, str, str]]) -> tuple[str, str, str]:
    """The mount `path` is on: the deepest mount point above it, the last one mounted."""
    above = [m for m in mounts if path.is_relative_to(m[0])]
    return max(reversed(above), key=lambda m: len(Path(m[0]).parts))


def _lost_at_boot(path: Path) -> bool:
    """On an overlay whose writes land in memory (raspi-config's overlay file system: its
    upper directory on a tmpfs); a container's overlay, written to a disk, is kept."""
    try:
        mounts = _mounts()
    except OSError:  # no /proc: not Linux, nothing to tell
        return False
    _, fstype, options = _mount_of(path.resolve(), mounts)  # mounts name real paths
    uppers = [o.removeprefix("upperdir=") for o in options.split(",") if o.startswith("upperdir=")]
    return fstype == "overlay" and any(
        _mount_of(Path(upper), mounts)[1] == "tmpfs" for upper in uppers
    )


FIX_NO_INODES = (
    "The SD card has room but no inodes left (df -i shows it): something made a great "
    "many small files; remove them. The next volume the box sets is kept."
)


def _fix(errno_name: str, path: str) -> str:
    """What puts right a state file the daemon could not write, by its errno's name."""
    place = Path(path).parent
    sandbox = (
        f"The service's unit lets it write only under {DEFAULT_STATE_DIR}: for [service] "
        f"state_dir {place}, add ReadWritePaths={place} in a drop-in (sudo systemctl edit "
        "live-appliance) and restart the service, or remove state_dir."
    )
    elsewhere = not place.is_relative_to(DEFAULT_STATE_DIR)
    fs = _statvfs(place)
    if errno_name in ("ENOSPC", "EDQUOT"):
        inodes = fs is not None and fs.f_bavail * fs.f_frsize >= LOW_BYTES and _short_of_inodes(fs)
        return FIX_NO_INODES if inodes else FIX_FULL
    if errno_name == "EROFS":
        # Read-only to the service alone: its unit makes the whole system so but its own
        # StateDirectory, and a reboot or a new card (the card's fix) changes nothing.
        writable_here = fs is not None and not fs.f_flag & os.ST_RDONLY
        return sandbox if elsewhere and writable_here else FIX_READ_ONLY
    if errno_name in ("EISDIR", "ENOTDIR", "ENOTEMPTY"):  # no file can be renamed over it
        return f"{path} is not a file: sudo rm -r {path}, then restart the service."
    allowed = (
        f" (outside {DEFAULT_STATE_DIR} its unit must allow it too: ReadWritePaths={place} "
        "in a drop-in)"
        if elsewhere
        else ""
    )
    return (
        f"The service may not write there (sudo ls -ld on {place} shows its owner): give "
        f"it to the service's user{allowed}, or name another in [service] state_dir; then "
        "restart the service."
    )


def _statvfs(place: Path) -> os.statvfs_result | None:
    """The file system under `place` (or its nearest directory made), as the doctor sees
    it; None where it cannot look."""
    try:
        return os.statvfs(_existing(place))
    except OSError:
        return None


def _short_of_inodes(fs: os.statvfs_result) -> bool:
    """Too few inodes left to make a file with, whatever the room (`df -i`)."""
    return fs.f_files > 0 and fs.f_favail < LOW_INODES


def _existing(path: Path) -> Path:
    """`path`, or its nearest directory that exists (before the first start, none made)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


async def check_card(ctx: Context) -> Result:
    """What the daemon found writing its state file; else the room on the file system."""
    status = await ctx.daemon
    if status is not None and (unkept := status.get("settings_not_kept")):
        return Result(
            "card",
            Status.WARN,
            f"the daemon cannot keep its settings (the volume) in {unkept.get('path')}: "
            f"{unkept.get('error')}",
            _fix(str(unkept.get("errno")), str(unkept.get("path"))),
            data={"daemon": unkept},
        )
    where = state_dir(ctx.cfg.service)
    try:
        fs = os.statvfs(_existing(where))
    except OSError as exc:  # a directory above it this user may not enter
        return Result("card", Status.SKIP, f"{where}: cannot look: {exc.strerror or exc}")
    free = fs.f_bavail * fs.f_frsize
    data = {"path": str(where), "free_bytes": free, "size_bytes": fs.f_blocks * fs.f_frsize}
    if fs.f_flag & os.ST_RDONLY:
        return Result("card", Status.WARN, f"{where} is on a read-only file system",
                      FIX_READ_ONLY, data=data)  # fmt: skip
    measured = f"{where}: {free / 2**20:.0f} MiB free of {fs.f_blocks * fs.f_frsize / 2**20:.0f}"
    if free < LOW_BYTES:
        return Result("card", Status.WARN, f"{measured} MiB: full", FIX_FULL, data=data)
    if _short_of_inodes(fs):
        return Result("card", Status.WARN, f"{measured} MiB, but {fs.f_favail} inodes free",
                      FIX_NO_INODES, data=data)  # fmt: skip
    if _lost_at_boot(_existing(where)):
        return Result("card", Status.WARN, f"{measured} MiB, in memory: lost at each boot",
                      FIX_OVERLAY, data=data)  # fmt: skip
    return Result("card", Status.PASS, f"{measured} MiB", data=data)
