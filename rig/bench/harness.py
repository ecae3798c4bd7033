"""The benchmark's rig: one loopback, one local server, daemons started as systemd would,
and the reference client (`rig.bench.reference`) started beside them on the same two.

Every daemon runs `python -m device run` through `rig.daemon`, with a notify
socket, the unit's watchdog interval and the unit's own environment (read from
systemd/live-appliance.service by `rig.unit`), so it pays for what it pays for on
a Pi. Waits go through the server's log (no polling of the
daemon, whose CPU is being measured) and fail with the daemon's log if it dies.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rig import unit
from rig.bench.proc import memory_mb
from rig.daemon import Daemon, scratch_dir, start_daemon
from rig.loopback import PulseLoopback
from rig.notify import NotifySocket
from rig.server.log import Entry
from rig.server.server import ServerThread

#: The unit's WatchdogSec=30s: systemd hands the daemon WATCHDOG_USEC and it pings at half.
WATCHDOG_USEC = "30000000"
READY_TIMEOUT_S = 30.0
#: Settings every benchmark daemon shares: no earcons (the speaker must carry only
#: the reply, so its onset and end can be timed) and a session that closes 1 s
#: after a turn, so each press can open a fresh one.
BASE_SETTINGS: dict[str, dict[str, Any]] = {
    "audio": {"earcons": False},
    "conversation": {"idle_timeout_s": 1},
}


class BenchError(RuntimeError):
    """A measurement could not be made; the message says which and why."""


class Subject(Protocol):
    """A client the benchmark measures: the daemon, or the reference client."""

    @property
    def proc(self) -> subprocess.Popen[Any]: ...

    def log(self) -> str: ...


def progress(message: str) -> None:
    """One line on stderr, so a long run shows where it is."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass
class BenchDaemon:
    """A running daemon, its notify socket, the time from its start to READY and to its
    Live client built, and how long of the first it waited for the microphone's first
    audio (from its status)."""

    daemon: Daemon
    notify: NotifySocket
    workdir: Path
    ready_s: float
    client_s: float
    microphone_wait_ms: float | None

    @property
    def proc(self) -> subprocess.Popen[str]:
        return self.daemon.proc

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    def log(self) -> str:
        return self.daemon.log()

    def press(self) -> float:
        """Press the button through the control socket; returns the time just before."""
        return self._ctl("press")

    def release(self) -> float:
        return self._ctl("release")

    def _ctl(self, cmd: str) -> float:
        t = time.monotonic()
        reply = self.daemon.ctl(cmd)
        if not reply.get("ok"):
            raise BenchError(f"ctl {cmd} refused: {reply}")
        return t

    def peak_rss_mb(self) -> float:
        return memory_mb(self.pid)["peak"]

    def speaker_run_outs(self) -> tuple[int, int]:
        """Times PortAudio told the daemon's speaker it ran out of audio so far: while audio
        waited (the speaker's own underflows), and while the reply's next audio was late."""
        status = self.daemon.status()
        return int(status["speaker_underflows"]), int(status["speaker_starved"])

    @property
    def output_latency_ms(self) -> float | None:
        """The speaker's output latency as PortAudio reported it to the daemon."""
        return self.daemon.status().get("output_latency_ms")

    def stop(self) -> None:
        try:
            self.daemon.terminate()
        finally:
            self.notify.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class ReferenceClient:
    """The reference client (`rig.bench.reference`) in its own process, its stderr in a file."""

    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return (self.workdir / "stderr").read_text(errors="replace")

    def peak_rss_mb(self) -> float:
        return memory_mb(self.pid)["peak"]

    def stop(self) -> None:
        """SIGTERM (it has no shutdown of its own: the default action ends it)."""
        try:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Harness:
    """The loopback and the server the benchmark shares across its phases."""

    def __init__(self, loopback: PulseLoopback, server: ServerThread) -> None:
        self.loopback = loopback
        self.server = server

    def start(
        self, settings: dict[str, dict[str, Any]] | None = None, tap: Path | None = None
    ) -> BenchDaemon:
        """Start a daemon and wait for READY=1 on its notify socket; `tap`: record its echo
        canceller there (`rig.echo_tap`)."""
        merged = {name: dict(table) for name, table in BASE_SETTINGS.items()}
        for name, table in (settings or {}).items():
            merged.setdefault(name, {}).update(table)
        workdir = scratch_dir("bench-")
        notify = NotifySocket()
        assert self.server.server is not None
        daemon = start_daemon(
            workdir,
            self.loopback,
            self.server.server,
            settings=merged,
            env={
                **unit.environment(),
                "NOTIFY_SOCKET": str(notify.path),
                "WATCHDOG_USEC": WATCHDOG_USEC,
            },
            tap=tap,
        )
        try:
            ready = self._ready(daemon, notify)
            microphone_wait_ms = daemon.status()["microphone_wait_ms"]
            # READY does not wait for the SDK's import; the figures after it must not
            # count that import's CPU or a first press waiting for it.
            daemon.wait_until(lambda s: s["live_client"], READY_TIMEOUT_S, "the Live client")
            client = time.monotonic()
        except BaseException:
            daemon.terminate()
            notify.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return BenchDaemon(
            daemon, notify, workdir, ready - daemon.started, client - daemon.started,
            microphone_wait_ms,
        )

    def _ready(self, daemon: Daemon, notify: NotifySocket) -> float:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if daemon.proc.poll() is not None:
                raise BenchError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log()}")
            try:
                return notify.wait_for("READY", 0.2)
            except TimeoutError:
                continue
        raise BenchError(f"no READY=1 within {READY_TIMEOUT_S:.0f} s:\n{daemon.log()}")

    def start_reference(self) -> ReferenceClient:
        """Start the reference client and wait for its session to be set up."""
        assert self.server.server is not None
        workdir = scratch_dir("bench-ref-")
        count = self.connection_count()
        with open(workdir / "stderr", "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rig.bench.reference"],
                env={**self.loopback.child_env(), **self.server.server.client_env()},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        client = ReferenceClient(proc, workdir)
        try:
            self.wait(
                lambda: any(
                    e.kind == "setup_complete" and e.conn > count
                    for e in self.entries(direction="out")
                ),
                READY_TIMEOUT_S,
                "the reference client's session",
                client,
            )
        except BaseException:
            client.stop()
            raise
        return client

    # -- the server ----------------------------------------------------------------

    def configure(self, **knobs: Any) -> None:
        """Change the server's behaviour (setup delay, reply length, ...) on its loop."""
        sim = self.server.server
        assert sim is not None

        def apply() -> None:
            for name, value in knobs.items():
                setattr(sim.config, name, value)

        self.server.call(apply)

    def entries(self, conn: int | None = None, direction: str | None = None) -> list[Entry]:
        return self.server.log.entries(conn, direction)

    def connection_count(self) -> int:
        return len(self.server.log.connections())

    def no_session(self) -> bool:
        return all(c.closed is not None for c in self.server.log.connections())

    def wait(
        self, check: Callable[[], bool], timeout: float, what: str, subject: Subject
    ) -> None:
        """Wait for a condition on the server's log; BenchError if the client dies or it
        never holds."""
        deadline = time.monotonic() + timeout
        while True:
            if subject.proc.poll() is not None:
                raise BenchError(
                    f"client exited with {subject.proc.returncode} waiting for {what}:\n"
                    f"{subject.log()}"
                )
            try:
                self.server.wait_for(check, min(0.5, max(0.0, deadline - time.monotonic())))
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    tail = "\n".join(subject.log().splitlines()[-20:])
                    raise BenchError(
                        f"timed out after {timeout:.0f} s waiting for {what}:\n{tail}"
                    ) from None

    def first(
        self, kind: str, direction: str, after: float, conn: int | None = None
    ) -> Entry | None:
        """The first logged message of `kind` going `direction` at or after `after`."""
        return next(
            (e for e in self.entries(conn, direction) if e.kind == kind and e.t >= after), None
        )
