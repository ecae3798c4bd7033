"""The whole soak: each mode in turn, on a daemon run as systemd runs it, until the budget ends.

One loopback and one local server for the run; per mode one daemon (a new one
only when the last exited by itself, as systemd would restart it, or got stuck
and had to be stopped). Each daemon's tasks, threads and descriptors are read
after its first episodes and again after a quiet settle at its end.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device.states import Mode
from rig.bench.harness import BenchDaemon, Harness
from rig.bench.proc import ProcessGone
from rig.loopback import PulseLoopback
from rig.server.server import ServerThread
from rig.soak import vitals
from rig.soak.person import DaemonGone, Limits, Person, Stuck
from rig.soak.plan import Episode, Fault, Planner
from rig.soak.tally import Tally
from rig.soak.wire import REPLY_S, Wire

#: The daemon's settings for the soak: its own timers short, so that what a fault
#: sets going ends in seconds (the service's clock is sped up by the server's
#: time_scale instead); hands-free barge-in needs the microphone open while it speaks.
SETTINGS: dict[str, dict[str, Any]] = {
    "live": {"keepalive_s": 1, "dead_after_s": 4, "reconnect_for_s": 15, "connect_timeout_s": 3},
    "conversation": {
        "idle_timeout_s": 3, "end_after_silence_s": 4, "silence_ms": 400,
        "reply_timeout_s": 6, "error_display_s": 1,
    },
    "audio": {"earcons": True, "mic_during_playback": "open"},
    "camera": {"enabled": True, "source": "synthetic"},
    "tools": {"enabled": ["get_time"]},
}
WATCHDOG_S = 30.0  # the unit's WatchdogSec: a longer silence and systemd restarts the box
WARM_EPISODES = 2  # the leak baseline is taken after this many
EXTRA_EPISODES = 3  # at most this many past the budget, to probe the last faults
LOG_TAIL = 40
#: The service's connections: ten minutes each, goAway a minute before the end.
CONNECTION_LIFETIME_S = 600.0
GO_AWAY_BEFORE_S = 60.0


@dataclass(frozen=True)
class Options:
    seed: int
    minutes: float | None  # wall-clock minutes for the whole run
    turns: int | None  # turns for the whole run
    time_scale: float  # the service's clock: this many service seconds per wall second
    modes: tuple[Mode, ...] = (Mode.PUSH_TO_TALK, Mode.TOGGLE)
    faults: frozenset[Fault] = frozenset(Fault)
    logs: Path | None = None  # where each daemon's log is written


@dataclass
class Life:
    """One daemon process: how it went, what it held, how it ended."""

    mode: Mode
    pid: int
    episodes: int = 0
    baseline: vitals.Vitals | None = None
    final: vitals.Vitals | None = None
    peak_rss_mb: float | None = None
    ended: str = ""  # "stopped" (by the soak, SIGTERM), "exited" (by itself), "stuck"
    exit_status: int | None = None
    stop_s: float | None = None
    watchdog_gap_s: float = 0.0  # the longest time without WATCHDOG=1
    rss_mb: list[float] = field(default_factory=list)  # after each episode, at rest
    log: str = ""

    def leaks(self) -> dict[str, int] | None:
        if self.baseline is None or self.final is None:
            return None
        return self.baseline.leaks(self.final)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode), "pid": self.pid, "episodes": self.episodes,
            "baseline": self.baseline and self.baseline.as_dict(),
            "final": self.final and self.final.as_dict(),
            "leaks": self.leaks(), "peak_rss_mb": self.peak_rss_mb, "ended": self.ended,
            "exit_status": self.exit_status, "stop_s": self.stop_s,
            "watchdog_gap_s": round(self.watchdog_gap_s, 1), "rss_mb": self.rss_mb,
            "log": self.log,
        }


@dataclass
class Result:
    options: Options
    tally: Tally
    lives: list[Life]
    wall_s: float
    connections: int
    go_aways: int  # all goAways on the wire, the soak's and the service's


def progress(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


def run(options: Options) -> Result:
    """The soak on a fresh loopback and local server."""
    tally, lives = Tally(), []
    started = time.monotonic()
    with (
        PulseLoopback() as loopback,
        ServerThread(
            reply_seconds=REPLY_S, time_scale=options.time_scale,
            connection_lifetime_s=CONNECTION_LIFETIME_S, go_away_before_s=GO_AWAY_BEFORE_S,
            session_limits=True,
        ) as server,
    ):
        harness = Harness(loopback, server)
        wire = Wire(harness)
        for n, mode in enumerate(options.modes, start=1):
            share = n / len(options.modes)
            deadline = started + options.minutes * 60 * share if options.minutes else None
            turns = round(options.turns * share) if options.turns else None
            phase = Phase(harness, wire, tally, mode, options)
            lives += phase.run(deadline, turns)
        connections = len(server.log.connections())
    return Result(options, tally, lives, time.monotonic() - started, connections, wire.go_aways)


class Phase:
    """One mode's share of the run."""

    def __init__(
        self, harness: Harness, wire: Wire, tally: Tally, mode: Mode, options: Options
    ) -> None:
        self.h, self.wire, self.tally, self.mode = harness, wire, tally, mode
        self.options = options
        self.settings = {name: dict(table) for name, table in SETTINGS.items()}
        self.settings["button"] = {"mode": str(mode)}
        self.limits = Limits.of(self.settings)
        self.lives: list[Life] = []

    def run(self, deadline: float | None, turns: int | None) -> list[Life]:
        plan = enumerate(Planner(self.options.seed, self.mode, self.options.faults), start=1)
        progress(f"{self.mode}: starting (seed {self.options.seed})")
        daemon, life = self._start()
        extra = 0
        try:
            for number, episode in plan:
                if self._spent(deadline, turns):
                    if not self.tally.pending or extra >= EXTRA_EPISODES:
                        break
                    extra += 1
                daemon, life = self._episode(daemon, life, number, episode)
            self._stop(daemon, life, settle=True)
        except BaseException:
            self._stop(daemon, life, settle=False)
            raise
        return self.lives

    def _spent(self, deadline: float | None, turns: int | None) -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            return True
        return turns is not None and len(self.tally.asked) >= turns

    def _episode(
        self, daemon: BenchDaemon, life: Life, number: int, episode: Episode
    ) -> tuple[BenchDaemon, Life]:
        """One episode; a new daemon if this one exited or got stuck in it."""
        try:
            self._person(daemon).episode(number, episode)
        except Stuck as stuck:
            self._stuck(daemon, number, episode, stuck)
            self._stop(daemon, life, settle=False, ended="stuck")
            return self._start()
        except (DaemonGone, ProcessGone) as gone:
            progress(f"{self.mode}: episode {number}: {gone}")
            self._stop(daemon, life, settle=False, ended="exited")
            return self._start()
        life.episodes += 1
        try:
            life.rss_mb.append(round(vitals.read(daemon.daemon).rss_mb, 1))
            if life.baseline is None and life.episodes >= WARM_EPISODES:
                life.baseline = vitals.settled(daemon.daemon)
        except ProcessGone:
            pass  # found out at the next episode's first look
        if number % 10 == 0:
            t = self.tally.turns(self.mode)
            progress(f"{self.mode}: episode {number}, {t['answered']}/{t['asked']} answered")
        return daemon, life

    def _stuck(self, daemon: BenchDaemon, number: int, episode: Episode, stuck: Stuck) -> None:
        status = stuck.status or {}
        record = {
            "mode": str(self.mode), "seed": self.options.seed, "episode": number,
            "what": stuck.what, "status": status.get("status"),
            "timers": status.get("timers"), "states": status.get("states", [])[-12:],
            "plan": [asdict(t) for t in episode.turns],
            "log_tail": daemon.daemon.log().splitlines()[-LOG_TAIL:],
        }
        progress(f"{self.mode}: episode {number}: STUCK: {stuck.what}")
        self.tally.got_stuck(record)

    def _person(self, daemon: BenchDaemon) -> Person:
        return Person(self.h.loopback, self.wire, daemon.daemon, self.mode, self.limits, self.tally)

    def _start(self) -> tuple[BenchDaemon, Life]:
        daemon = self.h.start(self.settings)
        life = Life(self.mode, daemon.pid)
        self.lives.append(life)
        return daemon, life

    def _stop(
        self, daemon: BenchDaemon, life: Life, settle: bool, ended: str = "stopped"
    ) -> None:
        """End one daemon: at the end of the phase after a quiet settle, or after trouble."""
        proc = daemon.daemon.proc
        try:
            if settle and proc.poll() is None:
                self._person(daemon).rest()
                life.final = vitals.settled(daemon.daemon)
            if proc.poll() is None:
                life.peak_rss_mb = vitals.peak_rss_mb(daemon.pid)
        except (Stuck, DaemonGone, ProcessGone) as exc:
            progress(f"{self.mode}: at the end: {exc}")
        exited = proc.poll() is not None
        life.ended = "exited" if exited else ended
        life.watchdog_gap_s = _watchdog_gap(daemon)
        try:
            life.stop_s = None if exited else round(daemon.daemon.terminate(), 2)
        except AssertionError:
            life.stop_s = None  # it ignored SIGTERM and was killed: its status says so
        finally:
            life.exit_status = proc.returncode
            life.log = self._keep_log(daemon, life)
            daemon.stop()

    def _keep_log(self, daemon: BenchDaemon, life: Life) -> str:
        if self.options.logs is None:
            return ""
        self.options.logs.mkdir(parents=True, exist_ok=True)
        path = self.options.logs / f"soak-{self.mode}-{life.pid}.log"
        path.write_text(daemon.daemon.log() + "\n")
        return str(path)


def _watchdog_gap(daemon: BenchDaemon) -> float:
    """The longest the daemon went without telling systemd WATCHDOG=1 (from READY on, and
    up to now while it still runs)."""
    times = [*daemon.notify.times("READY")[:1], *daemon.notify.times("WATCHDOG")]
    if daemon.daemon.proc.poll() is None:
        times.append(time.monotonic())
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
