"""The hardware-in-the-loop rig: the real daemon, the local Live server, loopback audio.

Tests, the demo and the benchmarks all need the same thing: a daemon process run
exactly as `live-appliance run` runs on a Pi, but pointed at the local server
over TLS, at the PulseAudio loopback and at gpiozero's mock pins, and driven
through its control socket. This module starts and stops that set-up and gives
the driver what it needs to observe: the daemon's log lines with their times,
its status, the server's message log, and the speaker recording.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.control_client import ControlError, request
from rig.loopback import PulseLoopback
from rig.server.server import LiveServer


@dataclass
class LogLine:
    """One line of the daemon's stderr: a journal record as JSON (the rig asks for them:
    LIVE_APPLIANCE_LOG_FORMAT=json), or a C library's own line."""

    t: float  # time.monotonic() when the line was read
    text: str

    @property
    def record(self) -> dict[str, Any]:
        """The journal fields (MESSAGE, PRIORITY, LOGGER, LIVE_*); a plain line is a MESSAGE."""
        try:
            record = json.loads(self.text)
        except ValueError:
            record = None
        return record if isinstance(record, dict) else {"MESSAGE": self.text}


@dataclass
class Daemon:
    """One `live-appliance run` child process and what it has logged."""

    proc: subprocess.Popen[str]
    socket: Path
    started: float
    lines: list[LogLine] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for text in self.proc.stderr:
            self.lines.append(LogLine(time.monotonic(), text.rstrip("\n")))

    def ctl(self, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
        return request(self.socket, cmd, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return self.ctl("status")

    def wait_until(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 20.0, what: str = ""
    ) -> dict[str, Any]:
        """Poll `status` until `check` holds; fail with the daemon's log if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status = self.status()
                if check(status):
                    return status
            except ControlError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}:\n{self.log()}")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 20.0, *, client: bool = True) -> float:
        """Wait until the daemon says it is ready (its devices open, its state machine
        running), as systemd's READY=1, and (`client`) its Live client is built, which
        READY does not wait for; returns the time it first was."""
        self.wait_until(
            lambda s: s["ready"] and (s["live_client"] or not client),
            timeout,
            "the daemon to be ready" + (" and its Live client built" if client else ""),
        )
        return time.monotonic()

    def states(self) -> list[str]:
        """The states the daemon went through, in order (its status keeps the newest)."""
        return [entry["state"] for entry in self.status()["states"]]

    def records(self, **fields: Any) -> list[dict[str, Any]]:
        """The journal records logged so far with these field values, e.g. LIVE_CAMERA="on"."""
        return [
            record
            for record in (line.record for line in list(self.lines))
            if all(record.get(name) == value for name, value in fields.items())
        ]

    def wait_for_records(
        self,
        count: int = 1,
        timeout: float = 10.0,
        match: Callable[[dict[str, Any]], bool] = lambda record: True,
        **fields: Any,
    ) -> list[dict[str, Any]]:
        """Wait until `count` journal records have these field values (and `match`); they
        come through the log's pipe, which may lag what `status` already shows by a moment."""
        deadline = time.monotonic() + timeout
        while len(found := [r for r in self.records(**fields) if match(r)]) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} records logged:\n{self.log()}")
            time.sleep(0.02)
        return found

    def log(self) -> str:
        """What it logged, as text: for people (a failing test's message, a soak's file),
        never to assert on."""
        return "\n".join(_readable(line) for line in list(self.lines))

    def open_connections(self, port: int) -> int:
        """TCP connections the daemon holds open to `port` (a leak test: at most one)."""
        pid = self.proc.pid
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        count = 0
        for table in ("tcp", "tcp6"):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                established = fields[3] == "01"
                if established and remote_port == port and fields[9] in inodes:
                    count += 1
        return count

    def terminate(self, timeout: float = 5.0) -> float:
        """SIGTERM; returns seconds until the process had exited."""
        if self.proc.poll() is not None:
            return 0.0
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon ignored SIGTERM for {timeout}s:\n{self.log()}") from None
        finally:
            if self._reader is not None:
                self._reader.join(2)
        return time.monotonic() - sent


def rig_settings(base_url: str, workdir: Path) -> dict[str, dict[str, Any]]:
    """The daemon's configuration on the rig: the local server, a private socket and state
    directory, RGB LEDs, no camera (tests that want frames ask for the synthetic one)."""
    return {
        "live": {"base_url": base_url, "connect_timeout_s": 5},
        "control": {"socket": str(workdir / "control.sock"), "mode": 0o600},
        "service": {"state_dir": str(workdir / "state")},
        "leds": {"kind": "rgb", "pins": [5, 6, 13]},
        "camera": {"enabled": False},
    }


def to_toml(settings: dict[str, dict[str, Any]]) -> str:
    """Enough TOML for a flat config: tables of strings, numbers, booleans and lists."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "\n".join(
        f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
        for name, table in settings.items()
    )


def start_daemon(
    workdir: Path,
    loopback: PulseLoopback,
    server: LiveServer,
    *,
    settings: dict[str, dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
    tap: Path | None = None,
) -> Daemon:
    """Run `python -m device run` against the rig, as systemd would run it on a Pi.

    `settings` override the rig's configuration key by key, e.g.
    `{"button": {"mode": "toggle"}}`; with `tap`, its echo canceller's every call is
    recorded there (`rig.echo_tap`).
    """
    socket = workdir / "control.sock"
    merged = rig_settings(server.base_url, workdir)
    for name, table in (settings or {}).items():
        merged.setdefault(name, {}).update(table)
    cfg = workdir / "config.toml"
    cfg.write_text(to_toml(merged))
    child_env = {
        **loopback.child_env(),
        "GEMINI_API_KEY": server.api_key,
        "SSL_CERT_FILE": str(server.ca_file),
        "GPIOZERO_PIN_FACTORY": "mock",
        "GPIOZERO_MOCK_PIN_CLASS": "mockpwmpin",  # PWM, so LEDs can fade
        "PYTHONUNBUFFERED": "1",
        "LIVE_APPLIANCE_LOG_FORMAT": "json",  # the journal's fields, without a journal
        **(env or {}),
    }
    child_env.pop("JOURNAL_STREAM", None)
    started = time.monotonic()
    program = ["device"] if tap is None else ["rig.echo_tap", str(tap)]
    proc = subprocess.Popen(
        [sys.executable, "-m", *program, "run", "--config", str(cfg)],
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon = Daemon(proc, socket, started)
    daemon._reader = threading.Thread(target=daemon._read, name="daemon-log", daemon=True)
    daemon._reader.start()
    return daemon


def scratch_dir(prefix: str = "appliance-rig-") -> Path:
    """A short private directory (UNIX socket paths are limited to 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def _readable(line: LogLine) -> str:
    record = line.record
    if "LOGGER" not in record:  # a C library's own line
        return line.text
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k.startswith("LIVE_"))
    text = f"{line.t:.3f} {record['LOGGER']}: {record['MESSAGE']}"
    return f"{text}  [{fields}]" if fields else text
