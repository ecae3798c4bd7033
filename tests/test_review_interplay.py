"""Review (interplay): how the day's changes work together, on the real Appliance with the
wire's real bookkeeping behind a fake link (tests/test_talking_over.py's)."""

from __future__ import annotations

from pathlib import Path

from fakes import CHUNK, config
from helpers import until
from test_talking_over import NEW, OLD, ask, box_on_the_wire, wire

from device.audio.earcons import earcon
from device.states import Earcon, Reconnected, Reconnecting, SetupComplete, Timeout, Timer


async def test_a_whole_reply_given_up_on_between_connections_does_not_play_later(
    tmp_path: Path,
) -> None:
    """Push-to-talk: a reply came whole, faster than it plays; the connection drops and its
    rest waits to play on from the next connection. The reconnect takes longer than
    `reply_timeout_s` (Wi-Fi gone a while, within `reconnect_for_s`): the error beep, idle.
    Then the link is back and the rest of that reply played, out of the blue, to an empty
    room or a person who had given up on it."""
    async with box_on_the_wire(tmp_path, config()) as box:
        link = wire(box)
        await ask(box)
        link.audio(OLD * 30)  # the first 3 s of it reach the speaker
        await box.settle()
        assert box.state == "speaking"
        link.deliver(Reconnecting, reason="dropped", reply_lost=False)  # the rest carried
        await box.settle()
        box.speaker.play()  # what it had has played; the reconnect takes its time
        await box.settle()
        assert "reply" in box.appliance.status()["timers"]
        box.appliance.post(Timeout(Timer.REPLY))
        await box.settle()
        assert box.state == "idle"
        assert bytes(box.speaker.buffered) == earcon(Earcon.ERROR)
        link.deliver(Reconnected)
        link.audio(OLD)  # the carried rest, handed on by the next connection
        link.server(turn_complete=True)
        await box.settle()
        assert box.state == "idle", box.states()
        assert OLD not in box.speaker.buffered, "the reply given up on played after all"


async def test_hands_free_between_connections_a_silent_box_with_a_reply_to_come_hears_the_person(
    tmp_path: Path,
) -> None:
    """Hands-free (the microphone gated while the box speaks): a reply came whole, the
    connection drops and its rest waits for the next one. Once the speaker has played what
    it had, the box is silent for as long as the reconnect takes (up to `reconnect_for_s`),
    yet it went on showing "speaking" with the microphone muted: what the person said then
    was neither heard nor held. README: while a conversation waits for the connection what
    the person says is held and sent on. Now the box thinks once what it had has played, as
    when the model works on, and listens meanwhile."""
    cfg = config(button={"mode": "toggle"}, audio={"mic_during_playback": "gate"})
    async with box_on_the_wire(tmp_path, cfg) as box:
        link = wire(box)
        await box.ctl("press")
        link.deliver(SetupComplete)
        link.audio(OLD)
        await box.settle()
        assert box.state == "speaking"
        link.deliver(Reconnecting, reason="dropped", reply_lost=False)  # the rest carried
        await box.settle()
        box.speaker.play()  # what it had has played: silence from here
        await until(lambda: box.state != "speaking", within=1)
        assert box.state == "thinking", box.states()
        for _ in range(10):
            box.mic.record(CHUNK)
        await box.settle()
        assert box.appliance.outbox.held_ms > 0, "what the person said was not held"


async def test_a_press_while_a_carried_reply_waits_asks_anew_and_never_hears_its_rest(
    tmp_path: Path,
) -> None:
    """Push-to-talk: a reply came whole, the connection dropped, what arrived has played and
    the box thinks while its rest waits for the next connection. A press then is a new
    question: the rest of the old reply, handed on by the next connection, is not heard,
    nor taken for the end of the new question."""
    async with box_on_the_wire(tmp_path) as box:
        link = wire(box)
        await ask(box)
        link.audio(OLD)
        await box.settle()
        link.deliver(Reconnecting, reason="dropped", reply_lost=False)
        box.speaker.play()
        await until(lambda: box.state == "thinking", within=1)
        await box.ctl("press")
        assert box.state == "connecting"
        link.deliver(Reconnected)
        link.audio(OLD)  # the carried rest
        link.server(turn_complete=True)
        await box.settle()
        assert box.state == "listening", box.states()
        assert OLD not in box.speaker.buffered
        await box.control.ask("release")
        box.mic.record(CHUNK)
        await box.settle()
        link.send()
        assert box.state == "thinking"
        link.audio(NEW)
        await box.settle()
        assert box.state == "speaking" and NEW in box.speaker.buffered
