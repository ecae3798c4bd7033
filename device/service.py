"""The systemd notify protocol: READY, STATUS, WATCHDOG and STOPPING.

Spoken directly over `$NOTIFY_SOCKET` (one datagram per message) rather than
through libsystemd: it is a few lines, needs no import at start-up, and works
the same under a test's socket. Outside systemd every call is a no-op.

The watchdog is fed only when the appliance's state machine has handled a
heartbeat that travels the same queue as a button press, so a loop that stalls
(a blocking call, a deadlock) or a machine stuck on an action stops the pings,
and systemd restarts the service after `WatchdogSec`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

log = logging.getLogger(__name__)

#: STATUS= is the one line `systemctl status` shows. Built from a service's close
#: reason it could carry a newline (read as a notify field of its own) or a page.
STATUS_LIMIT = 200


class Notifier:
    """Sends sd_notify messages to the socket systemd gave this process, if any."""

    #: How long a message waits for room in systemd's socket; none while messages are
    #: being left out (PID 1 busy, a daemon-reload on a slow SD card).
    WAIT_S = 0.05

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._status: str | None = None
        self._stopped = False  # STOPPING=1 sent: its STATUS= is the last
        self._ready_due = False  # READY=1 was left out: the next message carries it
        self.lost = 0  # messages left out since the last that got through
        from device.logs import SaidOnce  # not at import: device.logs imports this module

        self._left_out = SaidOnce(log, counted="left out")

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        """One datagram with `KEY=value` lines, never blocking the caller for more than
        WAIT_S: a message systemd cannot take is left out, the first of a run logged
        once (and at most every minute, with a count: PID 1 too busy at one
        heartbeat in two was two lines a heartbeat), and the next that gets through
        carries the latest STATUS= again."""
        if self.address is None:
            return
        if self._ready_due and "READY=1" not in fields:
            fields = ("READY=1", *fields)  # left out before: systemd still waits for it
        if self.lost and self._status and not any(f.startswith("STATUS=") for f in fields):
            fields = (*fields, f"STATUS={self._status}")
        try:
            if self._sock is None:
                self._sock = connected_datagram(self.address)
            self._sock.settimeout(0.0 if self.lost else self.WAIT_S)
            self._sock.send("\n".join(fields).encode())
        except OSError as exc:
            if not isinstance(exc, (TimeoutError, BlockingIOError)):
                self.close()  # gone (systemd re-executed): connect again next time
            self.lost += 1
            self._left_out.hit("cannot notify systemd: %s", exc)
            self._ready_due = "READY=1" in fields
            return
        self._ready_due = False
        if self._left_out.ended():
            log.info("systemd takes notifications again (%d left out)", self.lost)
        self.lost = 0

    def ready(self, status: str) -> None:
        self._status = _one_line(status)
        self.send("READY=1", f"STATUS={self._status}")

    def status(self, text: str) -> None:
        """STATUS=, sent only when it changes (systemctl status shows the latest)."""
        text = _one_line(text)
        if text != self._status and not self._stopped:
            self._status = text
            self.send(f"STATUS={text}")

    def stopping(self, why: str = "stopping") -> None:
        """STOPPING=1 with `why` as the last STATUS=: systemd shows it until the next start,
        through a restart and a failed state, so nothing said after it may replace it (a
        stop signal during a stop for a failure neither)."""
        if self._stopped:
            return
        self._status = _one_line(why)
        self._stopped = True
        self.send("STOPPING=1", f"STATUS={self._status}")

    def stopped(self) -> None:
        """The STATUS= a stopped unit keeps: "stopped" after a plain "stopping" (one that
        says why it stopped stays)."""
        if self._status == "stopping":
            self._status = "stopped"
            self.send("STATUS=stopped")

    def watchdog(self) -> None:
        """WATCHDOG=1: the appliance answers (sent once the state machine has handled a
        heartbeat; a machine or a loop that is stuck stops sending it)."""
        if self.watchdog_s is not None:
            self.send("WATCHDOG=1")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def connected_datagram(address: str | bytes) -> socket.socket:
    """A unix datagram socket connected to one of systemd's: a wait for room in it is a
    poll() that sleeps until the reader reads (unconnected, the socket always polls
    writable, and a wait is sendto() after sendto() failing EAGAIN, a core kept busy)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _socket_address(value: str) -> str | bytes | None:
    """`/run/systemd/notify` as a path, `@name` as a Linux abstract address."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Seconds of WatchdogSec meant for this process, or None when there is no watchdog."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were forked or exec'd by it)
    return int(usec) / 1_000_000


def _one_line(text: str) -> str:
    """`text` without control characters, at most STATUS_LIMIT long."""
    line = "".join(c if c.isprintable() else " " for c in text)
    return line if len(line) <= STATUS_LIMIT else f"{line[: STATUS_LIMIT - 3]}..."
