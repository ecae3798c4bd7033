"""A stand-in for systemd's notify socket: when did the daemon say READY=1?"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path


class NotifyListener:
    """An AF_UNIX datagram socket that keeps the arrival time of each READY=1."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-notify-"))
        self.path = self.dir / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self._ready = threading.Event()
        self.ready_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-notify", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            if "READY=1" in data.decode(errors="replace").splitlines() and not self._ready.is_set():
                self.ready_at = time.monotonic()
                self._ready.set()

    def wait_ready(self, timeout: float) -> float:
        """The time READY=1 arrived; TimeoutError if it does not within `timeout`."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"no READY=1 on {self.path} within {timeout:.0f} s")
        assert self.ready_at is not None
        return self.ready_at

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()
