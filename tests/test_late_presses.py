"""The home's trust: nothing recorded after a release, or before a press's pre-roll, leaves
the box, however late the appliance takes the press."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import Box, RealCaptureParts, config, running
from helpers import until
from test_appliance import busy_closing, kinds
from test_appliance import numbered as numbered_40_ms

from device.audio.capture import PRESS_LAG_S, RATE, Capture
from device.audio.earcons import earcon
from device.config import AudioConfig
from device.mic_feed import MicFeed
from device.outbox import Item, Outbox
from device.states import Earcon, SetupComplete

CHUNK_MS = 20


def numbered(n: int) -> bytes:
    """A chunk that says which it is."""
    return np.full(RATE * CHUNK_MS // 1000, 100 + n, dtype=np.int16).tobytes()


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
        now = time.monotonic()
        box.button.on_edge("pressed", now - 6.0)
        box.button.on_edge("released", now - 5.4)
        for n in range(150):  # the last 6 s, read between turns
            mic.record(numbered_40_ms(n), now - 6.0 + 0.04 * (n + 1))
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
