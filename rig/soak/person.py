"""The person at the box: asks, talks over replies, falls silent; the server's faults on cue.

Everything reaches the daemon as it would on a Pi: presses and releases through
its control socket, speech through the loopback microphone, the reply heard at
the loopback speaker. Every wait has a bound taken from the daemon's own timers
(`Limits`): a state that outlives it did not end by itself, and is stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.audio import pcm
from device.control_client import ControlError, request
from device.live.wire import MIC_RATE, REPLY_RATE
from device.states import Mode
from rig.bench.markers import marker
from rig.daemon import Daemon
from rig.loopback import PulseLoopback, Recorder
from rig.soak.plan import Ask, Episode, Fault, Moment, Turn
from rig.soak.tally import Asked, Tally
from rig.soak.wire import LONG_REPLY_S, REPLY_S, Wire, reply_pitch

POLL_S = 0.1
RELEASE_AFTER_S = 0.15  # the speech's tail through the loopback before the release
FRAME_S = 0.02
HEARD_S = 0.3  # this much of a reply's tone at the speaker: the reply was heard
PITCH_HZ = 30.0
LOUD_DBFS = -30.0
SPEECH_LEVEL = 0.3
MARGIN_S = 15.0  # on top of the daemon's own timers: a loaded machine is slow


class Stuck(Exception):
    """The box did not come back by itself: a state that did not end, or no answer at all."""

    def __init__(self, what: str, status: dict[str, Any] | None) -> None:
        super().__init__(what)
        self.what = what
        self.status = status


class DaemonGone(Exception):
    """The daemon's process ended."""

    def __init__(self, returncode: int) -> None:
        super().__init__(f"the daemon exited with status {returncode}")
        self.returncode = returncode


@dataclass(frozen=True)
class Limits:
    """How long the box may take to come back by itself, from its own settings."""

    rest_s: float  # from the last word (or the end of a fault) to rest, at worst
    answer_s: float  # for the control socket to answer at all

    @classmethod
    def of(cls, settings: dict[str, dict[str, Any]]) -> Limits:
        """The longest chain of timers that can run before rest: a link that goes dead,
        reconnects until it gives up, shows the error, then the reply, idle and silence
        timers, one after the other."""
        live, talk = settings["live"], settings["conversation"]
        chain = (
            live["dead_after_s"] + live["reconnect_for_s"] + live["connect_timeout_s"]
            + talk["error_display_s"] + talk["reply_timeout_s"]
            + max(talk["idle_timeout_s"], talk["end_after_silence_s"])
        )
        return cls(rest_s=chain + MARGIN_S, answer_s=MARGIN_S)


def speech(seconds: float) -> bytes:
    """Band-limited noise at a talking level: the server's VAD and the daemon hear speech."""
    return pcm.from_float(marker(seconds, MIC_RATE, level=SPEECH_LEVEL))


class Person:
    """Drives one daemon through episodes, adding what happened to the tally."""

    def __init__(
        self, loopback: PulseLoopback, wire: Wire, daemon: Daemon, mode: Mode,
        limits: Limits, tally: Tally,
    ) -> None:
        self.loopback = loopback
        self.wire = wire
        self.d = daemon
        self.mode = mode
        self.limits = limits
        self.tally = tally
        self.episode_number = 0  # the plan's numbering, for the tally and the report

    # -- the daemon, read through its control socket ----------------------------------------

    def status(self) -> dict[str, Any]:
        """`ctl status`; Stuck if the daemon stops answering, DaemonGone if it exited."""
        deadline = time.monotonic() + self.limits.answer_s
        while True:
            self._alive()
            try:
                return self.d.status()
            except ControlError as exc:
                if time.monotonic() > deadline:
                    raise Stuck(f"no answer on the control socket: {exc}", None) from exc
            time.sleep(POLL_S)

    def ctl(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self._alive()
        try:
            return request(self.d.socket, cmd, timeout=self.limits.answer_s, **fields)
        except ControlError as exc:
            self._alive()
            raise Stuck(f"no answer to `ctl {cmd}`: {exc}", None) from exc

    def _alive(self) -> None:
        code = self.d.proc.poll()
        if code is not None:
            raise DaemonGone(code)

    def wait(
        self, check: Callable[[dict[str, Any]], bool], within: float, what: str
    ) -> dict[str, Any]:
        """Poll the status until `check` holds; Stuck (with the last status) if it never does."""
        deadline = time.monotonic() + within
        while True:
            status = self.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise Stuck(f"{what}: still {status['status']} after {within:.0f} s", status)
            time.sleep(POLL_S)

    def rest(self) -> dict[str, Any]:
        """Nobody talks: the box must come to rest by itself. Idle, no session, the camera
        off, and nothing open at the server (the microphone streams nowhere)."""
        return self.wait(
            lambda s: s["state"] == "idle" and not s["session_open"] and not s["camera"]
            and self.wire.quiet(),
            self.limits.rest_s, "coming to rest with nobody talking",
        )

    # -- episodes and turns --------------------------------------------------------------------

    def episode(self, number: int, episode: Episode) -> None:
        """The turns, then silence until the box is at rest by itself."""
        self.episode_number = number
        for turn in episode.turns:
            self.turn(turn)
        if episode.hang_up and self.status()["session_open"]:
            self.ctl("press")  # hands-free: a press ends the conversation
        self.rest()

    def turn(self, turn: Turn) -> None:
        self.wire.forget()
        if turn.moment is Moment.BEFORE:
            self._ready()
            time.sleep(turn.gap_s / 2)
            self._strike(turn)
            time.sleep(turn.gap_s / 2)
        else:
            time.sleep(turn.gap_s)  # a long pause may end the session: _ready opens a new one
        self._ready()
        self._prepare(turn)
        recorder = self.loopback.record(REPLY_RATE)
        try:
            recorder.wait_started()
            self._ask(turn, recorder)
        finally:
            recorder.stop()
            self.wire.calm()

    def _ready(self) -> None:
        """Wait until a turn can begin: idle in push-to-talk; hands-free, a conversation open
        and listening (a press opens one when none is)."""
        if self.mode is Mode.PUSH_TO_TALK:
            self.wait(lambda s: s["state"] == "idle", self.limits.rest_s, "idle before a turn")
            return
        status = self.wait(
            lambda s: s["state"] in ("idle", "listening"), self.limits.rest_s,
            "idle or listening before a turn",
        )
        if status["state"] == "listening" and status["session_open"]:
            return
        pressed = time.monotonic()
        self.ctl("press")
        self.wait(
            lambda s: s["state"] == "listening"
            or any(e["t"] >= pressed and e["state"] == "error" for e in s["states"]),
            self.limits.rest_s, "a conversation to open",
        )

    def _prepare(self, turn: Turn) -> None:
        """Tell the server what this turn gets: a tool call, no reply, a flood, a long reply."""
        if turn.ask is Ask.TOOL:
            self.wire.queue_tool_call()
        if turn.fault is Fault.SILENCE:
            self.wire.set(unanswered_turns=1)
        elif turn.fault is Fault.FLOOD:
            self.wire.set(pace=0.0, reply_seconds=turn.amount_s)
        elif turn.fault is Fault.UNANSWERED_INTERRUPTION:
            self.wire.set(reply_seconds=LONG_REPLY_S)

    def _ask(self, turn: Turn, recorder: Recorder) -> None:
        asked = Asked(
            self.mode, self.episode_number, str(turn.ask), turn.fault,
            silence_expected=turn.fault is Fault.SILENCE,
        )
        began = time.monotonic()
        ended = self._say(turn, asked)
        if asked.note:  # refused: nothing to wait for
            self._finish(asked, recorder, ended, until=None, began=began)
            return
        reply = self._reply_after(began, ended)
        long_reply = turn.fault in (Fault.FLOOD, Fault.UNANSWERED_INTERRUPTION)
        if long_reply and reply is not None:
            self.wire.set(reply_seconds=REPLY_S)  # the long reply is on its way; no more
        talk_over = long_reply and turn.cut
        if turn.fault is Fault.SILENCE:
            self.tally.fault(self.mode, self.episode_number, turn.fault, struck=True)
        elif turn.fault in (Fault.FLOOD, Fault.UNANSWERED_INTERRUPTION):
            # Struck once the long reply is on its way (a fault before it can cut it off).
            self.tally.fault(self.mode, self.episode_number, turn.fault, reply is not None)
        if turn.moment is Moment.REPLY:
            time.sleep(turn.at_s)
            self._strike(turn)
        if talk_over and reply is not None:
            time.sleep(turn.at_s)
            cut_at = time.monotonic()
            self._finish(asked, recorder, ended, until=cut_at, began=began)
            self._talk_over(turn, recorder)
            return
        self._turn_over(began, ended)
        self._finish(asked, recorder, ended, until=None, began=began)

    def _say(self, turn: Turn, asked: Asked) -> float:
        """Ask: speak (with a press in push-to-talk) or `ctl text`; returns when it ended."""
        if turn.ask is Ask.TEXT:
            answer = self.ctl("text", text=f"soak turn in episode {self.episode_number}")
            if not answer.get("ok"):
                asked.note = f"ctl text refused: {answer.get('error')}"
            return time.monotonic()
        ptt = self.mode is Mode.PUSH_TO_TALK
        if ptt:
            self.ctl("press")
        player = self.loopback.play(speech(turn.speech_s), MIC_RATE)
        try:
            if turn.moment is Moment.SPEECH:
                time.sleep(turn.speech_s * turn.at_s * 2)  # somewhere inside the speech
                self._strike(turn)
            player.wait()
        finally:
            player.stop()
        if ptt:
            time.sleep(RELEASE_AFTER_S)
            self.ctl("release")
        return time.monotonic()

    def _talk_over(self, turn: Turn, recorder: Recorder) -> None:
        """Speak over the reply (a press first in push-to-talk), as its own turn."""
        assert turn.fault is not None
        unanswered = turn.fault is Fault.UNANSWERED_INTERRUPTION
        if unanswered:
            self.wire.set(unanswered_turns=1)
        over = Asked(
            self.mode, self.episode_number, "talk-over", turn.fault, silence_expected=unanswered
        )
        began = time.monotonic()
        ended = self._say(Turn(Ask.SPEECH, turn.speech_s, 0.0), over)
        self._turn_over(began, ended)
        if turn.fault is Fault.FLOOD:
            self.wire.set(pace=1.0)  # the flood is over; the talk-over's reply is paced
        self._finish(over, recorder, ended, until=None, began=began)

    def _strike(self, turn: Turn) -> None:
        assert turn.fault is not None
        self.tally.fault(self.mode, self.episode_number, turn.fault, self.wire.strike(turn))

    def _reply_after(self, began: float, ended: float) -> float | None:
        """Wait for the first reply audio the server sends after `ended`; when it was sent."""
        deadline = time.monotonic() + self.limits.rest_s
        while time.monotonic() < deadline:
            self._alive()
            entry = self.wire.first("audio", "out", ended)
            if entry is not None:
                return entry.t
            if self._turn_is_over(self.status(), began, ended):
                return None  # over without a reply (let pass, cut, or lost)
            time.sleep(POLL_S)
        return None

    def _turn_over(self, began: float, ended: float) -> None:
        """Wait until the turn asked from `began` to `ended` is over and the box waits again."""
        self.wait(
            lambda s: self._turn_is_over(s, began, ended), self.limits.rest_s,
            "the turn to end by itself",
        )

    def _turn_is_over(self, s: dict[str, Any], began: float, ended: float) -> bool:
        if self.mode is Mode.PUSH_TO_TALK:
            # The press (or text) left idle; back in idle, whatever happened meanwhile.
            return s["state"] == "idle" and any(e["t"] >= began for e in s["states"])
        # Hands-free: listening again after a reply, or the conversation has ended.
        if s["state"] == "idle":
            return True
        after = [e["state"] for e in s["states"] if e["t"] >= ended]
        return s["state"] == "listening" and "speaking" in after

    def _finish(
        self, asked: Asked, recorder: Recorder, ended: float, until: float | None, began: float
    ) -> None:
        """Was the reply to it heard at the speaker? Count the turn."""
        asked.answered = self._heard(recorder, ended, until)
        asked.events = self.wire.events(began)
        self.tally.add(asked)

    def _heard(self, recorder: Recorder, ended: float, until: float | None) -> bool:
        """The first reply the server sent after `ended` reached the speaker: its tone,
        for HEARD_S, in the recording (until `until`, when something cut it there)."""
        reply = self.wire.first("audio", "out", ended)
        if reply is None or (until is not None and reply.t >= until):
            return False
        samples, times = recorder.timeline()
        keep = (times >= reply.t) & (times < (until if until is not None else np.inf))
        played = pcm.from_float(samples[keep])
        pitch, size = reply_pitch(reply), round(REPLY_RATE * FRAME_S) * 2
        frames = (played[i : i + size] for i in range(0, len(played) - size + 1, size))
        tone = sum(
            1 for f in frames
            if pcm.rms_dbfs(f) > LOUD_DBFS
            and abs(pcm.dominant_frequency(f, REPLY_RATE) - pitch) < PITCH_HZ
        )
        return tone * FRAME_S >= min(HEARD_S, REPLY_S / 2)
