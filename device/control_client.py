"""The control socket's client: one request, one answer, with the standard library's
socket alone, so that `live-appliance ctl` answers at once over SSH (the server side,
device.control, needs asyncio, and with it ssl: a tenth of a second on a Pi Zero)."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import socket
import time
import unicodedata
from pathlib import Path
from typing import Any

#: A request line longer than this is refused (its newline apart): commands are a few bytes.
LINE_LIMIT = 64 * 1024
#: An answer line (its newline included) longer than this is not the daemon's (its status
#: is a few KiB): it is refused.
REPLY_LIMIT = 1024 * 1024
#: How soon a request turned away for a full queue, or all places taken, is tried again.
TRY_AGAIN_S = 0.05
#: What to do about a daemon that takes no request (its event loop stuck), however the
#: socket shows it: the connection queued and not answered, or the queue full.
HUNG = "(hung: the watchdog restarts it within 30 s, or sudo systemctl restart live-appliance)"


#: Unicode categories with nothing to see or say: controls, format characters (a zero
#: width space), surrogates, separators. Not "unassigned": an emoji newer than Python's
#: tables is one.
INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def unsayable(text: str) -> str | None:
    """Why `text` has no words to send as a text turn (`ctl text`, `ask`), or None. Bytes
    that are not UTF-8 (a Latin-1 file's `$(cat ...)`) come as unpaired surrogates, no
    words to the model; nothing visible (empty, spaces, a NUL) would still wake the box
    and have the model answer nothing in particular, aloud."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])  # a byte as Python decodes it, or half of a pair alone
        where = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        return f"not UTF-8 text ({where})"
    if not any(unicodedata.category(c) not in INVISIBLE for c in text):
        return "no words in it (empty, or only spaces and control characters)"
    return None


class ControlError(Exception):
    """The control socket could not be used; the message says why and where."""


class NotRunning(ControlError):
    """Nothing serves the control socket: the daemon is not running."""


class Barred(ControlError):
    """This user may not use the control socket: whether a daemon serves it is not known."""


def request(
    path: str | os.PathLike[str], cmd: str, timeout: float = 5.0, **fields: Any
) -> dict[str, Any]:
    """Send one command to the daemon and return its reply; ControlError if that fails.

    A line past LINE_LIMIT is refused here: the daemon refuses it too, but past the
    socket's buffer it has closed before the client finished writing, and all the owner
    read was "Broken pipe"."""
    # UTF-8 as it is: as \uXXXX escapes a Japanese text took six bytes a character, and
    # one of 40 KiB was refused as over 64. A lone surrogate (no UTF-8) is escaped alone,
    # as JSON writes it, and the daemon says why it is no text.
    sent = json.dumps({"cmd": cmd, **fields}, ensure_ascii=False).encode(errors="backslashreplace")
    if len(sent) > LINE_LIMIT:  # the daemon's bound, its newline apart
        raise ControlError(
            f"the request is {-(-len(sent) // 1024)} KiB, over the {LINE_LIMIT // 1024} KiB "
            "the daemon takes; send less"
        )
    deadline = time.monotonic() + timeout
    while True:
        reply = _exchange(path, sent, timeout, deadline)
        # Turned away before its request was read (the daemon's places for clients all
        # taken, by hooks or a flood): it never ran, and a place comes free in a moment.
        if not reply.get("full") or time.monotonic() + TRY_AGAIN_S >= deadline:
            return reply
        time.sleep(TRY_AGAIN_S)


def _exchange(
    path: str | os.PathLike[str], sent: bytes, timeout: float, deadline: float
) -> dict[str, Any]:
    """One connection: `sent` out, the answer's line back as a JSON object."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            _connect(sock, path, deadline)
            # Turned away before its request was read ("busy"): the line it was sent says why.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(sent + b"\n")
            line = _read_line(sock, deadline)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(
                f"the live-appliance daemon is not running (nothing listens at {path}); "
                "just started, it listens within a second or two, else `systemctl status "
                "live-appliance` says why it is down (crashed, or given up on for a while)"
            ) from exc
        except PermissionError as exc:
            raise Barred(f"permission denied on {path}: {_who_may(path)}") from exc
        except TimeoutError as exc:
            raise ControlError(
                f"no answer from the daemon at {path} within {timeout:g} s {HUNG}"
            ) from exc
        except BlockingIOError as exc:  # its queue is full of connections it never took
            raise ControlError(
                f"the daemon at {path} is not answering: earlier requests still wait for it {HUNG}"
            ) from exc
        except ConnectionError as exc:
            raise ControlError(f"the daemon at {path} dropped the connection: {exc}") from exc
        except OSError as exc:  # a path too long for a socket, a file in its way
            raise ControlError(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from exc
    if not line:
        raise ControlError(f"the daemon at {path} closed the connection without answering")
    if len(line) > REPLY_LIMIT:
        raise ControlError(
            f"the daemon at {path} answered with a line over {REPLY_LIMIT // 1024} KiB; "
            "not reading on"
        )
    try:
        reply = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ControlError(f"the daemon at {path} answered with bad JSON: {exc}") from exc
    if not isinstance(reply, dict):
        raise ControlError(f"the daemon at {path} answered with {reply!r}, not an object")
    return reply


def _who_may(path: str | os.PathLike[str]) -> str:
    """Who may use the socket at `path`, by its group's name: that of the socket, or of the
    nearest directory above it this user may look at (one outside the group may not look
    into /run/live-appliance, and "its group" left them to guess which)."""
    for place in (os.fspath(path), *(os.fspath(p) for p in Path(path).parents)):
        try:
            gid = os.stat(place).st_gid
        except OSError:
            continue
        if gid == 0:  # a copy run by hand with sudo, in a directory it made
            return "only root may use it: run it with sudo"
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            break  # a number, no name to join
        return (
            f"only root and group {group} may use it: run it with sudo, or join the group "
            f"(sudo usermod -a -G {group} $USER, then log in again)"
        )
    return "run as a member of its group, or with sudo"


def _connect(sock: socket.socket, path: str | os.PathLike[str], deadline: float) -> None:
    """Connect by `deadline`, trying again while the daemon's queue of connections is full
    (BlockingIOError): a burst of clients fills it for a moment, a hung daemon for good."""
    while True:
        try:
            sock.connect(os.fspath(path))
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(TRY_AGAIN_S, left))


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    """The answer's line, by `deadline` (TimeoutError), cut just past REPLY_LIMIT: the
    socket's timeout alone starts again at each byte, and a line that never ends filled
    the memory of the box."""
    received = bytearray()
    while len(received) <= REPLY_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(64 * 1024)
        received += chunk
        if not chunk or b"\n" in chunk:
            break
    end = received.find(b"\n")
    return bytes(received if end < 0 else received[: end + 1])
