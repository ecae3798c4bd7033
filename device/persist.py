"""What the device changes about itself and keeps across restarts (the speaker volume).

A small JSON file in the state directory: `[service] state_dir` if set, else
systemd's `StateDirectory=` (passed as `$STATE_DIRECTORY`), else /var/lib/live-appliance.
Writes go to a temporary file, synced, then renamed over the old one, and the directory
synced, so a power cut never leaves half a file nor brings the old one back. A directory
that cannot be written is logged once (again after a save that worked); the device then
keeps the value until it restarts, and its status says why, for the doctor to name the fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from device.config import ServiceConfig, read_text
from device.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/live-appliance")
#: What the box keeps is a few values: a bigger file is not ours (a 300 MB one took
#: 612 MB at every start, past the unit's MemoryMax), and is ignored.
STATE_FILE_LIMIT = 64 * 1024


def state_dir(cfg: ServiceConfig) -> Path:
    if cfg.state_dir:
        return Path(cfg.state_dir)
    if env := os.environ.get("STATE_DIRECTORY"):
        return Path(env.split(":")[0])
    return DEFAULT_STATE_DIR


def kept_volume(kept: dict[str, Any], default: float) -> float:
    """The volume a start plays at, from the values kept: the one the set_volume tool last
    chose, else the configured `default`, also once the owner has changed `[audio]
    volume` since the tool chose (their edit is meant)."""
    if kept.get("volume_configured", default) != default:
        return default
    saved = kept.get("volume", default)
    valid = isinstance(saved, int | float) and not isinstance(saved, bool) and 0 <= saved <= 1
    return float(saved) if valid else default


class StateFile:
    """A JSON object on disk; safe to use from worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._unreadable = False  # said so: a save that cannot replace it reads it again
        #: Why the last save failed (None: kept), for the daemon's status and the doctor:
        #: the journal's one line is far up by the time anyone looks.
        self.failure: OSError | None = None

    def load(self) -> dict[str, Any]:
        """The values kept; {} for a file missing or not ours (said once while it stays so)."""
        try:
            data = json.loads(read_text(self.path, STATE_FILE_LIMIT, str(self.path)))
            if not isinstance(data, dict):  # `[0.5]`: no value of ours, said as damaged
                raise ValueError(f"not a JSON object but {json.dumps(data)[:40]}")
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError, RecursionError, ConfigError) as exc:  # not ours
            if not self._unreadable:
                self._unreadable = True
                # No save can rename over a directory (or whatever else is no file).
                anew = (
                    "the file is written anew at the next change"
                    if self.path.is_file() or not self.path.exists()
                    else f"nothing is kept until it is removed (sudo rm -r {self.path})"
                )
                log.warning(
                    "ignoring %s, %s (%s): the box starts at its configured volume, and %s",
                    self.path,
                    "unreadable" if isinstance(exc, OSError) else "damaged",  # or not ours
                    exc,
                    anew,
                )
            return {}
        self._unreadable = False
        return data

    def save(self, **values: Any) -> None:
        """Merge `values` into the file; the same values again write nothing (a tool the
        model calls as often as it likes must not wear out the SD card)."""
        with self._lock:
            kept = self.load()
            data = {**kept, **values}
            if data == kept:
                # The card holds what is meant (a volume set back to the kept one): nothing
                # is unkept, and ctl status and the doctor must stop saying so.
                self._kept_again()
                return
            tmp = self.path.with_suffix(".tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(_open_for_writing(tmp), "w", encoding="utf-8") as file:
                    file.write(json.dumps(data, indent=1) + "\n")
                    file.flush()
                    # On the card before the rename: a new file's data is written back
                    # later than the rename, and a power cut between left it empty.
                    os.fsync(file.fileno())
                tmp.replace(self.path)
            except OSError as exc:
                with contextlib.suppress(OSError):  # a card full mid-write: no half file left
                    tmp.unlink(missing_ok=True)
                if self.failure is None:
                    log.warning("cannot keep settings in %s: %s", self.path, exc)
                self.failure = exc
                return
            _sync_dir(self.path.parent)
            self._kept_again()

    def _kept_again(self) -> None:
        """The file holds the values meant: a failure before it is over (room made, the
        card repaired), and a new one is said again."""
        if self.failure is not None:
            log.info("settings kept in %s again", self.path)
            self.failure = None

    def problem(self) -> dict[str, str] | None:
        """Why the settings are not kept (`ctl status`, the doctor): the file, the error
        and its errno's name (ENOSPC, EROFS), which decides the fix; None while they are."""
        exc = self.failure
        if exc is None:
            return None
        return {
            "path": str(self.path),
            "error": exc.strerror or str(exc),
            "errno": errno.errorcode.get(exc.errno or 0, ""),
        }


def _sync_dir(path: Path) -> None:
    """Put a rename in `path` on the card: the directory is written back on the kernel's
    own time, and a power cut before it brought the old file back. The new file is in
    place either way, so a file system that cannot sync a directory is not an error."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _open_for_writing(tmp: Path) -> int:
    """The temporary file, emptied for the save. A link there is not followed (a link
    planted in the service's directory had root's `sudo live-appliance run` truncate the
    file it named); it, and one a save by hand cut short left (root's: the service may not
    open it, but may replace it in its own directory), give way to a file made anew. None
    there and refused: the directory is not the service's to write, the failure to tell."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(tmp, flags, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.ELOOP) or not os.path.lexists(tmp):
            raise
    tmp.unlink()
    return os.open(tmp, flags | os.O_EXCL, 0o666)
