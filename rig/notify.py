"""A stand-in for systemd's notify socket: what the daemon told systemd, and when.

An AF_UNIX datagram socket whose path goes to the daemon as `NOTIFY_SOCKET`; a
thread keeps every message with its arrival time (time.monotonic(), comparable
with the server's log and the loopback's recordings). Tests and the benchmark
read READY, STATUS, WATCHDOG and STOPPING from it.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path


class NotifySocket:
    """Records (time, {KEY: value}) for every datagram until close()."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="notify-"))
        self.path = self.dir / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            lines = data.decode(errors="replace").splitlines()
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            with self._arrived:
                self.messages.append((time.monotonic(), fields))
                self._arrived.notify_all()

    def times(self, key: str) -> list[float]:
        """When each message carrying `key` arrived."""
        with self._arrived:
            return [t for t, fields in self.messages if key in fields]

    def statuses(self) -> list[str]:
        """Every STATUS= text, in order."""
        with self._arrived:
            return [fields["STATUS"] for _, fields in self.messages if "STATUS" in fields]

    def wait_for(self, key: str, timeout: float = 10.0) -> float:
        """When the first message with `key` arrived; TimeoutError if none does in time."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not (found := [t for t, fields in self.messages if key in fields]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {key} on {self.path} within {timeout:g} s")
                self._arrived.wait(left)
        return found[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
