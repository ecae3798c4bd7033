"""A hands-free conversation on the rig, driven as a person would, and what it measures.

Each function takes a daemon in a conversation with the speaker heard at the
microphone (`rig.acoustic`) and measures from outside it: the server's log, the
recordings of the microphone and speaker sinks, the process's CPU clock. The
phase that runs them and its figures: `rig.bench.echo`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.audio import pcm
from device.live.wire import MIC_RATE, REPLY_RATE
from rig.bench.harness import BenchDaemon, BenchError, Harness, progress
from rig.bench.markers import locate
from rig.bench.proc import cpu_per_minute
from rig.loopback import Recorder
from rig.server.vad import threshold_dbfs
from rig.speech import said

QUESTION = "What will the weather be like tomorrow?"
INTERJECTION = "Wait, what about Sunday morning?"
SPEECH_DBFS = -20.0  # a person near the box, at the microphone
CONVERGED_S = 1.0  # echo reduction is measured from this far into each reply
#: The voice detector's threshold for the box's default start sensitivity ("high").
VOICE_DBFS = threshold_dbfs("START_SENSITIVITY_HIGH")
FRAME = MIC_RATE // 50  # the detector's 20 ms frame


def frames_dbfs(samples: np.ndarray) -> np.ndarray:
    """The loudness of each whole 20 ms frame."""
    return pcm.frame_dbfs(samples, FRAME)


def power_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(samples**2) + 1e-20))


# -- a hands-free conversation, driven as a person would ------------------------------------


@dataclass
class Conversation:
    """One daemon in a conversation: questions into the microphone, replies timed at the
    server, recordings of the microphone and speaker sinks running throughout; `tap`: where
    the daemon records its echo canceller (`rig.echo_tap`), if it does."""

    h: Harness
    d: BenchDaemon
    tap: Path | None = None
    mic: Recorder = field(init=False)
    speaker: Recorder = field(init=False)

    def __post_init__(self) -> None:
        self.mic = self.h.loopback.record(MIC_RATE, side="mic")
        self.speaker = self.h.loopback.record(REPLY_RATE, side="speaker")
        self.mic.wait_started()
        self.speaker.wait_started()
        if self.d.daemon.status()["state"] != "listening":
            self.d.press()
            self.d.daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")

    def restart(self) -> None:
        """End the conversation and start another: after the box interrupted itself, the
        server answers its echo, and the answer may be cut by its echo in turn."""
        self.d.press()
        self.d.daemon.wait_until(lambda s: s["state"] == "idle", 10, "idle")
        self.d.press()
        self.d.daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")

    def recording(self) -> Path | None:
        """The daemon's canceller's recording, if it makes one (one canceller a daemon;
        the newest file, should it ever build another)."""
        if self.tap is None:
            return None
        files = self.tap.glob("canceller-*.tap")
        return max(files, key=lambda p: p.stat().st_mtime, default=None)

    def close(self) -> None:
        self.mic.stop()
        self.speaker.stop()

    def sent(self, kind: str, after: float) -> float | None:
        """When the server first sent a message of `kind` after `after`."""
        return next((e.t for e in self.h.entries(direction="out")
                     if e.kind == kind and e.t >= after), None)  # fmt: skip

    def wait_sent(self, kind: str, after: float, timeout: float = 30.0) -> float:
        self.h.wait(lambda: self.sent(kind, after) is not None, timeout, kind, self.d)
        t = self.sent(kind, after)
        assert t is not None
        return t

    def quiet(self, for_s: float = 1.0, timeout: float = 30.0) -> None:
        """Wait until the box listens and the server has sent no reply audio for `for_s`
        (an interrupted reply is answered again once the "speech" that cut it ends)."""
        def still() -> bool:
            sent = [e.t for e in self.h.entries(direction="out") if e.kind == "audio"]
            return not sent or time.monotonic() - sent[-1] >= for_s
        self.h.wait(still, timeout, "the server to stop replying", self.d)
        self.d.daemon.wait_until(lambda s: s["state"] == "listening", timeout, "listening")

    def ask(self, question: np.ndarray) -> float:
        """Say `question` once all is quiet; returns when the server sent the reply's first
        audio."""
        self.quiet()
        asked = time.monotonic()
        self.h.loopback.play(pcm.from_float(question), MIC_RATE).wait()
        return self.wait_sent("audio", asked)

    def received(self, start: float, end: float) -> np.ndarray:
        """What the server received whose chunks arrived in [start, end]."""
        return pcm.to_float(b"".join(
            e.data or b"" for e in self.h.entries(direction="in")
            if e.kind == "audio" and start <= e.t <= end
        ))  # fmt: skip

    def carried(self, start: float, end: float) -> np.ndarray:
        """What the microphone sink carried in [start, end] (its own recording)."""
        samples, times = self.mic.timeline()
        return samples[(times >= start) & (times < end)]


@dataclass
class EchoReplies:
    erle_db: list[float] = field(default_factory=list)
    replies: int = 0
    interruptions: int = 0
    interrupted_at: list[float] = field(default_factory=list)  # seconds into the reply
    #: The canceller's recording (`rig.echo_tap`) of each reply that interrupted itself,
    #: and when the server interrupted it.
    recordings: list[tuple[Path, float]] = field(default_factory=list)


def echo_replies(c: Conversation, count: int, reply_s: float) -> EchoReplies:
    """`count` long replies nobody talks over: how much of the box's own voice reached
    the server (after CONVERGED_S), and how often it interrupted itself."""
    out = EchoReplies()
    question = said(QUESTION, SPEECH_DBFS)
    chunk_s = 0.04
    for n in range(1, count + 1):
        first = c.ask(question)
        done = c.wait_sent("turn_complete", first, reply_s + 20)
        out.replies += 1
        interrupted = c.sent("interrupted", first)
        if interrupted is not None and interrupted <= done:
            out.interruptions += 1
            out.interrupted_at.append(round(interrupted - first, 2))
            recording = c.recording()
            if recording is not None:
                out.recordings.append((recording, interrupted))
            c.restart()
            continue
        # The echo at the microphone from CONVERGED_S into the reply to its end, and what
        # the server got meanwhile (a chunk arrives about its length after its start).
        start, end = first + CONVERGED_S, done - 0.2
        echo = c.carried(start, end)
        got = c.received(start + chunk_s, end + chunk_s)
        if echo.size and got.size:
            out.erle_db.append(float(power_db(echo) - power_db(got)))
        else:  # a recording PulseAudio dropped under load: that reply's figure is missing
            progress(f"echo reply {n}: no audio recorded at the microphone or the server")
        time.sleep(0.5)
        if n % 5 == 0 or n == count:
            progress(f"echo replies {n}/{count}")
    return out


@dataclass
class TalkOvers:
    detect_ms: list[float] = field(default_factory=list)  # speech onset to interrupted
    silent_ms: list[float] = field(default_factory=list)  # interrupted to silence
    voiced: list[float] = field(default_factory=list)  # share of the spoken frames heard
    missed: int = 0  # interjections the server never took for speech
    moments: list[tuple[float, float]] = field(default_factory=list)  # (onset, interrupted)
    #: Of detect_ms, how long the canceller's guard held the first loud frame back after
    #: WebRTC's module let it through (from the daemon's tap, when it has one).
    held_ms: list[float] = field(default_factory=list)


def talk_overs(c: Conversation, count: int) -> TalkOvers:
    """A person talks over a reply 2 s into it: when the server interrupts, when the box
    goes silent, and how much of what they said the server heard as speech."""
    out = TalkOvers()
    question, words = said(QUESTION, SPEECH_DBFS), said(INTERJECTION, SPEECH_DBFS)
    spoken = frames_dbfs(words) > VOICE_DBFS
    for n in range(1, count + 1):
        first = c.ask(question)
        time.sleep(max(0.0, first + 2.0 - time.monotonic()))
        player = c.h.loopback.play(pcm.from_float(words), MIC_RATE)
        player.wait()
        interrupted = c.sent("interrupted", first)
        if interrupted is None:
            out.missed += 1
        else:
            onset = _onset_at_microphone(c, words, player.started)
            out.moments.append((onset, interrupted))
            out.detect_ms.append(float((interrupted - onset) * 1000))
            out.silent_ms.append(float(_silent_after(c.speaker, interrupted) * 1000))
            got = c.received(player.started, time.monotonic() + 0.3)
            out.voiced.append(_voiced_share(got, words, spoken))
        if n % 5 == 0 or n == count:
            progress(f"talking over replies {n}/{count}")
    return out


def _onset_at_microphone(c: Conversation, words: np.ndarray, played: float) -> float:
    """When the first voiced frame of `words` reached the microphone sink (placed by
    cross-correlation: the box's own voice there does not correlate with it)."""
    time.sleep(0.2)
    samples, times = c.mic.timeline()
    after = times >= played
    at = locate(samples[after], words)
    first_voiced = int(np.argmax(frames_dbfs(words) > VOICE_DBFS)) * FRAME
    index = min(max(at + first_voiced, 0), int(after.sum()) - 1)
    return float(times[after][index])


def _silent_after(speaker: Recorder, t: float, threshold_dbfs: float = -40.0) -> float:
    """Seconds from `t` to the sample after the last loud one within 400 ms of it."""
    deadline = t + 0.5
    while not speaker.chunks or speaker.chunks[-1][0] < deadline:
        time.sleep(0.02)
    samples, times = speaker.timeline()
    window = (times >= t - 0.5) & (times <= t + 0.4)
    loud = np.flatnonzero(np.abs(samples[window]) > pcm.db_to_amplitude(threshold_dbfs))
    if not loud.size:
        return 0.0
    return max(0.0, float(times[window][min(loud[-1] + 1, int(window.sum()) - 1)]) - t)


def _voiced_share(got: np.ndarray, words: np.ndarray, spoken: np.ndarray) -> float:
    """Of the frames voiced as spoken, the share voiced in what the server received."""
    at = locate(got, words) if got.size >= words.size else -1
    if at < 0:
        return 0.0
    heard = frames_dbfs(got[at : at + words.size])
    n = min(heard.size, spoken.size)
    return float(np.mean(heard[:n][spoken[:n]] > VOICE_DBFS))


# -- costs ------------------------------------------------------------------------------------


def reply_cpu(c: Conversation, seconds: float) -> list[float]:
    """CPU s/min of the daemon while a reply plays and the microphone streams."""
    first = c.ask(said(QUESTION, SPEECH_DBFS))
    time.sleep(max(0.0, first + 1.0 - time.monotonic()))
    rates = cpu_per_minute(c.d.pid, min(10.0, seconds), max(1, round(seconds / 10)))
    c.wait_sent("turn_complete", first, seconds + 30)
    return rates


def quiet_cpu(c: Conversation, seconds: float) -> list[float]:
    """CPU s/min of the daemon with the conversation open, the box silent for 2 s (or not
    yet spoken) and nobody talking."""
    c.quiet(for_s=2.0)
    return cpu_per_minute(c.d.pid, min(10.0, seconds), max(1, round(seconds / 10)))


def speech_to_noise(h: Harness, d: BenchDaemon, turns: int) -> list[float]:
    """Push-to-talk turns of a sentence over a fan: dB of the speech over the noise alone
    in what the server received."""
    words = said(QUESTION, SPEECH_DBFS)
    return [_over_the_fan(h, d, words) for _ in range(turns)]


def _over_the_fan(h: Harness, d: BenchDaemon, words: np.ndarray) -> float:
    """One push-to-talk turn of `words` over the fan: their dB over the noise alone."""
    spoken = frames_dbfs(words) > SPEECH_DBFS - 10
    before = h.connection_count()
    d.press()
    h.wait(lambda: h.connection_count() > before, 10, "a connection", d)
    time.sleep(0.6)  # noise alone first
    h.loopback.play(pcm.from_float(words), MIC_RATE).wait()
    time.sleep(0.2)
    d.release()
    conn = h.server.log.connections()[-1].id
    h.wait(lambda: any(e.kind == "turn_complete" for e in h.entries(conn, "out")),
           20, "the reply", d)  # fmt: skip
    got = pcm.to_float(h.server.log.activity_audio(conn))
    at = locate(got, words)
    if at < MIC_RATE // 4:
        raise BenchError("the sentence is not where it was said in the turn's audio")
    frames = frames_dbfs(got[at : at + words.size])
    speech = frames[: spoken.size][spoken[: frames.size]]
    noise = frames_dbfs(got[MIC_RATE // 10 : at - MIC_RATE // 20])
    h.wait(h.no_session, 20, "the session to close", d)
    return float(10 * np.log10(np.mean(10 ** (speech / 10)))
                 - 10 * np.log10(np.mean(10 ** (noise / 10))))  # fmt: skip
