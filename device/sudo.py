"""Files an owner's command writes under `sudo` (the doctor's picture, `ask`'s reply
audio): sudo is there to read root's key, so what the command writes is still the
owner's, who typed it, not root's (which they could not replace without sudo again)."""

from __future__ import annotations

import errno
import os


def give_to_sudo_user(fd: int) -> None:
    """Make the open file `fd` the user's who ran sudo, when this runs as root under sudo.

    A file system that keeps no owners (FAT or exFAT mounted by root, a stick in fstab)
    refuses with EPERM, and one that cannot name the user (a user namespace that maps
    none) with EINVAL: the file is then as the mount makes every file there, not lost.
    """
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if os.geteuid() == 0 and uid.isdigit():
        try:
            os.fchown(fd, int(uid), int(gid) if gid.isdigit() else -1)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
