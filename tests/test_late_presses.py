"""The home's trust: nothing recorded after a release, or before a press's pre-roll, leaves
the box, however late the appliance takes the press."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fakes import (
    Box,
    DeviceFreeCapture,
    RealCaptureParts,
    config,
    running,
)
from helpers import until
from test_appliance import ask_and_hear_the_reply_begin, busy_closing, kinds
from test_appliance import numbered as numbered_40_ms

from device import appliance as appliance_module
from device.audio.capture import PRESS_LAG_S, RATE, Capture
from device.audio.earcons import earcon
from device.config import AudioConfig
from device.live.turn import UNSAVED_MOST_S, WireTurn, unsaved_limit
from device.live.wire import MIC_RATE
from device.mic_feed import MicFeed
from device.outbox import Item, Outbox
from device.states import (
    DeviceFailed,
    Earcon,
    SetupComplete,
    ToolsAtWork,
)

CHUNK_MS = 20


def numbered(n: int) -> bytes:
    """A chunk that says which it is."""
    return np.full(RATE * CHUNK_MS // 1000, 100 + n, dtype=np.int16).tobytes()


def pressed_6_s_ago(box: Box, mic: DeviceFreeCapture) -> None:
    """A 0.6 s press that began 6 s ago, and the 6 s of sound since, read between turns:
    the machine, busy closing the last session, gets to them only now."""
    now = time.monotonic()
    box.button.on_edge("pressed", now - 6.0)
    box.button.on_edge("released", now - 5.4)
    for n in range(150):
        mic.record(numbered_40_ms(n), now - 6.0 + 0.04 * (n + 1))


def number_of(chunk: bytes) -> int:
    return int(np.frombuffer(chunk, dtype=np.int16)[0]) - 100


def sent_numbers(box: Outbox) -> list[int]:
    items = iter(box.get_nowait, None)
    return [number_of(item.data) for item in items if item.kind == "audio"]  # type: ignore[misc]


async def test_a_press_taken_later_than_the_ring_reaches_sends_nothing_said_after_its_release() -> (
    None
):
    """A press and its release both taken more than the ring's PRESS_LAG_S after the release
    (the last session's close hung): the turn's words are lost, and said so in the journal;
    what the ring holds was all recorded after the release (the room, a conversation not
    meant for the box) and none of it goes to the service, not even its first chunk."""
    box = Outbox(hold_s=60)
    feed = MicFeed(AudioConfig(chunk_ms=CHUNK_MS), box)
    capture = Capture(feed.chunk, chunk_ms=CHUNK_MS, preroll=5)
    capture._loop = asyncio.get_running_loop()  # as start() would, without a device
    now = time.monotonic()
    step = CHUNK_MS / 1000
    count = round((PRESS_LAG_S + 3.0) / step)
    times = [now - count * step + step * n for n in range(count)]
    edge, release = times[10] - 0.005, times[30] - 0.005  # 0.4 s said to the box
    for n, t in enumerate(times):  # read between turns, kept in the ring
        capture._deliver(numbered(n), t)
    held = capture.forward(since=edge, until=release)
    feed.start(held, until=release)
    await asyncio.sleep(0)
    after_release = [n for n in sent_numbers(box) if times[n] - step >= release]
    assert after_release == []


async def test_a_release_taken_after_the_chunk_holding_it_sends_no_chunk_after_it() -> None:
    """The loop busy as the button came up (a slow journal write, the collector): the chunk
    holding the release arrived before the machine took the release. The turn ends at once,
    without waiting for, and sending, the next chunk: all of that one was heard after the
    button came up."""
    box = Outbox(hold_s=60)
    feed = MicFeed(AudioConfig(chunk_ms=CHUNK_MS), box)
    feed.start([])
    step = CHUNK_MS / 1000
    release = 1.0 + 3.5 * step
    for n in range(5):  # chunk 3 holds the release; read before the machine took it
        feed.chunk(numbered(n), 1.0 + n * step)
    loop = asyncio.get_running_loop()
    loop.call_later(step, feed.chunk, numbered(5), 1.0 + 5 * step)  # the next, still coming
    await feed.finish(release)
    await asyncio.sleep(2 * step)
    sent = sent_numbers(box)
    assert 5 not in sent, sent


@pytest.mark.parametrize("read_first", [25, 40, 80])
async def test_two_quick_presses_taken_late_each_send_their_own_words_only(read_first: int) -> None:
    """Two presses and releases while the box was busy, taken late one after the other; the
    device read before the first was taken up to its release's chunk or not, or past the
    second press: each turn sends its pre-roll and its words up to the chunk holding its
    release, nothing said between the two turns beyond the second's pre-roll, none twice."""
    box = Outbox(hold_s=60)
    feed = MicFeed(AudioConfig(chunk_ms=CHUNK_MS, preroll_ms=100), box)
    capture = Capture(feed.chunk, chunk_ms=CHUNK_MS, preroll=feed.preroll_chunks)
    capture._loop = asyncio.get_running_loop()
    step = CHUNK_MS / 1000
    now = time.monotonic()
    times = [now - 2.0 + step * n for n in range(160)]
    turns = [(times[10] - 0.005, times[30] - 0.005), (times[50] - 0.005, times[70] - 0.005)]
    for n in range(read_first):
        capture._deliver(numbered(n), times[n])
    sent: list[list[int]] = []
    read = read_first
    for edge, release in turns:
        feed.start(capture.forward(since=edge, until=release), until=release)
        for n in range(read, read + 30):  # the reader goes on
            capture._deliver(numbered(n), times[n])
            await asyncio.sleep(0)
        read += 30
        capture.finish(release)
        await feed.finish(release)
        capture.hold()
        sent.append(sent_numbers(box))
    assert sent == [list(range(5, 31)), list(range(45, 71))]


async def test_a_question_lost_whole_sends_no_empty_turn_and_the_person_hears_it_failed(
    tmp_path: Path,
) -> None:
    """Pressed and released while the last session's close hung for seconds: nothing of
    the question is left. The box opened a session and sent activityStart and activityEnd
    with no audio between, went on to "thinking", and the service answered what it made of
    an empty turn (or the reply timer ended it in the error state)."""
    async with running(tmp_path, config(audio={"earcons": True}),
                       parts_class=RealCaptureParts) as box:  # fmt: skip
        mic = await busy_closing(box)
        opened = list(box.link.opened)
        pressed_6_s_ago(box, mic)
        box.speaker.clear()  # the last session's earcons
        box.camera.hang.set()  # the close is over: the press and release are taken now
        await box.settle()
        assert kinds(box) == []
        assert box.link.opened == opened, "a session opened for an empty turn"
        assert box.state == "idle"
        assert bytes(box.speaker.buffered) == earcon(Earcon.ERROR), "not told it failed"


async def test_a_frame_taken_after_the_release_while_the_loop_was_held_up_is_not_sent(
    tmp_path: Path,
) -> None:
    """A short question asked while the box connected, the loop held up as the button came
    up (the connection's own setup, the collector): the release's edge, setupComplete and
    the camera's next frame wait together. The state change yields to the sender, and the
    frame taken after the person let go went out: a picture of the room with nobody asking.
    The camera feed stops delivering frames once stop_frames() is called, as the fake's
    `framing` says."""
    async with running(tmp_path) as box:
        await box.ctl("press")
        assert box.camera.framing and box.state == "connecting"
        sent: list[Item] = []

        async def sender() -> None:  # the link's: it drains the outbox once connected
            while True:
                sent.append(await box.link.outbox.get())

        draining = asyncio.create_task(sender())
        try:
            await until(lambda: not len(box.link.outbox))
            released = time.monotonic()
            loop = asyncio.get_running_loop()
            loop.call_soon(box.link.deliver, SetupComplete)
            loop.call_soon(box.button.on_edge, "released", released)
            loop.call_soon(_frame, box, b"after the release", released + 0.05)
            await asyncio.sleep(0)  # the three run: the heartbeat goes behind them
            await box.settle()
            await until(lambda: not len(box.link.outbox))
        finally:
            draining.cancel()
        assert box.state == "thinking"
        assert "activity_end" in [item.kind for item in sent]
        assert b"after the release" not in [item.data for item in sent]


def _frame(box: Box, jpeg: bytes, taken: float) -> None:
    """The camera feed's delivery of a frame it took: only while frames are wanted (it
    looks right before it hands one on)."""
    if box.camera.framing:
        box.camera.on_frame(jpeg, taken)


SPEECH = b"\x00\x10" * 640  # 40 ms loud enough to be speech
SECOND = b"\x01\x00" * MIC_RATE


# --- push-to-talk: a press taken late ---------------------------------------------------


async def test_a_question_released_just_before_its_press_is_taken_still_goes_out(
    tmp_path: Path,
) -> None:
    """A short question asked while the last session's close held the loop for a moment:
    its release came before the press was taken, but well within what the ring keeps.
    Every word is there: it goes to the service, not the error earcon for a lost one."""
    async with running(tmp_path, config(audio={"earcons": True}),
                       parts_class=RealCaptureParts) as box:  # fmt: skip
        mic = await busy_closing(box)
        opened = list(box.link.opened)
        now = time.monotonic()
        box.button.on_edge("pressed", now - 1.0)
        box.button.on_edge("released", now - 0.4)
        for n in range(25):  # the last second, read between turns
            mic.record(numbered_40_ms(n), now - 1.0 + 0.04 * (n + 1))
        box.speaker.clear()  # the last session's earcons
        box.camera.hang.set()  # the close is over: the press and release are taken now
        await box.settle()
        assert len(box.link.opened) == len(opened) + 1, "no session for the question"
        box.link.deliver(SetupComplete)
        await box.settle()
        sent = kinds(box)
        assert sent[0] == "activity_start" and "audio" in sent, sent
        assert sent[-1] == "activity_end", sent
        assert earcon(Earcon.ERROR) not in bytes(box.speaker.buffered), "told it failed"


async def test_a_press_over_the_reply_taken_late_still_silences_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Push-to-talk over the reply, the press and its release both taken late (longer ago
    than the ring keeps: the loop held up as the reply played): over the reply a press
    counts from when it silences the box, so it is not a question lost. It stops the reply
    and sends a turn; the error earcon and the reply playing on were a box that would not
    be interrupted."""
    async with running(tmp_path, config(audio={"earcons": True})) as box:
        await ask_and_hear_the_reply_begin(box)
        await box.settle()
        assert box.state == "speaking"
        box.speaker.clear()
        kinds(box)  # what went out so far: the question
        now = time.monotonic()
        box.button.on_edge("pressed", now + 0.01)
        box.button.on_edge("released", now + 0.6)
        late = SimpleNamespace(monotonic=lambda: time.monotonic() + 5.0)
        monkeypatch.setattr(appliance_module, "time", late)  # taken 5 s after the edges
        await box.settle()
        assert "activity_start" in kinds(box)
        assert box.state != "speaking", box.states()
        assert earcon(Earcon.ERROR) not in bytes(box.speaker.buffered), "told it failed"


async def test_a_stop_waits_for_the_link_to_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """systemd stops the box mid-conversation, the service slow to take the close: the
    stop waits for it (the camera switching off meanwhile), so the session is not left
    open at the service, and no task is left behind to say so in the journal."""
    caplog.set_level(logging.WARNING, "device.appliance")
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        close = box.link.close

        async def slow_close() -> None:
            await asyncio.sleep(0.3)
            await close()

        box.link.close = slow_close  # type: ignore[method-assign]
    assert box.link.closed == 1, "the session left open at the stop"
    left = [r.getMessage() for r in caplog.records if "left behind" in r.getMessage()]
    assert not any("live-close" in line for line in left), left


async def test_a_question_lost_whole_is_said_lost_in_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The error earcon is all the person hears; the owner reading the journal later is
    told why the box did not answer: the whole question was lost, and how long it was."""
    caplog.set_level(logging.WARNING, "device.appliance")
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        pressed_6_s_ago(box, mic)
        box.camera.hang.set()
        await box.settle()
        assert box.state == "idle"
    said = [r.getMessage() for r in caplog.records if r.name == "device.appliance"]
    assert any("the whole question (0.6 s) is lost" in line for line in said), said


async def test_a_press_held_past_longest_turn_s_ends_the_turn_whoever_speaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Push-to-talk, the button held down with someone talking on (a TV, a stuck button
    in a busy room): the turn ends at `longest_turn_s`, not at the far longer
    `longest_conversation_s` of hands-free, and the journal names the setting."""
    caplog.set_level(logging.INFO, "device.appliance")
    cfg = config(conversation={"longest_turn_s": 0.4, "longest_conversation_s": 600.0})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")  # and never released
        box.link.deliver(SetupComplete)
        await box.settle()
        assert box.state == "listening"
        deadline = time.monotonic() + 3.0
        while box.state == "listening" and time.monotonic() < deadline:
            box.mic.record(SPEECH)
            await box.settle()
            await asyncio.sleep(0.04)
        assert box.state == "thinking", "the held press went on past longest_turn_s"
        await box.settle()
        assert "activity_end" in kinds(box)
    said = [r.getMessage() for r in caplog.records if r.name == "device.appliance"]
    assert any("[conversation] longest_turn_s 0.4 s" in line for line in said), said


async def test_a_tool_at_its_own_timeout_still_has_the_reply_time_to_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hands-free, a tool slow to the end of its `[tools] timeout_s`: its answer (a
    timeout's error) goes out then, and the model has `reply_timeout_s` more to speak.
    The box gives up only after both, and the journal names the two settings."""
    caplog.set_level(logging.INFO, "device.appliance")
    cfg = config(
        button={"mode": "toggle"},
        tools={"timeout_s": 0.3},
        conversation={"reply_timeout_s": 1.0},
    )
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ToolsAtWork, calls=1)
        await box.settle()
        assert box.state == "thinking"
        await asyncio.sleep(0.6)  # past the tool's own timeout, within the reply's time
        assert box.state == "thinking", "given up as the tool's answer went out"
        await asyncio.sleep(1.2)
        assert box.state != "thinking"
    said = [r.getMessage() for r in caplog.records if r.name == "device.appliance"]
    setting = "[tools] timeout_s + [conversation] reply_timeout_s 1.3 s"
    assert any(f"Timeout tool: {setting}" in line for line in said), said


# --- what a new connection sends again -------------------------------------------------


async def test_a_late_press_refused_for_a_failed_speaker_is_not_said_a_lost_question(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The speaker failed while the box was busy closing a session, and a press and its
    release waited behind the close. The machine refuses any press while a device is
    failing (the error earcon), yet the journal said "the whole question (0.6 s) is lost",
    sending the owner after a slow box instead of the speaker."""
    caplog.set_level(logging.WARNING, "device.appliance")
    cfg = config(audio={"reopen_s": 60.0})
    async with running(tmp_path, cfg, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        box.appliance.post(DeviceFailed("speaker", "the fake went"))
        pressed_6_s_ago(box, mic)
        box.camera.hang.set()
        await box.settle()
        assert "speaker" in box.appliance.status()["faults"]
    said = [r.getMessage() for r in caplog.records if "the press was taken" in r.getMessage()]
    assert not said, said


def test_a_press_past_what_is_kept_says_the_seconds_lost_to_two_figures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A press held 2.5 s past what is kept to send again, then a switch: the journal says
    its first 2.5 s are lost, not "2 s" (nor "0 s" for a press a chunk past it)."""
    half = b"\x01\x00" * (MIC_RATE // 2)
    turn = WireTurn(unsaved_limit=unsaved_limit(3600))
    turn.sent("activity_start")
    for _ in range(round(UNSAVED_MOST_S * 2) + 5):
        turn.spoke(half)
    with caplog.at_level(logging.WARNING):
        turn.words_to_repeat()
    assert "its first 2.5 s are lost" in caplog.text, caplog.text
