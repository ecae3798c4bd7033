"""What the service or a person can grow has a bound: the real daemon on the rig.

A reply sent faster than it plays waits in the service, not in the box; every
byte of it that nobody talked over still reaches the speaker. Text turns from
`ctl text` past their bound are refused to the caller, not lost.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from speech import (
    SPEAKER_RATE,
    chirp,
    reply_heard,
    speak_turn,
    speaker_during_turn,
    talk_over,
    tone_frames,
    turns_done,
)

from device.audio import pcm
from device.control_client import request
from device.outbox import TEXTS_LIMIT
from rig.loopback import PulseLoopback

MB = 1024 * 1024


def rss(pid: int) -> int:
    """The process's resident memory in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_a_reply_sent_at_once_reaches_the_speaker_whole(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Far more than the speaker holds arrives at once: nothing of it is dropped."""
    _, daemon = make_rig({"audio": {"earcons": False}}, pace=0, reply_seconds=12.0)
    reply_heard(speaker_during_turn(loopback, daemon, within=40), turn=1, seconds=12.0)


def test_a_ten_minute_reply_sent_at_once_stays_with_the_service_and_a_press_silences_it(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig({"audio": {"earcons": False}}, reply_seconds=1.0)
    speak_turn(loopback, daemon, chirp(0.5))  # a first turn: the session and the SDK are up
    daemon.wait_until(turns_done(1), 20, "the first turn to end")
    before = rss(daemon.proc.pid)

    assert server.server is not None
    server.server.config.pace, server.server.config.reply_seconds = 0, 600.0
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.5))
    daemon.wait_until(lambda s: s["state"] == "speaking", 20, "the long reply to start")
    peak, until = before, time.monotonic() + 10
    while time.monotonic() < until:
        peak = max(peak, rss(daemon.proc.pid))
        time.sleep(0.1)
    sent = sum(len(e.data or b"") for e in server.log.entries(direction="out") if e.kind == "audio")

    server.server.config.pace, server.server.config.reply_seconds = 1, 1.0
    barge = talk_over(loopback, daemon, turn=2, within=30)
    recorder.stop()

    grown = (peak - before) / MB
    assert grown < 10, (
        f"the daemon grew by {grown:.1f} MB from {before / MB:.1f} MB while a 10-minute reply "
        f"arrived (the server could put {sent / 2 / SPEAKER_RATE:.0f} s of it on the wire)"
    )
    samples, times = recorder.timeline()
    played = pcm.from_float(samples[(times > barge - 3) & (times < barge)])
    assert len(tone_frames(played, turn=2)) * 0.02 > 2.5, "the long reply did not play"
    after = samples[(times > barge + 0.25) & (times < barge + 0.8)]
    assert after.size and abs(after).max() < pcm.db_to_amplitude(-50), "speaker not silent"
    rest = pcm.from_float(samples[times > barge + 0.25])
    assert tone_frames(rest, turn=2) == [], "the rest of the long reply played after the press"
    reply_heard(rest, turn=3, seconds=1.0)


def test_text_turns_past_the_bound_are_refused_and_every_one_taken_is_sent(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """`ctl text` in a loop while the box connects: what it took goes out, in order; the
    rest is refused to the caller's face, with one journal line."""
    server, daemon = make_rig({"audio": {"earcons": False}}, setup_delay=3.0, reply_seconds=0.2)
    answers = [request(daemon.socket, "text", text=f"note {i}") for i in range(TEXTS_LIMIT + 3)]
    assert [a["ok"] for a in answers] == [True] * TEXTS_LIMIT + [False] * 3
    assert all("busy" in a["error"] for a in answers[TEXTS_LIMIT:])

    def texts() -> list[str]:
        return [
            part["text"]
            for e in server.log.entries(direction="in")
            if e.kind == "client_content"
            for turn in e.raw["client_content"]["turns"]
            for part in turn["parts"]
        ]

    server.wait_for(lambda: len(texts()) >= TEXTS_LIMIT, 20)
    daemon.wait_until(lambda s: s["state"] == "idle", 20, "the replies to end")
    assert texts() == [f"note {i}" for i in range(TEXTS_LIMIT)]
    assert len(daemon.wait_for_records(LIVE_BOUND="texts")) == 1
