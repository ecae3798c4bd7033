"""Turns at the button, timed from outside the daemon.

Every time comes from CLOCK_MONOTONIC, which all processes share: the press and
the release are taken just before the control request, the wire times from the
server's log, the sound times from recordings of the loopback devices.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from device.audio import pcm
from device.live.wire import MIC_RATE, REPLY_RATE
from rig.bench.harness import BenchDaemon, BenchError, Harness, progress
from rig.bench.markers import WINDOW_MS, locate, marker, missing_ms
from rig.bench.proc import memory_mb
from rig.loopback import Recorder

HOLD_S = 0.3  # how long each timed turn holds the button
SOUND_DBFS = -40.0  # louder than this at the speaker counts as sound
TURN_TIMEOUT_S = 20.0


@dataclass
class ColdTurns:
    """Per turn, in ms unless said: presses on an idle box with no session open."""

    press_to_setup: list[float] = field(default_factory=list)
    press_to_first_bytes: list[float] = field(default_factory=list)
    setup_to_first_bytes: list[float] = field(default_factory=list)
    release_to_activity_end: list[float] = field(default_factory=list)
    reply_to_sound: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)  # after each turn


@dataclass
class SpeechLoss:
    """Per turn: ms of the marker lost, where its onset fell, which 10 ms windows were
    lost by the daemon and which never reached the microphone sink (the loopback's)."""

    lost_ms: list[float] = field(default_factory=list)
    onset_after_press_ms: list[float] = field(default_factory=list)
    lost_windows: list[list[int]] = field(default_factory=list)
    not_played_windows: list[list[int]] = field(default_factory=list)


class TurnRunner:
    """Drives one daemon through timed turns on the shared harness."""

    def __init__(self, harness: Harness, daemon: BenchDaemon, seed: int = 1) -> None:
        self.h = harness
        self.d = daemon
        self.random = random.Random(seed)

    def _wait(self, check: Callable[[], bool], what: str, timeout: float = TURN_TIMEOUT_S) -> None:
        self.h.wait(check, timeout, what, self.d)

    def wait_no_session(self) -> None:
        self._wait(self.h.no_session, "the session to close")

    def _press_new_session(self) -> tuple[float, int]:
        """Press on an idle box; returns the press time and the new connection's id."""
        self.wait_no_session()
        time.sleep(self.random.uniform(0, 0.05))  # no lock-step with the 40 ms chunk grid
        count = self.h.connection_count()
        pressed = self.d.press()
        self._wait(lambda: self.h.connection_count() > count, "a connection after the press")
        return pressed, self.h.server.log.connections()[-1].id

    def _finish_turn(self, conn: int) -> None:
        """Wait for the reply to end and the session to close after it."""
        self._wait(
            lambda: any(e.kind == "turn_complete" for e in self.h.entries(conn, "out")),
            "the reply to end",
        )
        self.wait_no_session()

    # -- press, release, reply ----------------------------------------------------------

    def cold_turns(self, count: int) -> ColdTurns:
        """`count` turns, each a press that opens a new session, a hold and a release."""
        out = ColdTurns()
        for n in range(1, count + 1):
            recorder = self.h.loopback.record(REPLY_RATE)
            try:
                recorder.wait_started()
                self._cold_turn(out, recorder)
            finally:
                recorder.stop()
            out.rss_mb.append(memory_mb(self.d.pid)["rss"])
            if n % 10 == 0 or n == count:
                progress(f"cold turns {n}/{count}")
        return out

    def _cold_turn(self, out: ColdTurns, recorder: Recorder) -> None:
        pressed, conn = self._press_new_session()
        self._wait(
            lambda: self.h.first("audio", "in", pressed, conn) is not None,
            "the first microphone bytes",
        )
        time.sleep(HOLD_S)
        released = self.d.release()
        self._finish_turn(conn)
        setup = self.h.first("setup_complete", "out", pressed, conn)
        first_bytes = self.h.first("audio", "in", pressed, conn)
        activity_end = self.h.first("activity_end", "in", released, conn)
        reply = self.h.first("audio", "out", released, conn)
        if setup is None or first_bytes is None or activity_end is None or reply is None:
            raise BenchError(f"connection {conn} missed a message: {self.h.entries(conn)}")
        heard = recorder.first_sound(after=released, threshold_dbfs=SOUND_DBFS)
        if heard is None:
            raise BenchError("the reply never reached the loopback speaker")
        out.press_to_setup.append(ms(setup.t - pressed))
        out.press_to_first_bytes.append(ms(first_bytes.t - pressed))
        out.setup_to_first_bytes.append(ms(first_bytes.t - setup.t))
        out.release_to_activity_end.append(ms(activity_end.t - released))
        out.reply_to_sound.append(ms(heard - reply.t))

    # -- speech at the press ------------------------------------------------------------

    def speech_loss(self, count: int, onset_delay: float, marker_s: float = 0.6) -> SpeechLoss:
        """Press as a marker starts at the microphone; how much of it reaches the server?

        `onset_delay` is how long after pacat starts its audio shows at the
        microphone (the loopback's latency); the press is aimed at the onset and
        the recording of the microphone says where the onset really fell.
        """
        lead = 0.3
        sound = marker(marker_s, MIC_RATE)
        played = pcm.from_float(np.concatenate([np.zeros(round(lead * MIC_RATE)), sound]))
        out = SpeechLoss()
        for n in range(1, count + 1):
            self.wait_no_session()
            mic = self.h.loopback.record(MIC_RATE, side="mic")
            try:
                mic.wait_started()
                self._speech_turn(played, sound, lead + onset_delay, mic, out)
            finally:
                mic.stop()
            if n % 10 == 0 or n == count:
                progress(f"speech-at-the-press turns {n}/{count}")
        return out

    def _speech_turn(
        self, played: bytes, sound: np.ndarray, press_after: float, mic: Recorder, out: SpeechLoss
    ) -> None:
        """One press on a marker, added to `out`.

        Only what reached the microphone sink can be lost by the daemon: a window
        missing from the recording of the microphone too is the loopback's, not counted.
        """
        count = self.h.connection_count()
        player = self.h.loopback.play(played, MIC_RATE)
        time.sleep(max(0.0, player.started + press_after - time.monotonic()))
        pressed = self.d.press()
        player.wait()
        time.sleep(0.15)  # the marker's tail through the loopback and the capture
        self.d.release()
        self._wait(lambda: self.h.connection_count() > count, "the connection")
        conn = self.h.server.log.connections()[-1].id
        self._finish_turn(conn)
        samples, times = mic.timeline()
        recent = times >= player.started
        heard, at_mic = samples[recent], times[recent]
        at = locate(heard, sound)
        if not 0 <= at < heard.size:
            raise BenchError("the marker is not in the recording of the microphone")
        _, not_played = missing_ms(heard, sound, MIC_RATE)
        received = pcm.to_float(self.h.server.log.activity_audio(conn))
        _, not_received = missing_ms(received, sound, MIC_RATE)
        lost = sorted(set(not_received) - set(not_played))
        out.lost_ms.append(len(lost) * WINDOW_MS)
        out.lost_windows.append(lost)
        out.not_played_windows.append(not_played)
        out.onset_after_press_ms.append(ms(float(at_mic[at]) - pressed))

    # -- barge-in -------------------------------------------------------------------------

    def barge_ins(self, count: int) -> list[float]:
        """Press while a reply plays; ms until the loopback speaker is silent.

        Each press interrupts the reply to the previous turn, and its release asks
        for the next: a chain of `count` interruptions in one session.
        """
        results = []
        self.wait_no_session()
        self.d.press()
        time.sleep(0.1)
        released = self.d.release()
        for n in range(1, count + 1):
            recorder = self.h.loopback.record(REPLY_RATE)
            try:
                recorder.wait_started()
                results.append(self._barge_in(released, recorder))
            finally:
                recorder.stop()
            time.sleep(0.1)
            released = self.d.release()
            if n % 10 == 0 or n == count:
                progress(f"barge-ins {n}/{count}")
        conn = self.h.server.log.connections()[-1].id
        self._finish_turn(conn)
        return results

    def _barge_in(self, released: float, recorder: Recorder) -> float:
        self._wait(lambda: self.h.first("audio", "out", released) is not None, "a reply")
        reply = self.h.first("audio", "out", released)
        assert reply is not None
        wait_for(
            lambda: recorder.first_sound(after=reply.t, threshold_dbfs=SOUND_DBFS) is not None,
            "the reply at the loopback speaker",
        )
        time.sleep(self.random.uniform(0.2, 0.5))  # somewhere inside the reply
        return silence_after(recorder, self.d.press(), "the press")


def silence_after(recorder: Recorder, since: float, what: str) -> float:
    """ms from `since` (the moment of `what`) to the sample after the last loud one
    within 400 ms of it in a recording of the speaker."""
    until = since + 0.4
    wait_for(
        lambda: bool(recorder.chunks) and recorder.chunks[-1][0] >= until,
        "the recording of the speaker",
    )
    samples, times = recorder.timeline()
    window = (times >= since - 0.5) & (times <= until)
    loud = np.flatnonzero(np.abs(samples[window]) > pcm.db_to_amplitude(SOUND_DBFS))
    if not loud.size:
        raise BenchError(f"the reply was not playing at {what}")
    if loud[-1] + 1 >= int(window.sum()):
        raise BenchError(f"the speaker still sounded 400 ms after {what}")
    return ms(float(times[window][loud[-1] + 1]) - since)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll a condition on a recording (a thread of ours fills it); BenchError if it never holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.02)


def ms(seconds: float) -> float:
    return seconds * 1000
