"""The camera end to end: the real daemon with the synthetic camera, the local server, loopback.

What the server receives is what the model would see: every JPEG is decoded and
measured, and the number the synthetic camera drew into it is read back, so a
dropped, repeated or reordered frame shows. Frames are timed against the press,
the release and the end of the session, and the microphone audio sent alongside
them is checked for loss, for gaps and for frames that went ahead of it.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

import pytest
import simplejpeg
from speech import (
    MIC_RATE,
    assert_received_whole,
    chirp,
    speak_turn,
    turns_done,
)

from device.config import AudioConfig
from device.hw.camera_pattern import read_frame_number
from rig.daemon import Daemon
from rig.loopback import PulseLoopback
from rig.server.log import Entry

SIZE = 768
PERIOD_S = 1.0  # one frame a second, the camera's default
CHUNK_MS = 20
#: Microphone audio that may still be on its way through PortAudio when a frame is taken.
CAPTURE_SLACK_S = 0.2
PREROLL_S = AudioConfig().preroll_ms / 1000
# Messages of 20 ms of microphone audio come to about 47 kB a second and a 768x768 frame to
# about 25 kB: on this link the speech fits with room to spare, a frame every second does not.
SLOW_LINK = 60_000  # bytes a second


def with_camera(source: str = "synthetic", **camera: Any) -> dict[str, dict[str, Any]]:
    return {
        "camera": {"enabled": True, "source": source, **camera},
        "audio": {"chunk_ms": CHUNK_MS},
    }


def received(entries: list[Entry], kind: str) -> list[Entry]:
    return [e for e in entries if e.direction == "in" and e.kind == kind]


def frame_number(frame: Entry) -> int:
    """The frame decoded whole at SIZE x SIZE, and the number the synthetic camera drew in it."""
    assert frame.data is not None and frame.data[:2] == b"\xff\xd8", "not a JPEG"
    rgb = simplejpeg.decode_jpeg(frame.data)
    assert rgb.shape == (SIZE, SIZE, 3)
    return read_frame_number(rgb)


def frames_taken(daemon: Daemon) -> int:
    """What the camera's journal record at switch-off says it delivered (waited for: the
    log's pipe may lag the status that said the camera was off)."""
    (off,) = daemon.wait_for_records(LIVE_CAMERA="off")
    return int(off["LIVE_CAMERA_FRAMES"])


def assert_no_frame_went_ahead_of_speech(entries: list[Entry]) -> None:
    """A frame is sent only when no microphone audio waits: frame n, taken n - 1 periods after
    the press, reaches the server behind the pre-roll and all the audio recorded until then.

    For one push-to-talk turn (the microphone streams without a break from press to release).
    """
    audio_s = 0.0
    for e in entries:
        if e.direction == "in" and e.kind == "audio":
            audio_s += len(e.data or b"") / 2 / MIC_RATE
        elif e.direction == "in" and e.kind == "video":
            n = frame_number(e)
            behind = PREROLL_S + (n - 1) * PERIOD_S - audio_s
            assert behind < CAPTURE_SLACK_S, f"frame {n} went ahead of {behind:.2f} s of audio"


def test_a_push_to_talk_turn_sends_a_768_jpeg_a_second_and_none_after_the_release(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    # The camera would linger for 30 s: here only the end of the session switches it off.
    server, daemon = make_rig(
        {**with_camera(linger_s=30), "conversation": {"idle_timeout_s": 3}}, reply_seconds=0.3
    )
    speech = chirp(5.0)
    pressed = speak_turn(loopback, daemon, speech)
    released = time.monotonic()
    status = daemon.wait_until(turns_done(1), 20, "the turn to end")
    assert status["camera"] and status["session_open"], "the camera lingers in the open session"
    # The end of the session switches the camera off, 27 s before its linger would.
    daemon.wait_until(lambda s: not s["session_open"] and not s["camera"], 10, "the idle timeout")

    entries = server.log.entries()
    activity_end = received(entries, "activity_end")[0].t
    frames = received(entries, "video")
    turn_s = released - pressed
    assert int(turn_s) <= len(frames) <= int(turn_s) + 1, f"{len(frames)} frames in {turn_s:.1f} s"
    assert [frame_number(f) for f in frames] == list(range(1, len(frames) + 1)), (
        "every frame the camera took, in order, none twice"
    )
    arrived = [f.t for f in frames]
    assert arrived[0] - pressed < 0.5, "the first frame comes with the press"
    spacing = [b - a for a, b in itertools.pairwise(arrived)]
    assert min(spacing) > PERIOD_S / 2
    assert statistics.median(spacing) == pytest.approx(PERIOD_S, rel=0.2)
    assert arrived[-1] < activity_end, "no frame after the release, though the camera is on"
    assert frames_taken(daemon) == len(frames), "every frame taken reached the server"

    # The microphone beside the camera: nothing lost, no stall while frames go out.
    assert_received_whole(server.log.activity_audio(), speech, loopback.heard(pressed))
    chunks = [e.t for e in received(entries, "audio") if arrived[0] <= e.t <= activity_end]
    worst_gap = max(b - a for a, b in itertools.pairwise(chunks))
    assert worst_gap < 5 * CHUNK_MS / 1000, f"microphone audio stalled {worst_gap * 1000:.0f} ms"
    assert_no_frame_went_ahead_of_speech(entries)
    assert len(daemon.records(LIVE_CAMERA="on")) == 1


def test_in_toggle_mode_frames_flow_while_the_conversation_is_open_and_stop_when_it_ends(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(
        {**with_camera(), "button": {"mode": "toggle"}, "conversation": {"silence_ms": 400}},
        reply_seconds=2.0,
    )
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening" and s["camera"], 10, "the camera")
    loopback.play(chirp(0.8), MIC_RATE).wait()
    server.wait_for(lambda: "turn_complete" in server.log.kinds(direction="out"), 15)
    daemon.ctl("press")  # the second press ends the conversation
    daemon.wait_until(lambda s: not s["session_open"] and not s["camera"], 10, "the end")

    entries = server.log.entries()
    frames = received(entries, "video")
    reply = [e.t for e in entries if e.direction == "out" and e.kind == "audio"]
    assert any(reply[0] < f.t < reply[-1] for f in frames), "frames go on while the model speaks"
    assert [frame_number(f) for f in frames] == list(range(1, len(frames) + 1))
    spacing = [b - a for a, b in itertools.pairwise(f.t for f in frames)]
    assert statistics.median(spacing) == pytest.approx(PERIOD_S, rel=0.2)
    assert frames_taken(daemon) == len(frames), "the camera went off with the conversation"


def test_a_camera_that_fails_leaves_the_session_going_audio_only_with_one_warning(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    # picamera2 is not installed on this machine: the camera cannot start.
    server, daemon = make_rig(with_camera("picamera2"), reply_seconds=0.3)
    for turn in (1, 2):  # the second press of the same session does not try again
        speech = chirp(1.0)
        pressed = speak_turn(loopback, daemon, speech)
        status = daemon.wait_until(turns_done(turn), 20, f"turn {turn} to end")
        assert_received_whole(
            server.log.activity_audio(after=pressed), speech, loopback.heard(pressed)
        )
    assert status["session_open"] and not status["camera"]
    assert "error" not in status["leds"]
    assert not received(server.log.entries(), "video")
    (failed,) = daemon.wait_for_records(LIVE_CAMERA="failed")
    assert failed["PRIORITY"] == 4 and "picamera2" in failed["LIVE_ERROR"]
    assert "Traceback" not in daemon.log()


def test_a_turn_over_before_the_session_is_ready_sends_no_frame_after_its_end(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(with_camera(), setup_delay=2.5, reply_seconds=0.3)
    speech = chirp(1.5)
    pressed = speak_turn(loopback, daemon, speech)
    released = time.monotonic()
    daemon.wait_until(turns_done(1), 20, "the turn to end")

    entries = server.log.entries()
    setup_done = next(e.t for e in entries if e.kind == "setup_complete")
    assert released < setup_done, "the whole turn waited in the outbox for the session"
    assert_received_whole(server.log.activity_audio(), speech, loopback.heard(pressed))
    kinds = [e.kind for e in entries if e.direction == "in"]
    assert "video" not in kinds[kinds.index("activity_end") :], "a frame went after the release"


def test_on_a_slow_link_frames_are_dropped_not_queued_and_none_goes_ahead_of_speech(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(
        with_camera(linger_s=0.5), reply_seconds=0.3, uplink_bytes_per_s=SLOW_LINK
    )
    speech = chirp(5.0)
    pressed = speak_turn(loopback, daemon, speech)
    daemon.wait_until(turns_done(1), 30, "the turn to end")
    daemon.wait_until(lambda s: not s["camera"], 5, "the camera to switch off")

    entries = server.log.entries()
    assert_received_whole(server.log.activity_audio(), speech, loopback.heard(pressed))
    assert_no_frame_went_ahead_of_speech(entries)
    frames = received(entries, "video")
    numbers = [frame_number(f) for f in frames]
    taken = frames_taken(daemon)
    assert numbers == sorted(set(numbers)), "frames in the order they were taken, none twice"
    assert 0 < len(frames) < taken, f"all {taken} frames went over a link with no room for them"
    # Dropped, not delayed: a frame that arrives was sent while it was (about) the newest, so
    # it is never a period late on top of its own time on the link.
    on_link_s = max(len(f.data or b"") for f in frames) * 4 / 3 / SLOW_LINK
    for n, frame in zip(numbers, frames, strict=True):
        newer = pressed + n * PERIOD_S  # frame n + 1 was taken no earlier than this
        late = frame.t - on_link_s - newer
        assert late < PERIOD_S, f"frame {n} arrived {late:.2f} s after a newer one was taken"
    activity_end = received(entries, "activity_end")[0].t
    assert all(f.t < activity_end for f in frames), "a frame of the turn went after its end"


def video_times(server: Any) -> list[float]:
    return [e.t for e in server.log.entries(direction="in") if e.kind == "video"]


def test_a_lower_rate_paces_the_frames_evenly_from_the_press(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 9: "at most one frame per second (configurable lower), evenly paced", the
    first "at the press itself"."""
    server, daemon = make_rig(
        {"camera": {"enabled": True, "source": "synthetic", "fps": 0.5}}, reply_seconds=0.3
    )
    pressed = speak_turn(loopback, daemon, chirp(5.0))
    daemon.wait_until(turns_done(1), 20, "the turn to end")
    arrived = [t - pressed for t in video_times(server)]
    assert len(arrived) == 3, f"frames at {arrived} s in a 5 s turn at 0.5 fps"
    assert arrived[0] < 0.5, "the first frame comes with the press"
    spacing = [b - a for a, b in itertools.pairwise(arrived)]
    assert all(s == pytest.approx(2.0, abs=0.3) for s in spacing), spacing


@pytest.mark.parametrize("linger_s", [3.0, 0.5], ids=["camera-lingering", "camera-off"])
def test_a_follow_up_press_has_its_first_frame_at_the_press(
    linger_s: float, loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 9: "in push-to-talk from the press to the release, the first frame taken at
    the press itself", for a follow-up press in the session still open too."""
    server, daemon = make_rig(
        {"camera": {"enabled": True, "source": "synthetic", "linger_s": linger_s}},
        reply_seconds=0.3,
    )
    speak_turn(loopback, daemon, chirp(1.5))
    daemon.wait_until(turns_done(1), 20, "the first turn to end")
    time.sleep(1.5)
    assert daemon.status()["camera"] == (linger_s > 1.5)
    first_turn = len(video_times(server))
    pressed = speak_turn(loopback, daemon, chirp(2.5))
    daemon.wait_until(turns_done(2), 20, "the second turn to end")
    arrived = [t - pressed for t in video_times(server)[first_turn:]]
    assert arrived and arrived[0] < 0.5, f"the second turn's frames came at {arrived} s"
    assert len(arrived) in (2, 3), arrived


def test_hands_free_on_a_slow_link_frames_are_dropped_and_speech_goes_whole(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 9: "If the network is slow, the newest frame wins: frames are dropped, never
    queued, and audio always goes first", in toggle mode (the slow-link test so far is a
    push-to-talk turn)."""
    server, daemon = make_rig(
        {
            **with_camera(linger_s=0.5),
            "button": {"mode": "toggle"},
            "conversation": {"silence_ms": 400},
            # Gated, not cancelled: what reaches the server is the microphone, unprocessed.
            "audio": {"chunk_ms": 20, "mic_during_playback": "gate"},
        },
        reply_seconds=0.3,
        uplink_bytes_per_s=SLOW_LINK,
    )
    pressed = time.monotonic()
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    speech = chirp(4.0)
    loopback.play(speech, MIC_RATE).wait()
    server.wait_for(lambda: "turn_complete" in server.log.kinds(direction="out"), 30)
    daemon.ctl("press")  # hang up
    daemon.wait_until(lambda s: not s["session_open"] and not s["camera"], 15, "the end")
    assert_received_whole(server.log.audio_in(), speech, loopback.heard(pressed))
    frames = received(server.log.entries(), "video")
    numbers = [frame_number(f) for f in frames]
    assert numbers == sorted(set(numbers)), "frames in the order they were taken, none twice"
    assert 0 < len(frames) < frames_taken(daemon), "every frame went over a link with no room"
    on_link_s = max(len(f.data or b"") for f in frames) * 4 / 3 / SLOW_LINK
    for n, frame in zip(numbers, frames, strict=True):
        late = frame.t - on_link_s - (pressed + n * PERIOD_S)  # frame n + 1 was taken by then
        assert late < PERIOD_S, f"frame {n} arrived {late:.2f} s after a newer one was taken"


def test_sigterm_with_the_camera_streaming_stops_cleanly_within_two_seconds(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 16, 3: "SIGTERM stops it cleanly within two seconds", here in a hands-free
    conversation with the microphone and the camera on; issue 9: the journal says the
    camera stopped."""
    server, daemon = make_rig(
        {"button": {"mode": "toggle"}, "camera": {"enabled": True, "source": "synthetic"}},
        reply_seconds=0.3,
    )
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening" and s["camera"], 10, "the camera")
    server.wait_for(lambda: len(video_times(server)) >= 2, 10)
    took = daemon.terminate(timeout=5)
    assert daemon.proc.returncode == 0
    assert took < 2.0, f"took {took:.2f} s to stop"
    assert len(daemon.records(LIVE_CAMERA="off")) == 1, "the camera's switch-off not said"
    assert "Traceback" not in daemon.log()
