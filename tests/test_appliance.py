"""The real Appliance in-process on fake parts: press, release, reply, barge-in, drain,
timers, device faults, the watchdog and start-up, in milliseconds each."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import (
    CHUNK,
    QUIET,
    Box,
    DeviceFreeCapture,
    FakeParts,
    RealCaptureParts,
    config,
    running,
)
from helpers import LATIN1_WORDS, until

from device import logs
from device.appliance import MIC_START_TIMEOUT_S, PRESSES_WAITING, Appliance
from device.control import AlreadyRunning
from device.states import (
    ConnectFailed,
    ConnectionLost,
    DeviceFailed,
    DeviceRecovered,
    EndConversation,
    Interrupted,
    Reconnected,
    Reconnecting,
    ReplyAudio,
    SetupComplete,
    Timeout,
    Timer,
    ToolsAtWork,
    TurnComplete,
)
from device.workers import WORKERS

REPLY = b"\x01\x02" * 2400  # 100 ms at 24 kHz
#: 40 ms of a soft voice, or a normal one through a low-gain HAT: -46 dBFS, under the
#: default `speech_dbfs` (-40) and above the default `pause_below_dbfs` (-50).
SOFT = np.full(640, 164, dtype=np.int16).tobytes()
#: `end_after_silence_s` for the silence tests, below the configuration's bound of 1 s
#: (dataclasses.replace does not validate) so that they take a fraction of a second.
SILENCE_S = 0.25


def kinds(box: Box) -> list[str]:
    return [item.kind for item in box.link.sent()]


async def press_and_speak(box: Box, chunks: int = 3) -> None:
    await box.ctl("press")
    for _ in range(chunks):
        box.mic.record(CHUNK)
    await box.settle()


async def ask_and_hear_the_reply_begin(box: Box) -> None:
    """A question asked (press, words, release) and the first part of its reply playing."""
    await press_and_speak(box)
    box.link.deliver(SetupComplete)
    await box.control.ask("release")
    box.mic.record(CHUNK)
    await box.settle()
    box.link.deliver(ReplyAudio, pcm=REPLY)


async def test_a_push_to_talk_turn_from_press_to_idle(tmp_path: Path) -> None:
    async with running(tmp_path) as box:
        box.mic.record(QUIET)  # the moment before the press: the pre-roll
        await press_and_speak(box)
        assert box.link.opened == [1]
        box.link.deliver(SetupComplete)
        await box.settle()
        await box.control.ask("release")
        box.mic.record(CHUNK)  # the chunk holding the release instant
        await box.settle()
        assert box.mic.finished_at is not None, "the capture told to hand over the rest at once"
        sent = box.link.sent()
        assert [item.kind for item in sent] == ["activity_start"] + ["audio"] * 5 + [
            "activity_end"
        ]
        assert [item.data for item in sent[1:6]] == [QUIET, CHUNK, CHUNK, CHUNK, CHUNK]
        box.link.deliver(ReplyAudio, pcm=REPLY)
        box.link.deliver(ReplyAudio, pcm=REPLY)
        box.link.deliver(TurnComplete)
        await box.settle()
        assert box.state == "speaking" and bytes(box.speaker.buffered).count(REPLY) == 2
        box.speaker.play()
        await until(lambda: box.state == "idle")
        assert box.states() == ["connecting", "listening", "thinking", "speaking", "idle"]
        assert box.appliance.machine.session_open, "kept for a follow-up until idle_timeout_s"
        assert box.appliance.status()["turns"][-1]["turn"] == 1


async def test_a_turn_that_fails_ends_at_the_error_not_at_the_next_press(
    tmp_path: Path,
) -> None:
    """Its summary line came at the next press, with a turn_ms reaching back to it: hours,
    after a night without network."""
    async with running(tmp_path) as box:
        await press_and_speak(box)
        box.link.deliver(ConnectFailed, reason="DNS: cannot resolve the Live API host")
        await box.settle()
        assert box.state == "error"
        (turn,) = box.appliance.status()["turns"]
        assert turn["turn"] == 1 and turn["turn_ms"] is not None


async def test_what_the_person_hears_goes_before_the_leds_and_the_journal(
    tmp_path: Path,
) -> None:
    """A reply's first audio, and a barge-in's silence, reach the speaker before the
    state's LEDs, journal line and systemd status are done (they took a few tenths of a
    millisecond in front of every reply's first sample)."""
    async with running(tmp_path) as box:
        seen: list[tuple[str, bool, int]] = []
        show = box.appliance.leds.show

        async def spy(state: str) -> None:
            seen.append((state, REPLY in box.speaker.buffered, box.speaker.cleared))
            await show(state)

        box.appliance.leds.show = spy  # type: ignore[method-assign]
        await press_and_speak(box)
        box.link.deliver(SetupComplete)
        await box.control.ask("release")
        box.mic.record(CHUNK)
        await box.settle()
        cleared = box.speaker.cleared
        box.link.deliver(ReplyAudio, pcm=REPLY)
        await box.settle()
        assert seen[-1] == ("speaking", True, cleared), "fed before the LEDs changed"
        box.link.deliver(Interrupted)
        await box.settle()
        assert seen[-1][0] != "speaking" and seen[-1][2] == cleared + 1, "silent first"


async def test_a_press_during_a_reply_silences_it_and_its_rest_is_never_heard(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as box:
        await ask_and_hear_the_reply_begin(box)
        await box.settle()
        assert REPLY in box.speaker.buffered
        await box.ctl("press")  # the person talks over the reply
        assert box.speaker.cleared and REPLY not in box.speaker.buffered, "silence at once"
        box.link.deliver(ReplyAudio, pcm=REPLY)  # still on its way when the press came
        box.link.deliver(ReplyAudio, pcm=REPLY, talked_over=True)
        box.link.deliver(TurnComplete, talked_over=True)
        await box.settle()
        assert REPLY not in box.speaker.buffered and box.state == "listening"


async def test_hands_free_an_unanswered_interruption_still_ends_the_conversation(
    tmp_path: Path,
) -> None:
    cfg = config(button={"mode": "toggle"}, audio={"mic_during_playback": "gate"})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ReplyAudio, pcm=REPLY)
        await box.settle()
        assert box.camera.running and box.state == "speaking"
        assert not box.mic.closely, "gated: nothing it hears while it speaks goes out..."
        assert box.mic.muted, "... so the capture keeps it to itself"
        box.link.deliver(Interrupted)  # the person talked over it, and then said nothing
        await box.settle()
        assert box.state == "listening" and REPLY not in box.speaker.buffered
        assert not box.mic.muted
        assert "silence" in box.appliance.status()["timers"]
        box.appliance.post(Timeout(Timer.SILENCE))
        await box.settle()
        assert box.state == "idle" and box.link.closed == 1
        assert not box.camera.running and not box.mic.forwarding
        before = kinds(box)
        box.mic.record(CHUNK)
        assert kinds(box) == before == [], "nothing more from the microphone"


async def test_hands_free_each_exchange_has_its_turn_line_from_the_last_word_to_the_reply(
    tmp_path: Path,
) -> None:
    """A conversation was one turn line at its end, with no reply latency in it."""
    cfg = config(button={"mode": "toggle"}, audio={"mic_during_playback": "gate"})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        loop = asyncio.get_running_loop()
        for exchange in range(2):
            await asyncio.sleep(1.0)  # they listen, think, then speak: not the reply's wait
            spoke = loop.time()
            box.mic.record(CHUNK, spoke)  # the person's last word
            box.mic.record(QUIET)
            await asyncio.sleep(0.05)
            box.link.deliver(ReplyAudio, pcm=REPLY)
            box.link.deliver(TurnComplete)
            await box.settle()
            answered = box.appliance.turns.current
            assert answered is not None and answered.released == spoke
            box.speaker.play()
            await until(lambda: box.state == "listening")
            turns = box.appliance.status()["turns"]
            assert [t["turn"] for t in turns] == list(range(1, exchange + 2))
            assert 50 <= turns[-1]["release_to_first_reply_ms"] < 1000
        box.appliance.post(Timeout(Timer.SILENCE))  # nothing more said: it hangs up
        await box.settle()
        assert box.state == "idle" and len(box.appliance.status()["turns"]) == 2


async def test_while_it_speaks_with_the_microphone_open_talk_over_is_read_at_once(
    tmp_path: Path,
) -> None:
    cfg = config(button={"mode": "toggle"}, audio={"mic_during_playback": "open"})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        assert not box.mic.closely, "listening: held-back silence may be read less often"
        box.link.deliver(ReplyAudio, pcm=REPLY)
        await box.settle()
        assert box.state == "speaking" and box.mic.closely, "a person may talk over it"
        assert not box.mic.muted
        box.link.deliver(Interrupted)
        await box.settle()
        assert box.state == "listening" and not box.mic.closely


async def test_a_new_reply_replaces_the_rest_of_one_the_service_had_sent_whole(
    tmp_path: Path,
) -> None:
    """The service no longer interrupts a reply it has finished sending: the person who
    talked over it hears the answer to what they said at once, not the stale rest first."""
    old, new = b"\x01\x02" * 24000, b"\x03\x04" * 2400  # 1 s still playing, then 100 ms
    cfg = config(button={"mode": "toggle"})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ReplyAudio, pcm=old)
        box.link.deliver(TurnComplete)  # all of it came; it plays on
        await box.settle()
        assert box.state == "speaking" and old in box.speaker.buffered
        box.link.deliver(ReplyAudio, pcm=new, replaces=True)  # answers words said over it
        await box.settle()
        assert bytes(box.speaker.buffered) == new, "the old rest dropped, the new one queued"
        await box.settle()
        assert box.state == "speaking", "clearing the old reply is not the new one's end"
        box.link.deliver(TurnComplete)
        await box.settle()
        assert box.state == "speaking"
        box.speaker.play()
        await until(lambda: box.state == "listening")
        assert box.speaker.heard == new


@pytest.mark.parametrize("more_to_come", [True, False], ids=["in-progress", "after-a-tool"])
async def test_the_model_going_on_is_not_taken_for_a_new_reply(
    tmp_path: Path, more_to_come: bool
) -> None:
    """interactionStatus IN_PROGRESS at turnComplete, or the Live API's order around a
    tool (audio, toolCall, turnComplete, then a new turn with the tool's answer): the
    model goes on, and what it said first is heard to its end."""
    cfg = config(button={"mode": "toggle"})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ReplyAudio, pcm=REPLY)
        box.link.deliver(TurnComplete, more_to_come=more_to_come)
        box.link.deliver(ReplyAudio, pcm=REPLY[::-1])
        await box.settle()
        assert bytes(box.speaker.buffered).endswith(REPLY + REPLY[::-1])
        assert not box.speaker.cleared


async def test_speech_keeps_a_hands_free_conversation_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Speech is told at most every SPEECH_EVERY_S: well within the shortened silence.
    monkeypatch.setattr("device.mic_feed.SPEECH_EVERY_S", SILENCE_S / 5)
    cfg = config(button={"mode": "toggle"}, conversation={"end_after_silence_s": SILENCE_S})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        for _ in range(20):  # someone talking for twice the silence allowed
            box.mic.record(CHUNK)
            await asyncio.sleep(SILENCE_S / 10)
        assert box.state == "listening" and box.appliance.machine.session_open
        for _ in range(10):
            box.mic.record(QUIET)
        # The session closes as idle shows (the close may land a moment after).
        await until(lambda: box.state == "idle" and box.link.closed == 1, within=3)


async def test_events_of_a_closed_session_cannot_touch_the_next(tmp_path: Path) -> None:
    cfg = config(button={"mode": "toggle"})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.ctl("press")  # hang up ...
        await box.ctl("press")  # ... and open again at once
        assert box.link.opened == [1, 2]
        box.link.deliver(ConnectionLost, session=1, reason="close code 1011")  # the old one's
        box.link.deliver(EndConversation, session=1)
        await box.settle()
        assert box.state == "connecting" and box.appliance.machine.session_open
        box.link.deliver(SetupComplete)
        await box.settle()
        assert box.state == "listening"


async def test_a_vanished_microphone_is_an_error_until_it_is_back(tmp_path: Path) -> None:
    cfg = config(audio={"reopen_s": 0.1})
    async with running(tmp_path, cfg) as box:
        await press_and_speak(box)
        box.mic.vanish()  # told at once, not found at the keeper's next look
        # The session closes as the error shows (the close may land a moment after).
        await until(lambda: box.state == "error" and box.link.closed == 1, within=3)
        assert "microphone" in box.appliance.status()["faults"]
        await box.ctl("press")
        assert box.state == "error" and box.link.opened == [1], "no session without a mic"
        box.mic.alive = True
        await until(lambda: box.state == "idle", within=3)
        await box.ctl("press")
        assert box.link.opened == [1, 2]


def assert_no_task_left_behind(caplog: pytest.LogCaptureFixture) -> None:
    """The appliance's shutdown names every task still pending; here the test's own is."""
    this = asyncio.current_task()
    assert this is not None
    left = [r.getMessage() for r in caplog.records if "tasks left behind" in r.getMessage()]
    assert all(line.endswith(f": {this.get_name()}") for line in left), left


async def test_a_stop_does_not_wait_for_a_speaker_stuck_in_its_driver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while the speaker's driver hangs in a close: the box still stops (in a
    second, the worker pool's limit), not at systemd's TimeoutStopSec. The call left to
    the pool is the keeper's, not a task nobody owns ("tasks left behind")."""
    driver = threading.Event()
    release = threading.Timer(6, driver.set)  # a hang in this test ends, to fail it
    release.start()
    try:
        async with running(tmp_path) as box:
            # As Playback's: stop() closes the stream too, and the close hangs.
            box.speaker.close_stream = driver.wait  # type: ignore[method-assign]
            box.speaker.stop = driver.wait  # type: ignore[method-assign]
            stopping = time.monotonic()
        stopped = time.monotonic()
    finally:
        release.cancel()
        driver.set()
    assert stopped - stopping < 3, "the stop waited for the driver"
    assert box.mic.opened is False, "the microphone is closed all the same"
    assert_no_task_left_behind(caplog)


async def test_a_speaker_missing_at_start_is_no_microphone_to_wait_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The speaker fails to open at boot: the keeper closes the microphone with it (both
    are tried again together). Start-up waited five seconds for that closed microphone,
    then said "the microphone delivered nothing", sending the owner to the wrong device."""

    def speaker_gone(parts: FakeParts) -> None:
        parts.made["speaker"].alive = False
        mic = parts.made["mic"]
        mic.start = lambda loop=None: setattr(mic, "opened", True)  # slow to deliver

    started = time.monotonic()
    async with running(tmp_path, prepare=speaker_gone) as box:
        ready_s = time.monotonic() - started
        assert box.state == "error"
    assert ready_s < MIC_START_TIMEOUT_S, "start-up waited for a microphone it had closed"
    assert "delivered nothing" not in caplog.text


async def test_a_stop_during_start_up_does_not_wait_for_the_devices(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while the speaker's driver hangs in its open (start-up would wait ten
    seconds for it, then five for the microphone): the box stops at once, never says
    READY, and its LEDs go dark."""
    driver = threading.Event()
    release = threading.Timer(8, driver.set)  # a hang in this test ends, to fail it
    release.start()
    parts = FakeParts(config(), tmp_path)
    appliance = Appliance(parts.cfg, parts)
    opening = threading.Event()

    def hang(loop: object = None) -> None:
        opening.set()
        driver.wait()

    parts.made["speaker"].start = hang
    task = asyncio.create_task(appliance.run(), name="appliance")
    try:
        await until(opening.is_set)
        stopping = time.monotonic()
        appliance._on_stop_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            await task
        stopped = time.monotonic()
    finally:
        release.cancel()
        driver.set()
    assert stopped - stopping < 2, "the stop waited for start-up"
    messages = parts.made["notifier"].messages
    assert "STOPPING=1" in messages and "READY=1" not in messages
    assert parts.made["leds"].closed and not parts.made["mic"].opened
    assert_no_task_left_behind(caplog)


async def test_presses_faster_than_their_earcons_queue_a_second_of_beeps_at_most(
    tmp_path: Path,
) -> None:
    """Each press and release answers with an earcon; a script hammering `ctl press`
    must not queue minutes of them."""
    cfg = config(audio={"earcons": True})
    async with running(tmp_path, cfg) as box:
        for _ in range(200):
            await box.control.ask("press")
            await box.control.ask("release")
        await box.settle()
        assert 0 < box.speaker.buffered_ms < 1000 + 500  # the bound and one earcon past it


async def test_presses_while_the_microphone_is_unplugged_beep_nothing_when_it_is_back(
    tmp_path: Path,
) -> None:
    """The keeper closes the speaker with the microphone: presses meanwhile cannot be
    heard, and their error beeps (up to a second of them) sounded as the owner plugged
    the card back, on a box that was fine again."""
    cfg = config(audio={"earcons": True, "reopen_s": 0.1})
    async with running(tmp_path, cfg) as box:
        box.mic.vanish()
        await until(lambda: box.state == "error")
        for _ in range(5):
            await box.ctl("press")
            await box.ctl("release")
        box.mic.alive = True
        await until(lambda: box.state == "idle", within=3)
        assert box.speaker.opened
        assert bytes(box.speaker.buffered) == b"", "stale error beeps at recovery"


async def test_a_flood_of_ctl_presses_is_refused_past_its_bound_and_the_watchdog_is_fed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each `ctl press` is answered at once; a release waits for the microphone's last
    chunk. A client sending them as fast as it can queued them without end, and the
    watchdog's heartbeat waited behind them until systemd killed the box."""
    async with running(tmp_path, watchdog_s=0.1) as box:
        await until(lambda: box.notifier.count("WATCHDOG=1") >= 1)
        taken = refused = 0
        for _ in range(2000):
            press = await box.control.ask("press")
            release = await box.control.ask("release")
            if press["ok"]:
                taken += 1
                assert release["ok"], "a press taken can always end"
            else:
                refused += 1
                assert "busy" in press["error"]
        assert refused and taken <= PRESSES_WAITING + 1, "the queue stayed short"
        await survives_the_flood(box, caplog, chunks=5)
        assert (await box.control.ask("press"))["ok"], "taken again once the queue is short"


async def survives_the_flood(box: Box, caplog: pytest.LogCaptureFixture, chunks: int) -> None:
    """After a flood of presses: the watchdog is fed again (behind at most PRESSES_WAITING
    events, each release waiting out its 0.28 s), one journal line said so, and the machine
    catches up as the releases' last chunks come."""
    fed = box.notifier.count("WATCHDOG=1")
    await until(lambda: box.notifier.count("WATCHDOG=1") > fed, within=6)
    bounds = [r for r in caplog.records if getattr(r, "LIVE_BOUND", None) == "control_presses"]
    assert len(bounds) == 1, "one journal line for the flood"
    for _ in range(chunks):
        box.mic.record(CHUNK)
        await box.settle()


async def test_a_text_turn_the_box_cannot_say_now_is_refused_not_dropped(tmp_path: Path) -> None:
    """A hook must hear it: words into someone's held question would land inside it, and
    a box without its microphone or speaker drops them."""
    async with running(tmp_path) as box:
        await box.ctl("press")
        held = await box.control.ask("text", text="The washing is done")
        assert not held["ok"] and "holding the button" in held["error"]
        await box.ctl("release")
        box.mic.record(CHUNK)  # the release's last chunk
        await box.settle()
        box.mic.vanish()
        await until(lambda: box.state == "error")
        broken = await box.control.ask("text", text="The washing is done")
        assert not broken["ok"] and "cannot talk now: microphone" in broken["error"]
        assert [item.kind for item in box.link.sent()].count("text") == 0


async def test_a_text_is_judged_behind_a_press_or_a_failure_not_yet_taken(
    tmp_path: Path,
) -> None:
    """A button's edge (from gpiozero's thread) or a device's failure still queued when a
    hook's text came: the text was answered "ok" from the state before them, then went
    into the person's held question, or was dropped with only the error beep."""
    async with running(tmp_path) as box:
        box.appliance._on_button("pressed", time.monotonic())  # queued, not yet taken
        held = await box.control.ask("text", text="The washing is done")
        assert not held["ok"] and "holding the button" in held["error"], held
        box.link.deliver(SetupComplete)
        box.mic.record(CHUNK)
        await box.settle()
        assert "text" not in [item.kind for item in box.link.sent()]
    async with running(tmp_path / "second") as box:
        box.appliance.post(DeviceFailed("microphone", "unplugged"))  # queued
        broken = await box.control.ask("text", text="The washing is done")
        assert not broken["ok"] and "cannot talk now: microphone" in broken["error"], broken


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (os.fsdecode(LATIN1_WORDS), "not UTF-8 text"),  # a hook that sends the escapes itself
        ("\x00", "no words in it"),  # a C string's end, a buggy template
        ("\u200b\x1b\r\n", "no words in it"),  # nothing to see, nothing to say
    ],
)
async def test_the_daemon_refuses_a_text_turn_without_words_to_say(
    tmp_path: Path, text: str, why: str
) -> None:
    """It was taken (ok) and the box woke up and answered nothing in particular, aloud;
    the hook is told why instead, and nothing goes out."""
    async with running(tmp_path) as box:
        reply = await box.control.ask("text", text=text)
        assert not reply["ok"] and why in reply["error"], reply
        await box.settle()
        assert box.state == "idle" and not box.link.opened


async def test_a_hooks_conversation_starts_the_camera_for_the_room_not_the_boxs_own_beep(
    tmp_path: Path,
) -> None:
    """Hands-free `ctl text` to what may be an empty room: the camera waits for someone.
    The box's own beep or reply, loud at its microphone, is not someone."""
    async with running(tmp_path, config(button={"mode": "toggle"})) as box:
        assert (await box.control.ask("text", text="The washing is done"))["ok"]
        await until(lambda: box.state == "connecting")
        box.link.deliver(SetupComplete)
        await box.settle()
        assert box.state == "listening" and not box.camera.framing
        box.speaker.busy = True  # its own sound at the microphone
        box.mic.record(CHUNK)
        await box.settle()
        assert not box.camera.framing
        box.speaker.busy = False
        await asyncio.sleep(0.55)  # speech is reported at most every half second
        box.mic.record(CHUNK)  # someone in the room
        await box.settle()
        assert box.camera.framing


async def test_a_chattering_button_is_bounded_like_ctl_and_its_edges_still_pair_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pin that chatters faster than the machine takes its edges (each release waits
    for the microphone's last chunk) queued them without end, past the watchdog."""
    async with running(tmp_path, watchdog_s=0.1) as box:
        await until(lambda: box.notifier.count("WATCHDOG=1") >= 1)
        for _ in range(2000):
            box.button.on_edge("pressed", 0.0)
            box.button.on_edge("released", 0.0)
        await survives_the_flood(box, caplog, chunks=10)
        assert not box.appliance.machine.held, "every press taken was released"


async def test_presses_while_connecting_wait_as_one_turn_not_one_each(tmp_path: Path) -> None:
    """Push-to-talk before the service answers (connecting, reconnecting for up to
    `reconnect_for_s`): each press and release the machine took queued a turn of its own,
    without a bound, and the service was sent (and answered) every one of them."""
    async with running(tmp_path) as box:

        async def microphone() -> None:  # a chunk every 40 ms, as a card delivers them
            while True:
                box.mic.record(CHUNK)
                await asyncio.sleep(0.04)

        delivering = asyncio.create_task(microphone())
        try:
            for _ in range(30):
                now = time.monotonic()
                box.button.on_edge("pressed", now)
                box.button.on_edge("released", now + 0.001)
                await box.settle()
        finally:
            delivering.cancel()
        assert box.state == "connecting"
        sent = kinds(box)
        assert sent.count("activity_start") == sent.count("activity_end") == 1
        assert sent[0] == "activity_start" and sent[-1] == "activity_end"
        assert sent.count("audio") >= 30, "every press's audio is in the one turn"


async def test_the_watchdog_is_fed_only_while_the_machine_answers(tmp_path: Path) -> None:
    cfg = config(button={"mode": "toggle"})
    async with running(tmp_path, cfg, watchdog_s=0.1) as box:
        await until(lambda: box.notifier.count("WATCHDOG=1") >= 3)
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.camera.hang = asyncio.Event()  # switching the camera off never finishes
        await box.control.ask("press")  # hang up: the machine waits on the camera
        stuck = box.notifier.count("WATCHDOG=1")
        await asyncio.sleep(0.3)
        assert box.notifier.count("WATCHDOG=1") == stuck, "a stuck machine starves it"
        box.camera.hang.set()
        await until(lambda: box.notifier.count("WATCHDOG=1") > stuck)


async def test_a_second_daemon_stops_before_it_claims_a_pin_or_a_sound_device(
    tmp_path: Path,
) -> None:
    def already_running(parts) -> None:  # type: ignore[no-untyped-def]
        parts.made["control"].fails = AlreadyRunning("live-appliance is already running")

    with pytest.raises(AlreadyRunning):
        async with running(tmp_path, prepare=already_running):
            pass


class BadPinFactory(Exception):
    """gpiozero's, by name: no pin driver at all."""


async def test_a_box_without_gpio_is_driven_by_ctl_press_and_not_in_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No pin driver at all (a VM, a box installed --no-gpio): one line, the box idle
    (not error: it is such a box by design), and no tries again that cannot succeed."""

    def no_gpio(parts) -> None:  # type: ignore[no-untyped-def]
        parts.made["button"].fails = BadPinFactory("Unable to load any default pin factory!")

    caplog.set_level(logging.INFO, "device.appliance")
    async with running(tmp_path, prepare=no_gpio) as box:
        assert box.appliance.status_line() == "idle"
        assert "button" not in box.appliance.status()["faults"]
        assert not any(t.get_name() == "button-retry" for t in box.appliance._tasks)
        await press_and_speak(box)
        assert box.state == "connecting" and box.link.opened == [1]
    said = [r for r in caplog.records if "pin factory" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR


async def test_a_button_busy_at_boot_is_said_once_shown_and_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPIO line another process holds at boot (or lgpio not ready yet): one journal
    line, the LEDs and `ctl status` say so, and the pin is tried again until it opens;
    not a box that never answers its button again while its watchdog is fed."""
    import device.appliance

    monkeypatch.setattr(device.appliance, "BUTTON_RETRY_S", 0.02, raising=False)
    caplog.set_level(logging.INFO, "device.appliance")

    def busy(parts) -> None:  # type: ignore[no-untyped-def]
        parts.made["button"].fails = OSError("GPIO busy")

    async with running(tmp_path, prepare=busy) as box:
        leds = box.appliance.leds
        assert leds is not None and leds.state == "error"
        assert "button" in box.appliance.status()["faults"]
        assert box.appliance.status_line().startswith("error: button on GPIO")
        await asyncio.sleep(0.2)  # several tries, all failing
        box.button.fails = None
        await until(lambda: box.button.started)
        await until(lambda: leds.state == "idle")
        assert "button" not in box.appliance.status()["faults"]
        assert box.appliance.status_line() == "idle"
    said = [r for r in caplog.records if "GPIO busy" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    # The README's `LIVE_STATE=error` recipe is every time the LEDs showed error.
    assert "error" in [getattr(r, "LIVE_STATE", None) for r in caplog.records]
    assert any("button" in r.getMessage() and "back" in r.getMessage() for r in caplog.records)


async def test_a_busy_button_still_lets_ctl_press_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the pin is being retried, the box answers `ctl press` (its LEDs follow the
    conversation)."""

    def busy(parts) -> None:  # type: ignore[no-untyped-def]
        parts.made["button"].fails = OSError("GPIO busy")

    async with running(tmp_path, prepare=busy) as box:
        await press_and_speak(box)
        assert box.state == "connecting" and box.link.opened == [1]
        leds = box.appliance.leds
        assert leds is not None and leds.state == "connecting"


async def test_a_button_held_with_nobody_talking_stops_the_microphone_and_the_camera(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal names the timer that ended the turn (the silence, not `longest_turn_s`
    or a reply that never came), and the setting that gives it: an owner can tell a stuck
    button from a noisy room, and knows what to change."""
    caplog.set_level(logging.INFO, "device.appliance")
    cfg = config(conversation={"end_after_silence_s": SILENCE_S})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")  # and never released: a stuck button, or a cat on it
        box.link.deliver(SetupComplete)
        assert box.camera.running
        for _ in range(16):  # a quiet room for longer than the silence allowed
            box.mic.record(QUIET)
            await asyncio.sleep(SILENCE_S / 10)
        await box.settle()
        assert box.state == "thinking", "the turn went to the service, as at a release"
        assert not box.mic.forwarding and not box.camera.running
        assert kinds(box)[-1] == "activity_end"
        box.mic.record(CHUNK)
        assert "audio" not in kinds(box), "nothing more from the microphone"
    said = [r.getMessage() for r in caplog.records if r.name == "device.appliance"]
    setting = f"[conversation] end_after_silence_s {SILENCE_S:g} s"
    line = f"listening -> thinking (Timeout silence: {setting})"
    assert line in said, said


async def test_blocking_calls_share_a_bounded_pool_that_ctl_status_counts(tmp_path: Path) -> None:
    """The soak tells the pool's growth from a leaked thread by this count."""
    async with running(tmp_path) as box:
        together = threading.Barrier(WORKERS, timeout=10)

        def meet() -> str:
            together.wait()  # returns only once WORKERS calls run at the same time
            return threading.current_thread().name

        ran = await asyncio.gather(*(asyncio.to_thread(meet) for _ in range(WORKERS)))
        assert len(set(ran)) == WORKERS and all(name.startswith("worker_") for name in ran)
        more = await asyncio.gather(
            *(asyncio.to_thread(lambda: threading.current_thread().name) for _ in range(4))
        )
        assert set(more) <= set(ran), "no thread beyond the bound"
        assert box.appliance.status()["workers"] >= WORKERS


async def test_a_drain_of_one_part_of_a_reply_does_not_end_the_part_that_follows(
    tmp_path: Path,
) -> None:
    """The model works on (turnComplete, more to come); its first part plays out just as
    the rest arrives whole (its audio and turnComplete at once). The drain of the first
    part was taken for the rest's: idle LEDs (hands-free: the microphone ungated) with
    the rest still to play."""
    rest = b"\x05\x06" * 2400
    async with running(tmp_path) as box:
        await ask_and_hear_the_reply_begin(box)
        box.link.deliver(TurnComplete, more_to_come=True)
        await box.settle()
        box.speaker.play()  # the first part's last sample plays (the writer's drain) ...
        box.link.deliver(ReplyAudio, pcm=rest)  # ... as the rest arrives
        box.link.deliver(TurnComplete)
        await box.settle()
        await asyncio.sleep(0.02)
        await box.settle()
        assert box.state == "speaking" and rest in box.speaker.buffered
        box.speaker.play()
        await until(lambda: box.state == "idle")
        assert box.states()[-2:] == ["speaking", "idle"]


async def test_a_text_turn_over_a_reply_silences_its_audio_already_on_the_way(
    tmp_path: Path,
) -> None:
    """A hook's words over a reply: audio of it the link handed on after the words were
    taken, before the machine got to them, played after them as if it were the answer."""
    old = b"\x03\x04" * 2400
    async with running(tmp_path) as box:
        await ask_and_hear_the_reply_begin(box)
        await box.settle()
        assert (await box.control.ask("text", text="stop, what time is it?"))["ok"]
        box.link.deliver(ReplyAudio, pcm=old)  # read before the words were handled
        await box.settle()
        assert old not in box.speaker.buffered and box.state == "thinking"
        box.link.deliver(ReplyAudio, pcm=REPLY, replaces=True)  # the answer plays
        await box.settle()
        assert REPLY in box.speaker.buffered and box.state == "speaking"


@pytest.mark.parametrize("voice", [CHUNK, SOFT], ids=["loud", "soft"])
async def test_a_question_longer_than_the_long_press_reaches_the_service_whole(
    tmp_path: Path, voice: bytes
) -> None:
    """Push-to-talk with the defaults: a person still talking when the button has been
    down `long_press_s` (10 s) was hung up on, the question dropped and never answered;
    a child asking softly (-46 dBFS, under `speech_dbfs`) was too, as if the room were
    silent. The release ends their turn. (A voice rises above the quiet before its first
    word: a hum as loud does not, and still hangs up: tests/test_soft_voice.py.)"""
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.mic.record(QUIET)
        for _ in range(19):
            box.mic.record(voice)
        await box.settle()
        box.appliance._on_button("long_press", time.monotonic())  # ButtonInput's timer
        await box.settle()
        assert box.state == "listening" and box.mic.forwarding and not box.link.closed
        await box.control.ask("release")
        box.mic.record(voice)
        await box.settle()
        sent = kinds(box)
        assert sent[-1] == "activity_end" and sent.count("audio") == 21
        assert box.state == "thinking"


def numbered(n: int) -> bytes:
    """A 40 ms chunk that says which it is (quiet: no speech to report)."""
    return np.full(640, 100 + n, dtype=np.int16).tobytes()


def numbers_sent(box: Box) -> list[int]:
    audio = [item.data for item in box.link.sent() if item.kind == "audio"]
    return [int(np.frombuffer(data, dtype=np.int16)[0]) - 100 for data in audio]  # type: ignore[arg-type]


async def busy_closing(box: Box) -> DeviceFreeCapture:
    """The box busy closing a session nobody used (its camera switching off takes its
    time: until `box.camera.hang` is set); its microphone, for the test to feed."""
    await box.ctl("text", text="what time is it")  # a session, opened without the mic
    box.link.deliver(SetupComplete)
    box.link.deliver(TurnComplete)
    await box.settle()
    assert box.state == "idle" and box.appliance.machine.session_open
    box.camera.hang = asyncio.Event()
    box.appliance.post(Timeout(Timer.IDLE))
    await until(lambda: not box.appliance.machine.session_open)
    mic: DeviceFreeCapture = box.parts.made["mic"]
    return mic


async def test_a_press_taken_late_still_sends_what_was_said_from_the_button_going_down(
    tmp_path: Path,
) -> None:
    """The person presses while the box is still busy ending the last conversation (its
    camera switching off, the connection closing) and starts talking at once: what they
    said from the button's edge, and the pre-roll before it, reaches the service, however
    late the press was taken; nothing older, and nothing twice. (The pre-roll was counted
    from when the press was taken: a second of their first words was lost.)"""
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        now = time.monotonic()
        recorded = [now - 2.0 + 0.04 * (n + 1) for n in range(50)]  # 2 s up to now
        edge = now - 1.01  # the button went down a second ago
        for n, t in enumerate(recorded):
            mic.record(numbered(n), t)
            if n == 30:
                box.button.on_edge("pressed", edge)
        await asyncio.sleep(0.05)
        box.camera.hang.set()  # the close is over: the press is taken now
        await box.settle()
        for n in range(50, 53):  # they go on talking
            mic.record(numbered(n))
        await box.control.ask("release")
        mic.record(numbered(53), time.monotonic() + 0.04)  # the chunk holding the release
        await box.settle()
        preroll_s = box.appliance.mic_feed.preroll_chunks * 0.04  # 100 ms in whole chunks
        first = next(n for n, t in enumerate(recorded) if t > edge - preroll_s)
        assert first == 21
        assert numbers_sent(box) == list(range(first, 54))


async def test_a_press_and_its_release_both_taken_late_send_nothing_after_the_release(
    tmp_path: Path,
) -> None:
    """A short question asked whole while the box was busy: the turn is what was said from
    the press's edge to the release's, not what the microphone heard after the button
    came up until the box got to the release."""
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        now = time.monotonic()
        recorded = [now - 2.0 + 0.04 * (n + 1) for n in range(50)]  # 2 s up to now
        pressed, released = now - 1.51, now - 0.81
        for n, t in enumerate(recorded):
            mic.record(numbered(n), t)
            if n == 13:
                box.button.on_edge("pressed", pressed)
            if n == 30:
                box.button.on_edge("released", released)
        box.camera.hang.set()  # the close is over: the press and release are taken now
        await box.settle()
        mic.record(numbered(50))
        await box.settle()
        preroll_s = box.appliance.mic_feed.preroll_chunks * 0.04
        first = next(n for n, t in enumerate(recorded) if t > pressed - preroll_s)
        last = next(n for n, t in enumerate(recorded) if t >= released)  # holds the release
        assert (first, last) == (9, 29)
        assert numbers_sent(box) == list(range(first, last + 1))
        assert box.state == "connecting" and not box.appliance.machine.held


async def test_a_question_asked_whole_while_the_box_was_busy_does_not_switch_the_camera_on(
    tmp_path: Path,
) -> None:
    """Pressed and released before the box got to the press: the turn is over when it is
    taken, and the camera (and its light) stays off, not switched on for a turn nobody is
    in front of any more, lingering after."""
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        now = time.monotonic()
        box.button.on_edge("pressed", now - 0.8)
        box.button.on_edge("released", now - 0.2)
        for n in range(25):
            mic.record(numbered(n), now - 1.0 + 0.04 * (n + 1))
        box.camera.hang.set()  # the close is over: the press and release are taken now
        await box.settle()
        assert numbers_sent(box), "the question went out"
        assert not box.camera.running


async def test_a_release_while_the_loop_was_busy_sends_nothing_heard_after_it(
    tmp_path: Path,
) -> None:
    """The loop held up as the button came up (the collector, a slow write): the release's
    edge and the microphone's next chunks wait together, the edge first, and the machine
    takes the release after the chunks went by. The turn still ends with the chunk that
    holds the release: nothing heard after the button came up reaches the service."""
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic: DeviceFreeCapture = box.parts.made["mic"]
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        released = time.monotonic()
        for n in range(5):  # said while the button was down
            mic.record(numbered(n), released - 0.18 + 0.04 * n)
        await box.settle()
        loop = asyncio.get_running_loop()
        loop.call_soon(box.button.on_edge, "released", released)  # waits behind the block
        for n in range(5, 10):  # 5 holds the release; read while the loop was held up
            mic.record(numbered(n), released + 0.02 + 0.04 * (n - 5))
        await box.settle()
        mic.record(numbered(10), released + 0.22)
        await box.settle()
        assert numbers_sent(box)[-2:] == [4, 5]
        assert box.state == "thinking"


async def test_a_question_asked_whole_longer_ago_than_the_ring_keeps_is_said_lost_and_not_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pressed and released while the last session's close hung for seconds: all the ring
    holds was heard after the release, and none of it goes out; the journal says the
    question is lost, not that only its first seconds are (of a question 0.6 s long)."""
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        now = time.monotonic()
        box.button.on_edge("pressed", now - 6.0)
        box.button.on_edge("released", now - 5.4)
        for n in range(150):  # the last 6 s, read between turns
            mic.record(numbered(n), now - 6.0 + 0.04 * (n + 1))
        box.camera.hang.set()  # the close is over: the press and release are taken now
        await box.settle()
        assert numbers_sent(box) == []
    late = [r.getMessage() for r in caplog.records if "the press was taken" in r.getMessage()]
    assert len(late) == 1 and "the whole question (0.6 s) is lost" in late[0], late


async def test_two_questions_asked_while_the_box_was_busy_each_end_at_their_own_release(
    tmp_path: Path,
) -> None:
    """The first turn ends at the first release, not the last one posted; the second goes
    out from its own pre-roll to its release. (What the second said before the first was
    taken went with the first turn's held audio, thrown away at its end: a question lost.)"""
    edges = {8: ("pressed", 1.71), 18: ("released", 1.31),
             28: ("pressed", 0.91), 38: ("released", 0.51)}  # fmt: skip
    sent, held = await sent_for_edges_while_busy(tmp_path, edges)
    # Each from its pre-roll to the chunk holding its release (one turn on the wire: the
    # second was pressed before the first went out).
    assert sent == [*range(4, 18), *range(24, 38)]
    assert not held


async def sent_for_edges_while_busy(
    tmp_path: Path, edges: dict[int, tuple[str, float]]
) -> tuple[list[int], bool]:
    """The numbers of the chunks sent, and whether the button is held after, when 2 s of
    numbered chunks were recorded while the box was busy closing its last session, each
    of `edges` ((edge, seconds before the end) by the chunk it came after) posted then."""
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        now = time.monotonic()
        for n in range(50):
            mic.record(numbered(n), now - 2.0 + 0.04 * (n + 1))
            if n in edges:
                name, before = edges[n]
                box.button.on_edge(name, now - before)
        box.camera.hang.set()
        await box.settle()
        return numbers_sent(box), box.appliance.machine.held


async def test_a_press_again_within_the_preroll_of_a_late_release_sends_no_chunk_twice(
    tmp_path: Path,
) -> None:
    """A question and a press again at once (a double tap) while the box was busy: the
    second turn's pre-roll reaches back past the first release, to the chunk that ended
    the first turn. That chunk goes out once, with the first: the ring keeps only what
    came after it."""
    edges = {8: ("pressed", 1.71), 18: ("released", 1.31),
             19: ("pressed", 1.25), 38: ("released", 0.51)}  # fmt: skip
    sent, _ = await sent_for_edges_while_busy(tmp_path, edges)
    assert sent == list(range(4, 38))  # 17 holds the first release: once


async def test_a_press_again_after_a_late_tap_whose_end_was_still_in_the_card_keeps_its_words(
    tmp_path: Path,
) -> None:
    """A question, then a press again at once, while the box was busy: the release and the
    second press's first words were still in the sound card when the first press was
    taken (between turns it is read twice a second). The first turn forwarded them, ended
    at its release, and what came after went nowhere: the second question's start."""
    async with running(tmp_path, parts_class=RealCaptureParts) as box:
        mic = await busy_closing(box)
        now = time.monotonic()
        recorded = [now - 2.0 + 0.04 * (n + 1) for n in range(50)]  # 2 s up to now
        edges = [("pressed", now - 1.71), ("released", now - 0.45), ("pressed", now - 0.25)]
        for n, t in enumerate(recorded[:38]):  # read before the first press is taken
            mic.record(numbered(n), t)
        for edge in edges:
            box.button.on_edge(*edge)
        box.camera.hang.set()  # the close is over: the first press is taken now
        await until(lambda: box.link.opened == [1, 2])
        for n, t in enumerate(recorded[38:], 38):  # the last 0.48 s, read only now
            mic.record(numbered(n), t)
        await box.settle()
        await box.control.ask("release")
        mic.record(numbered(50), time.monotonic() + 0.04)  # the chunk holding the release
        await box.settle()
        # Each from its pre-roll to the chunk holding its release (38 the first's): one turn
        # on the wire, the second pressed before the first went out.
        assert numbers_sent(box) == [*range(4, 39), *range(40, 51)]


@pytest.mark.parametrize(
    ("begun", "speaks"),
    [(False, False), (True, False), (True, True)],
    ids=["without-a-word", "thinking", "speaking-in-parts"],
)
async def test_a_reply_the_model_works_on_without_end_is_cut_at_the_longest_reply(
    tmp_path: Path, begun: bool, speaks: bool
) -> None:
    """turnComplete with the interaction still in progress, again and again (a part of
    the reply between each, or none, or no reply begun at all): each restarted the
    reply's timer, and each part after a drain its longest_reply_s, so the box thought
    (or spoke) for as long as the service kept it up, its session open, the next press
    the only way out."""
    cfg = config(conversation={"reply_timeout_s": 0.3, "longest_reply_s": 0.6})
    async with running(tmp_path, cfg) as box:
        if begun:
            await ask_and_hear_the_reply_begin(box)
            box.speaker.play()
        else:
            await press_and_speak(box)
            box.link.deliver(SetupComplete)
            await box.ctl("release")
            box.mic.record(CHUNK)
            await box.settle()
        for _ in range(20):  # 2 s: three times the longest reply
            box.link.deliver(TurnComplete, more_to_come=True)
            await box.settle()
            box.speaker.play()  # a part played out: thinking again
            await asyncio.sleep(0.05)
            if speaks:
                box.link.deliver(ReplyAudio, pcm=REPLY)
                await box.settle()
            await asyncio.sleep(0.05)
        assert "idle" in box.states(), f"still {box.state} after 3 x longest_reply_s"


async def ask_between_connections(box: Box) -> None:
    """Push-to-talk: the connection drops at the press; the question and its release wait
    in the outbox for the next connection."""
    await box.ctl("press")
    box.link.deliver(SetupComplete)
    box.link.deliver(Reconnecting, reason="Wi-Fi gone", reply_lost=False)
    for _ in range(3):
        box.mic.record(CHUNK)
    await box.control.ask("release")
    box.mic.record(CHUNK)  # the chunk holding the release
    await box.settle()


async def test_a_turn_held_for_a_reconnect_is_not_sent_in_a_session_after_the_idle_close(
    tmp_path: Path,
) -> None:
    """Push-to-talk; the connection drops before the turn went out (its audio waits in the
    outbox for the next connection), the reply timer turns it over to idle, and the idle
    timer closes the session while the link would still be reconnecting (`reconnect_for_s`
    up to 600). The next press, later, sent the old question first."""
    cfg = config(conversation={"reply_timeout_s": 0.05, "idle_timeout_s": 0.05})
    async with running(tmp_path, cfg) as box:
        await ask_between_connections(box)
        await until(lambda: not box.appliance.machine.session_open, within=3)
        await box.settle()  # the close performed: the link closes beside the camera
        assert box.link.closed == 1
        await box.ctl("press")  # a new session, much later
        box.mic.record(QUIET)
        await box.settle()
        assert box.link.opened == [1, 2]
        audio = [item.data for item in box.link.sent() if item.kind == "audio"]
        assert CHUNK not in audio, f"the new session carries {audio.count(CHUNK)} old chunks"


async def test_gated_hang_up_over_the_reply_then_a_new_conversation_keeps_its_first_words(
    tmp_path: Path,
) -> None:
    """Gate mode: a press is the only way to stop a reply, and it ends the conversation;
    the person presses again at once and talks while the box still closes the last
    session. The microphone stayed muted through the close: all of it was dropped."""
    cfg = config(button={"mode": "toggle"}, audio={"mic_during_playback": "gate"})
    async with running(tmp_path, cfg, parts_class=RealCaptureParts) as box:
        mic: DeviceFreeCapture = box.parts.made["mic"]
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ReplyAudio, pcm=REPLY)
        await box.settle()
        assert box.state == "speaking"
        box.link.sent()  # what went before: not this test's
        box.camera.hang = asyncio.Event()  # switching the camera off takes its time
        await box.control.ask("press")  # hang up over the reply
        await until(lambda: not box.appliance.machine.session_open)
        for n in range(20):  # the person presses again and talks at once
            mic.record(numbered(n), time.monotonic())
            if n == 5:
                box.button.on_edge("pressed", time.monotonic())
            await asyncio.sleep(0.01)
        box.camera.hang.set()  # the close is over: the new press is taken now
        await box.settle()
        for n in range(20, 23):
            mic.record(numbered(n), time.monotonic())
        await box.settle()
        assert box.appliance.machine.session_open and box.link.opened == [1, 2]
        sent = numbers_sent(box)
        assert sent[:1] and sent[0] <= 5, f"the words from the press's edge on: {sent}"


async def test_hands_free_a_pause_shorter_than_silence_ms_does_not_end_the_turn(
    tmp_path: Path,
) -> None:
    """silence_ms raised to 2 s for someone who pauses mid-sentence: the quiet gate held
    the microphone back after 1 s and sent audioStreamEnd, which ends the person's turn
    at the service: a 1.2 s pause had half the sentence answered."""
    cfg = config(button={"mode": "toggle"}, conversation={"silence_ms": 2000})
    async with running(tmp_path, cfg, parts_class=RealCaptureParts) as box:
        mic: DeviceFreeCapture = box.parts.made["mic"]
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        t = time.monotonic()
        chunks = [CHUNK] * 10 + [QUIET] * 30 + [CHUNK] * 10  # "what's the ... weather"
        for n, data in enumerate(chunks):
            mic.record(data, t + 0.04 * (n + 1))
        await box.settle()
        assert "audio_stream_end" not in kinds(box), "a 1.2 s pause ended the turn at 1 s"
        for n in range(60):  # then a real end: past silence_ms, the microphone rests
            mic.record(QUIET, t + 0.04 * (51 + n))
        await box.settle()
        assert "audio_stream_end" in kinds(box)


async def test_at_a_stop_the_camera_goes_dark_before_the_connection_closes(
    tmp_path: Path,
) -> None:
    """SIGTERM during a conversation: the link's graceful close may take a second; the
    camera is off first, as at any hang-up."""
    order: list[str] = []
    async with running(tmp_path) as box:
        await press_and_speak(box)
        box.link.deliver(SetupComplete)
        await box.settle()
        assert box.camera.running
        camera_off, link_close = box.camera.shutdown, box.link.close

        async def camera_shutdown() -> None:
            await camera_off()
            order.append("camera off")

        async def close() -> None:
            order.append(f"link closing, the camera {'on' if box.camera.running else 'off'}")
            await link_close()

        box.camera.shutdown = camera_shutdown  # type: ignore[method-assign]
        box.link.close = close  # type: ignore[method-assign]
    assert order[0] == "camera off" and "the camera off" in order[1], order


async def test_a_flood_of_ctl_presses_leaves_the_box_consistent_its_journal_and_memory_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of press/release requests as fast as a script sends them, twice: the
    journal gets a line per transition the box took (not per request), the LEDs show the
    state `ctl status` reports, and the second flood keeps no more objects than the first."""
    caplog.set_level(logging.INFO, logger="device.appliance")
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)  # a session open: each press and release counts

        async def flood() -> None:
            for i in range(1000):
                await box.control.ask("press")
                await box.control.ask("release")
                if i % 50 == 0:
                    box.mic.record(CHUNK)  # releases end as the microphone's chunks come
            for _ in range(PRESSES_WAITING + 2):  # each release's last chunk
                box.mic.record(CHUNK)
                await box.settle()

        await flood()
        gc.collect()
        before = len(gc.get_objects())
        await flood()
        gc.collect()
        kept = len(gc.get_objects()) - before
        assert kept < 1000, f"{kept} objects kept by a flood of 2000 requests"
        transitions = [r for r in caplog.records if " -> " in r.getMessage()]
        assert len(transitions) < 2 * 4 * (PRESSES_WAITING + 2), "a line per request"
        reply = await box.control.ask("status")
        assert box.appliance.leds is not None
        assert box.appliance.leds.state == reply["state"] == box.state


async def test_words_heard_before_the_silence_ran_out_keep_the_conversation_through_a_stall(
    tmp_path: Path,
) -> None:
    """Hands-free, the box stalls a moment as the silence runs out (a loaded CPU, its
    memory squeezed at MemoryHigh): the person's first words, recorded just before, and the
    silence's end reach the state machine together. The words restarted the silence, but
    its end, already on its way, hung up on them all the same."""
    cfg = config(button={"mode": "toggle"}, conversation={"end_after_silence_s": SILENCE_S})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        assert Timer.SILENCE in box.appliance.machine.timers
        loop = asyncio.get_running_loop()
        ends = box.appliance._timers[Timer.SILENCE].when()
        await asyncio.sleep(ends - loop.time() - SILENCE_S / 5)
        loop.call_soon(box.mic.record, CHUNK)  # the reader hands words over; the loop stalls
        time.sleep(SILENCE_S / 2)  # noqa: ASYNC251 - the stall is what is tested
        await asyncio.sleep(0)  # the words and the silence's end reach the queue at once
        await box.settle()
        assert box.state == "listening" and box.appliance.machine.session_open
        assert box.link.closed == 0


async def test_a_question_the_reply_timer_gave_up_on_is_not_sent_when_the_link_comes_back(
    tmp_path: Path,
) -> None:
    """Push-to-talk; the connection drops and the question waits in the outbox for the
    next one. The reply timer runs out first: the error beep, idle. The link then came
    back within the same session and sent the old question, and its answer played out of
    the blue, well after the box had said it failed."""
    cfg = config(conversation={"reply_timeout_s": 0.05, "idle_timeout_s": 60})
    async with running(tmp_path, cfg) as box:
        await ask_between_connections(box)
        await until(lambda: box.state == "idle", within=3)  # given up: the error beep
        box.link.deliver(Reconnected)
        await box.settle()
        assert box.appliance.machine.session_open, "the session lives on (idle_timeout_s)"
        waiting = [item.kind for item in box.link.sent()]
        assert waiting == [], f"the question given up on still goes out: {waiting}"
        assert box.link.turns_dropped == 1, "the turn it opened would be opened again"


async def test_a_stop_signal_mid_conversation_sends_nothing_more_from_the_microphone_or_camera(
    tmp_path: Path,
) -> None:
    """SIGTERM while someone talks hands-free, the camera taking its time to switch off (a
    second or two on a Pi): the microphone went on streaming to the service, and the frame
    waiting went out, until the connection closed after the camera."""
    async with running(tmp_path, config(button={"mode": "toggle"})) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        await box.settle()
        assert box.state == "listening" and box.camera.framing
        box.camera.on_frame(b"jpeg", 0.0)  # the newest frame, waiting for an idle link
        box.camera.hang = asyncio.Event()  # switching the camera off takes a while
        box.appliance._on_stop_signal(signal.SIGTERM)
        await until(lambda: not box.control.serving)  # stopping: the camera is next
        await asyncio.sleep(0.05)
        box.mic.record(CHUNK)  # the person still talking as the box stops
        waiting = [item.kind for item in box.link.sent()]
        box.camera.hang.set()
    assert waiting == [], f"still to go to the service after the stop signal: {waiting}"


async def test_the_leds_go_idle_only_once_the_microphone_and_camera_have_stopped(
    tmp_path: Path,
) -> None:
    """Hands-free, the person presses to end while a tool works (the box thinking): the LEDs
    turned idle first, and stopping the thinking pattern yields to the loop, where the
    microphone's chunks and the camera's frames still went to the service; only then did
    the capture stop."""
    async with running(tmp_path, config(button={"mode": "toggle"})) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ToolsAtWork, calls=1)
        await box.settle()
        assert box.state == "thinking" and box.mic.forwarding and box.camera.framing
        leds = box.appliance.leds
        assert leds is not None
        show = leds.show
        seen: dict[str, object] = {}

        async def show_and_look(state: str) -> None:
            if state == "idle":  # what the microphone records while the pattern changes
                box.mic.record(CHUNK)
                seen["sent"] = [item.kind for item in box.link.sent()]
                seen["frames"] = box.camera.framing
            await show(state)

        leds.show = show_and_look  # type: ignore[method-assign]
        await box.ctl("press")
        assert box.state == "idle"
    assert seen == {"sent": [], "frames": False}, seen


async def test_a_hooks_words_opening_a_hands_free_conversation_send_nothing_said_before_them(
    tmp_path: Path,
) -> None:
    """`ctl text` opens a hands-free conversation nobody asked for by a press: the capture's
    pre-roll (up to `preroll_ms`, a second at most) of what the room said before the words
    went to the service with them, though no button's edge was there to reach back from."""
    async with running(
        tmp_path, config(button={"mode": "toggle"}), parts_class=RealCaptureParts
    ) as box:
        mic = box.mic
        assert isinstance(mic, DeviceFreeCapture)
        now = time.monotonic()
        for n in range(10):  # the room talking, up to the moment the hook speaks
            mic.record(CHUNK, now - 0.4 + 0.04 * (n + 1))
        await box.settle()
        assert (await box.ctl("text", text="The washing machine is done."))["ok"]
        assert [item.kind for item in box.link.sent()] == ["text"]


async def test_a_button_flood_after_the_queue_emptied_is_said_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A chattering pin floods the presses waiting: one line says presses are ignored.
    Once the machine has taken them (the bound kept again), a new flood is news, said
    again (at most a minute after the last, here at once), with its count: it was one
    line for the life of the service."""
    monkeypatch.setattr(logs.SaidOnce, "EVERY_S", 0.0)
    caplog.set_level(logging.WARNING, logger="device.appliance")
    ignored = lambda: [r for r in caplog.records if "press ignored" in r.getMessage()]  # noqa: E731
    async with running(tmp_path) as box:
        for flood in (1, 2):
            for _ in range(100):
                box.button.on_edge("pressed", 0.0)
                box.button.on_edge("released", 0.0)
            await box.settle()
            assert len(ignored()) == flood, [r.getMessage() for r in ignored()]


async def test_systemd_and_ctl_say_every_device_still_missing_as_they_come_and_go(
    tmp_path: Path,
) -> None:
    """A USB microphone and a HAT's speaker fail one after the other: `systemctl status`
    kept the first reason (no state changed, error to error), and once the microphone was
    back `ctl status` still blamed it while the speaker alone was missing."""
    async with running(tmp_path) as box:

        def said() -> list[str]:
            return [m for m in box.notifier.messages if m.startswith("STATUS=")]

        box.appliance.post(DeviceFailed("speaker", "unplugged"))
        await until(lambda: said()[-1] == "STATUS=error: speaker: unplugged")
        box.appliance.post(DeviceFailed("microphone", "unplugged"))
        both = "error: speaker: unplugged; microphone: unplugged"
        await until(lambda: said()[-1] == f"STATUS={both}")
        assert box.appliance.status()["status"] == both
        box.appliance.post(DeviceRecovered("speaker"))
        await until(lambda: said()[-1] == "STATUS=error: microphone: unplugged")
        assert box.appliance.status()["status"] == "error: microphone: unplugged"
        box.appliance.post(DeviceRecovered("microphone"))
        await until(lambda: said()[-1] == "STATUS=idle")


async def test_a_text_during_start_up_is_taken_as_before_the_machine_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook polling the socket at boot: the control socket serves before the microphone
    delivers (seconds on a Pi Zero). Judged only after the machine caught up, the text
    waited for a machine not yet running and was refused "busy" after 2 s."""
    parts = FakeParts(config(), tmp_path)
    appliance = Appliance(parts.cfg, parts)
    microphone_up = asyncio.Event()
    started = Appliance._wait_for_microphone

    async def slow_microphone(self: Appliance) -> None:
        await microphone_up.wait()
        await started(self)

    monkeypatch.setattr(Appliance, "_wait_for_microphone", slow_microphone)
    task = asyncio.create_task(appliance.run())
    try:
        await until(lambda: "control" in parts.made and parts.made["control"].serving)
        reply = await asyncio.wait_for(
            parts.made["control"].ask("text", text="The washing is done"), 1.0
        )
        assert reply == {"ok": True}, reply
        assert not appliance.ready
    finally:
        microphone_up.set()
        appliance.stopping.set()
        await task
        gc.unfreeze()  # the appliance froze the test process's objects at start-up
