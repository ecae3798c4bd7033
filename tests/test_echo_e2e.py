"""Hands-free with the speaker in the same box: the daemon does not hear itself, and
a person can talk over it.

The rig's acoustic path (`rig.acoustic`) carries what the loopback speaker plays
back into the loopback microphone, as a box's own speaker would; the local
server's voice detector interrupts a reply as soon as it hears speech, its own
echo included. The replies are spoken (espeak-ng), not tones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from speech import MIC_RATE, SPEAKER_RATE

from device.audio import pcm
from rig.acoustic import AcousticPath, Room
from rig.daemon import Daemon
from rig.echo_tap import SENT, read, replay
from rig.loopback import PulseLoopback
from rig.server.log import Entry
from rig.server.server import ServerThread
from rig.speech import said

ANSWER = (
    "Tomorrow will be sunny with a light breeze from the west, and temperatures will rise "
    "to around twenty two degrees in the afternoon. In the evening clouds gather over the "
    "hills, and there may be a short shower before midnight."
)
HANDS_FREE: dict[str, dict[str, Any]] = {  # echo cancellation is the default
    "button": {"mode": "toggle"},
    "conversation": {"silence_ms": 400},
    "audio": {},
}


@pytest.fixture
def room(loopback: PulseLoopback) -> Iterator[AcousticPath]:
    """The speaker heard at the microphone 12 dB down, 10 ms late: a small box."""
    with AcousticPath(loopback, Room(delay_ms=10, gain_db=-12)) as path:
        yield path


def start_conversation(
    make_rig: Any,
    env: dict[str, str] | None = None,
    reply_seconds: float = 6.0,
    audio: dict[str, Any] | None = None,
    pace: float = 1.0,
    conversation: dict[str, Any] | None = None,
) -> tuple[ServerThread, Daemon]:
    voice = pcm.from_float(said(ANSWER, -22.0, SPEAKER_RATE))
    settings = {
        **HANDS_FREE,
        "audio": {**HANDS_FREE["audio"], **(audio or {})},
        "conversation": {**HANDS_FREE["conversation"], **(conversation or {})},
    }
    server, daemon = make_rig(
        settings, env, reply_seconds=reply_seconds, voice=voice, pace=pace
    )
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    return server, daemon


def sent(server: ServerThread, kind: str, after: float) -> float | None:
    """When the server first sent a message of `kind` after `after`."""
    return next((e.t for e in server.log.entries(direction="out")
                 if e.kind == kind and e.t >= after), None)  # fmt: skip


def ask(loopback: PulseLoopback, server: ServerThread, question: str) -> float:
    """Say `question` into the microphone; returns when the reply's first audio was sent."""
    asked = time.monotonic()
    loopback.play(pcm.from_float(said(question, -20.0)), MIC_RATE).wait()
    server.wait_for(lambda: sent(server, "audio", asked) is not None, 15)
    reply = sent(server, "audio", asked)
    assert reply is not None
    return reply


def replies_done(server: ServerThread, n: int) -> None:
    server.wait_for(lambda: server.log.kinds(direction="out").count("turn_complete") >= n, 20)


def two_turns_uninterrupted(
    loopback: PulseLoopback, server: ServerThread, daemon: Daemon
) -> list[Entry]:
    """Two questions, each answered to its end with the box listening again after it,
    and its own voice never taken for a person's; what the server sent."""
    for turn in (1, 2):
        ask(loopback, server, "What will the weather be like tomorrow?")
        replies_done(server, turn)
        daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening again")
    out = server.log.entries(direction="out")
    assert "interrupted" not in [e.kind for e in out], "the box's own voice interrupted it"
    return out


def received_during(server: ServerThread, start: float, end: float) -> bytes:
    return b"".join(
        e.data or b"" for e in server.log.entries(direction="in")
        if e.kind == "audio" and start <= e.t <= end
    )  # fmt: skip


def test_the_box_does_not_interrupt_itself_and_keeps_listening(
    loopback: PulseLoopback, make_rig: Any, room: AcousticPath
) -> None:
    # Every chunk goes to the server, silence too (no quiet gate): what the box's own voice
    # left in the microphone is there to be judged.
    server, daemon = start_conversation(make_rig, audio={"pause_below_dbfs": -100})
    out = two_turns_uninterrupted(loopback, server, daemon)
    # The microphone stayed open while it spoke (cancelled, not gated): nearly every chunk
    # of the replies' time reached the server, and none of it was loud.
    starts = [e.t for e in out if e.kind == "audio"]
    for end in [e.t for e in out if e.kind == "turn_complete"]:
        start = min(t for t in starts if t > end - 7)
        during = received_during(server, start + 0.5, end)
        assert len(during) / 2 / MIC_RATE > 0.8 * (end - start - 0.5)
        assert pcm.rms_dbfs(during) < -50
    assert "audio_stream_end" not in server.log.kinds(direction="in")


@pytest.mark.parametrize("room_ms", [0, 400], ids=["direct", "through-a-room"])
def test_the_box_does_not_take_its_own_voice_for_a_person_over_a_reply_sent_whole(
    loopback: PulseLoopback, make_rig: Any, room_ms: int
) -> None:
    """The box stops a reply the service sent whole when it hears a person over it: its
    own voice, what the canceller leaves of it, must never pass for one."""
    reply_s = 10.0
    room = Room(delay_ms=10, gain_db=-6, reverb_ms=room_ms or None)  # the benchmark's box
    with AcousticPath(loopback, room):
        server, daemon = start_conversation(make_rig, reply_seconds=reply_s, pace=0.02)
        speaker = loopback.record(SPEAKER_RATE)
        speaker.wait_started()
        try:
            starts = []
            for turn in (1, 2):
                starts.append(ask(loopback, server, "What will the weather be like tomorrow?"))
                replies_done(server, turn)
                daemon.wait_until(lambda s: s["state"] == "listening", 20, "the reply's end")
        finally:
            speaker.stop()
    assert "ReplyDropped" not in daemon.log(), "the box cut its own reply short"
    samples, times = speaker.timeline()
    for start in starts:
        for t in np.arange(0.5, reply_s - 1.0, 1.0):
            during = samples[(times > start + t) & (times < start + t + 1.0)]
            assert np.abs(during).max() > pcm.db_to_amplitude(-40), (start, t)


@pytest.mark.parametrize(
    ("pace", "reply_seconds"),
    [(1.0, 10.0), (0.25, 24.0)],
    ids=["sent-as-it-plays", "sent-four-times-faster"],
)
def test_a_person_talking_over_the_reply_interrupts_it(
    loopback: PulseLoopback, make_rig: Any, room: AcousticPath, pace: float, reply_seconds: float
) -> None:
    """Sent faster than it plays, most of the reply waits in the box when the person
    speaks: the service's interrupted must not wait behind it."""
    server, _ = start_conversation(make_rig, reply_seconds=reply_seconds, pace=pace)
    speaker = loopback.record(SPEAKER_RATE)
    speaker.wait_started()
    try:
        reply = ask(loopback, server, "What will the weather be like tomorrow?")
        time.sleep(max(0.0, reply + 2.0 - time.monotonic()))  # well into the reply
        words = pcm.from_float(said("Wait, what about Sunday morning?", -20.0))
        player = loopback.play(words, MIC_RATE)
        server.wait_for(lambda: sent(server, "interrupted", reply) is not None, 10)
        interrupted = sent(server, "interrupted", reply)
        assert interrupted is not None
        player.wait()
        time.sleep(0.5)
    finally:
        speaker.stop()
    assert interrupted - player.started < 1.0  # within the first words
    samples, times = speaker.timeline()
    after = samples[(times > interrupted + 0.15) & (times < interrupted + 0.35)]
    assert after.size and np.abs(after).max() < pcm.db_to_amplitude(-50), "the box talked on"
    # The server heard the words through to their end, about as long as they were said.
    heard = [e.raw for e in server.log.entries(direction="out")
             if e.kind == "transcription_in" and e.t > interrupted and e.raw]  # fmt: skip
    assert heard, "the server never ended the person's turn"
    heard_ms = int(heard[0]["serverContent"]["inputTranscription"]["text"].split()[0])
    frames = pcm.to_float(words)[: len(words) // 2 // 320 * 320].reshape(-1, 320)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 0.01)
    spoken_ms = 20 * (loud[-1] - loud[0] + 1)  # first to last loud frame, as the server counts
    assert heard_ms >= 0.8 * spoken_ms, (heard_ms, spoken_ms)


def test_talking_over_a_reply_sent_whole_stops_it_and_the_answer_comes_at_once(
    loopback: PulseLoopback, make_rig: Any, room: AcousticPath
) -> None:
    """The service sends a reply faster than it plays; once it has sent all of it, words
    said over the box interrupt nothing there: it answers them. The box stops the rest of
    the reply itself as the person talks over it, and plays that answer as it comes."""
    reply_s = 12.0
    server, _ = start_conversation(make_rig, reply_seconds=reply_s, pace=0.02)
    speaker = loopback.record(SPEAKER_RATE)
    speaker.wait_started()
    try:
        reply = ask(loopback, server, "What will the weather be like tomorrow?")
        replies_done(server, 1)  # all of it sent in a quarter of a second
        time.sleep(max(0.0, reply + 2.0 - time.monotonic()))
        player = loopback.play(pcm.from_float(said("Wait, what about Sunday?", -20.0)), MIC_RATE)
        player.wait()
        server.wait_for(lambda: sent(server, "audio", player.started) is not None, 10)
        answer = sent(server, "audio", player.started)
        assert answer is not None
        time.sleep(max(0.0, answer + reply_s + 2.0 - time.monotonic()))
    finally:
        speaker.stop()
    assert sent(server, "interrupted", reply) is None, "the service had nothing to interrupt"
    assert answer < reply + reply_s - 3, "the answer came while the old reply still had seconds"
    samples, times = speaker.timeline()

    def loudest(start: float, end: float) -> float:
        during = samples[(times > start) & (times < end)]
        assert during.size, "the recording covers it"
        return float(np.abs(during).max())

    # Silent while the person still talks and until the answer: not talking over them.
    assert answer - player.started > 1.5, "the answer came after the words"
    assert loudest(player.started + 0.6, answer - 0.05) < pcm.db_to_amplitude(-50)
    # The answer plays from when it came, to its end, and nothing after it: the old
    # reply's rest (several seconds of it) would have played first and pushed it later.
    assert all(loudest(answer + t, answer + t + 1.0) > pcm.db_to_amplitude(-40)
               for t in np.arange(0.3, reply_s - 1.0, 1.0))  # fmt: skip
    assert loudest(answer + reply_s + 0.5, answer + reply_s + 1.8) < pcm.db_to_amplitude(-50)


def test_without_barge_in_words_over_a_reply_sent_whole_leave_it_to_play_to_its_end(
    loopback: PulseLoopback, make_rig: Any, room: AcousticPath
) -> None:
    """`barge_in = false`: speech over the box stops nothing (the setup says
    NO_INTERRUPTION). A reply the service sent whole plays to its end, then the answer:
    neither the box's own ear nor the answer to the words cuts it."""
    reply_s = 8.0
    server, _ = start_conversation(
        make_rig, reply_seconds=reply_s, pace=0.02, conversation={"barge_in": False}
    )
    speaker = loopback.record(SPEAKER_RATE)
    speaker.wait_started()
    try:
        reply = ask(loopback, server, "What will the weather be like tomorrow?")
        replies_done(server, 1)
        time.sleep(max(0.0, reply + 2.0 - time.monotonic()))
        player = loopback.play(pcm.from_float(said("Wait, what about Sunday?", -20.0)), MIC_RATE)
        player.wait()
        replies_done(server, 2)  # the answer, sent while the old reply still plays
        time.sleep(max(0.0, reply + 2 * reply_s + 1.0 - time.monotonic()))
    finally:
        speaker.stop()
    assert sent(server, "interrupted", reply) is None
    samples, times = speaker.timeline()

    def loudest(start: float, end: float) -> float:
        return float(np.abs(samples[(times > start) & (times < end)]).max())

    # Spoken words every second of both replies, one after the other.
    for t in [*np.arange(0.5, reply_s - 1.0, 1.0), *np.arange(reply_s + 0.5, 2 * reply_s - 1.5)]:
        assert loudest(reply + t, reply + t + 1.0) > pcm.db_to_amplitude(-40), t


def test_without_the_module_the_box_gates_the_microphone(
    loopback: PulseLoopback, make_rig: Any, room: AcousticPath, tmp_path: Path
) -> None:
    """32-bit Raspberry Pi OS has no wheel: the lock's platform marker leaves it out, and
    the import fails."""
    (tmp_path / "pywebrtc_audio").mkdir()
    (tmp_path / "pywebrtc_audio" / "__init__.py").write_text(
        "raise ImportError('no wheel for this platform')\n"
    )
    server, daemon = start_conversation(make_rig, env={"PYTHONPATH": str(tmp_path)})
    ask(loopback, server, "What will the weather be like tomorrow?")
    replies_done(server, 1)
    out = server.log.entries(direction="out")
    assert "interrupted" not in [e.kind for e in out]
    first = next(e.t for e in out if e.kind == "audio")
    last = next(e.t for e in out if e.kind == "turn_complete")
    assert len(received_during(server, first + 0.5, last - 0.5)) == 0  # gated
    assert "audio_stream_end" in server.log.kinds(direction="in")
    # One journal line says so, with the setting in force as a field an owner can filter on.
    assert len(daemon.records(LIVE_MIC_DURING_PLAYBACK="gate")) == 1, daemon.log()


def test_a_daemon_run_through_the_tap_records_what_the_server_got(
    loopback: PulseLoopback, make_rig: Any, room: AcousticPath, tmp_path: Path
) -> None:
    """The benchmark's daemons (`start_daemon(tap=...)`): a hands-free reply over the
    rig's acoustic path, recorded in the daemon, replays bit for bit, and what the
    recording says went on is what the server received."""
    server, daemon = make_rig(
        {**HANDS_FREE, "audio": {"pause_below_dbfs": -100}}, tap=tmp_path, reply_seconds=3.0,
        voice=pcm.from_float(said(ANSWER, -22.0, SPEAKER_RATE)),
    )  # fmt: skip
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    reply = ask(loopback, server, "What will the weather be like tomorrow?")
    replies_done(server, 1)
    daemon.terminate()
    (path,) = tmp_path.glob("canceller-*.tap")
    again = replay(path)
    assert again.calls > 50 and again.differing == []
    _, calls = read(path)
    # The canceller runs while the box speaks and for a second after, and rests between;
    # its first block, read at the press, may reach back before the turn, whose part never
    # goes out. Recorded while the reply played, what it let through is one stretch of
    # what went out.
    playing = [c for c in calls if c.kind == SENT and reply + 0.5 < c.t < reply + 2.5]
    sent = b"".join(c.arrays[2].astype("<i2").tobytes() for c in playing)
    received = b"".join(e.data or b"" for e in server.log.entries(direction="in")
                        if e.kind == "audio")  # fmt: skip
    assert len(sent) > 1.5 * MIC_RATE * 2  # most of those 2 s
    assert sent in received  # sample for sample
    # Stamped by the capture's clock, which is the server's: the chunk that carried the
    # end of a mid-reply block reached the server after it was recorded, and soon after.
    middle = playing[len(playing) // 2]
    end = received.index(middle.arrays[2].astype("<i2").tobytes()) + middle.arrays[2].size * 2
    carried = 0
    for e in (e for e in server.log.entries(direction="in") if e.kind == "audio"):
        carried += len(e.data or b"")
        if carried >= end:
            assert 0 < e.t - middle.t < 0.3
            break


def test_attenuated_the_box_does_not_interrupt_itself(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    with AcousticPath(loopback, Room(delay_ms=10, gain_db=-12)):  # the speaker in the box
        server, daemon = start_conversation(
            make_rig, audio={"mic_during_playback": "attenuate", "pause_below_dbfs": -100}
        )
        out = two_turns_uninterrupted(loopback, server, daemon)
    first = next(e.t for e in out if e.kind == "audio")
    last = next(e.t for e in out if e.kind == "turn_complete")
    during = received_during(server, first + 0.5, last - 0.5)
    assert len(during) / 2 / 16000 > 0.8 * (last - first - 1.0), "attenuated, not gated"
