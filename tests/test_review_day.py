"""Review of the day's change (37916b5..): what a person at the box would notice."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from device import config
from device.control import LINE_LIMIT, ControlError, ControlServer, request
from device.states import (
    Action,
    CancelTimer,
    Earcon,
    EndConversation,
    Event,
    Interrupted,
    Machine,
    Mode,
    PlaybackDrained,
    PlayEarcon,
    Pressed,
    Released,
    ReplyAudio,
    SetupComplete,
    SpeechHeard,
    StartTimer,
    State,
    Timeout,
    Timer,
    ToolsAtWork,
    TurnComplete,
    step,
)

SESSION = 1
#: The defaults: [conversation] end_after_silence_s, reply_timeout_s, longest_conversation_s.
SILENCE_S, REPLY_S, OPEN_MIC_S = 30.0, 30.0, 900.0
#: A [tools] timeout_s that loads since 95160c9 (the check against reply_timeout_s went).
TOOL_TIMEOUT_S = 60.0
SECONDS = {
    Timer.SILENCE: SILENCE_S,
    Timer.REPLY: REPLY_S,
    Timer.OPEN_MIC: OPEN_MIC_S,
    Timer.LONG_REPLY: 300.0,
    Timer.TOOL: TOOL_TIMEOUT_S + REPLY_S,
}


class Clock:
    """The machine with its timers on a clock the test moves."""

    def __init__(self, machine: Machine) -> None:
        self.machine, self.now = machine, 0.0
        self.due: dict[Timer, float] = {}
        self.earcons: list[Earcon] = []

    def feed(self, *events: Event) -> None:
        for event in events:
            self.machine, actions = step(self.machine, event)
            self._perform(actions)

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case StartTimer(timer):
                    self.due[timer] = self.now + SECONDS.get(timer, 3600.0)
                case CancelTimer(timer):
                    self.due.pop(timer, None)
                case PlayEarcon(earcon):
                    self.earcons.append(earcon)

    def wait(self, seconds: float) -> None:
        end = self.now + seconds
        while self.due and min(self.due.values()) <= end:
            timer = min(self.due, key=lambda t: self.due[t])
            self.now = self.due.pop(timer)
            self.feed(Timeout(timer))
        self.now = end


def test_hands_free_a_slow_tool_is_not_cut_off_by_the_silence_after_the_question() -> None:
    """Hands-free, the person asks, the model calls a tool at once (no words first) and the
    tool takes 40 s, within a [tools] timeout_s of 60 that loads now. The box shows
    "listening" meanwhile and end_after_silence_s (30 s, from the question's last word)
    runs through the tool: the conversation hangs up before the answer can come."""
    clock = Clock(Machine(mode=Mode.TOGGLE))
    clock.feed(Pressed(), SetupComplete(session=SESSION), SpeechHeard(from_the_room=True))
    clock.wait(1)
    clock.feed(ToolsAtWork(session=SESSION, calls=1))
    clock.wait(39)  # the tool works
    assert clock.machine.session_open, "hung up while the tool worked"


def words() -> ReplyAudio:
    return ReplyAudio(session=SESSION, pcm=b"\x01\x00" * 100)


def test_hands_free_talking_over_a_tools_wait_brings_no_error_beep() -> None:
    """Hands-free: "let me look that up", a tool call, the turn's end, played out: the box
    waits for the tool. The person speaks again (a new question, 35 s of it); the service
    withdraws the call (toolCallCancellation: the connection reports no tool at work) and
    will answer when they stop. The reply timer, started by the withdrawal, ran out while
    they talked: the error earcon over their words, the LEDs "thinking" all along. Before
    95160c9 the drain left the box listening, its silence timer fed by their words."""
    clock = Clock(Machine(mode=Mode.TOGGLE))
    clock.feed(Pressed(), SetupComplete(session=SESSION), SpeechHeard(from_the_room=True))
    clock.feed(words(), ToolsAtWork(session=SESSION, calls=1), TurnComplete(session=SESSION))
    clock.feed(PlaybackDrained())
    clock.feed(SpeechHeard(from_the_room=True), ToolsAtWork(session=SESSION, calls=0))
    for _ in range(35):  # they talk on
        clock.wait(1)
        clock.feed(SpeechHeard(from_the_room=True))
    assert Earcon.ERROR not in clock.earcons, "the error earcon while the person talked"
    clock.feed(words(), TurnComplete(session=SESSION), PlaybackDrained())
    assert clock.machine.state is State.LISTENING


def test_push_to_talk_a_press_over_a_tools_wait_starts_a_turn_of_its_own() -> None:
    """Refutes a worry: the tool of the reply a press superseded reports its answer after
    the new question was asked; the new turn keeps its own reply timer, and ends quietly."""
    clock = Clock(Machine())
    clock.feed(Pressed(), SetupComplete(session=SESSION), Released())
    clock.feed(ToolsAtWork(session=SESSION, calls=1))
    clock.wait(10)
    clock.feed(Pressed(), Released())  # a new question over the tool's wait
    clock.feed(ToolsAtWork(session=SESSION, calls=0))  # the old tool's answer goes out
    assert Timer.TOOL not in clock.machine.timers
    clock.wait(REPLY_S - 1)
    clock.feed(words(), TurnComplete(session=SESSION), PlaybackDrained())
    assert clock.machine.state is State.IDLE
    assert Earcon.ERROR not in clock.earcons


def test_hands_free_a_superseded_sessions_tool_does_not_touch_the_next() -> None:
    """Refutes a worry: a press hangs up while a tool works; the next press opens session 2,
    and session 1's tool ending (its task cancelled with the connection) changes nothing."""
    clock = Clock(Machine(mode=Mode.TOGGLE))
    clock.feed(Pressed(), SetupComplete(session=1), SpeechHeard(from_the_room=True))
    clock.feed(words(), ToolsAtWork(session=1, calls=1))
    clock.feed(Pressed(), Pressed(), SetupComplete(session=2))  # hang up, start again
    clock.feed(ToolsAtWork(session=1, calls=0), ToolsAtWork(session=1, calls=1))
    assert clock.machine.state is State.LISTENING and Timer.TOOL not in clock.machine.timers


def test_push_to_talk_the_goodbye_tool_hangs_up_after_the_goodbye_without_an_error() -> None:
    """Refutes a worry: "goodbye", the end_conversation call (answered at once), the turn's
    end: the box hangs up when the goodbye has played, with the falling earcon only."""
    clock = Clock(Machine())
    clock.feed(Pressed(), SetupComplete(session=SESSION), Released())
    clock.feed(words(), ToolsAtWork(session=SESSION, calls=1), EndConversation(session=SESSION))
    clock.feed(ToolsAtWork(session=SESSION, calls=0), TurnComplete(session=SESSION))
    clock.feed(PlaybackDrained())
    assert not clock.machine.session_open and clock.machine.state is State.IDLE
    assert clock.earcons == [Earcon.LISTEN_START, Earcon.LISTEN_END, Earcon.LISTEN_END]


def test_barge_in_over_a_tools_wait_with_interrupted_ends_the_turn_quietly() -> None:
    """Refutes a worry: the service interrupts and withdraws the call (either order)."""
    for order in ((True, False), (False, True)):
        clock = Clock(Machine(mode=Mode.TOGGLE))
        clock.feed(Pressed(), SetupComplete(session=SESSION), SpeechHeard(from_the_room=True))
        clock.feed(words(), ToolsAtWork(session=SESSION, calls=1))
        for interrupted_first in order:
            if interrupted_first:
                clock.feed(Interrupted(session=SESSION))
            else:
                clock.feed(ToolsAtWork(session=SESSION, calls=0))
        assert clock.machine.state is State.LISTENING
        assert Timer.TOOL not in clock.machine.timers and Timer.REPLY not in clock.machine.timers
        assert Earcon.ERROR not in clock.earcons


HUGE_HEX = "0x" + "f" * 5000  # TOML's hex has no digit limit; Python's decimal repr has


@pytest.mark.parametrize(
    ("content", "wanted"),
    [
        (f"[tools]\nenabled = [{HUGE_HEX}]\n", "[tools] enabled: must be"),
        (f"[conversation]\nreply_timeout_s = [{HUGE_HEX}]\n", "reply_timeout_s: must be"),
        (f"[live]\nvoice = {{ name = {HUGE_HEX} }}\n", "[live] voice: must be"),
        (f"audio = {HUGE_HEX}\n", "[audio] must be a table of settings"),
        (f"audio = '{'x' * 500_000}'\n", "[audio] must be a table of settings"),
        (f"[hardware]\nprofile = {HUGE_HEX}\n", "[hardware] profile: must be one of"),
        (f"[hardware]\nprofile = '{'x' * 500_000}'\n", "[hardware] profile: must be one of"),
    ],
    ids=[
        "in a list",
        "in a list for a number",
        "in a table",
        "a section",
        "a long section",
        "a profile",
        "a long profile",
    ],
)
def test_a_huge_number_inside_a_list_or_as_a_section_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, wanted: str
) -> None:
    """3feb7c7 made a number of thousands of digits a configuration error where it stands
    alone; inside a list or an inline table (any setting), or written as a section, the
    error line's repr still raised ValueError: a traceback, the daemon restarting in a
    loop, ctl and the doctor crashing. A section written as a long text was quoted whole."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")
    path = tmp_path / "config.toml"
    path.write_text(content)
    with pytest.raises(config.ConfigError, match=re.escape(wanted)) as raised:
        config.load(path)
    assert len(str(raised.value)) < 400


def test_a_huge_number_in_a_list_from_a_variable_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")
    monkeypatch.setenv("LIVE_APPLIANCE_TOOLS_ENABLED", f"[{HUGE_HEX}]")
    path = tmp_path / "config.toml"
    path.write_text("")
    with pytest.raises(config.ConfigError, match="LIVE_APPLIANCE_TOOLS_ENABLED"):
        config.load(path)


async def status(req: dict[str, Any]) -> dict[str, Any]:
    return {"state": "idle", "pad": len(req.get("pad", ""))}


def padded(size: int) -> str:
    """A pad that makes the status request's line `size` bytes, its newline included."""
    return "x" * (size - len(json.dumps({"cmd": "status", "pad": ""}).encode()) - 1)


def send_raw(path: Path, line: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line)
        with sock.makefile("rb") as stream:
            answer: dict[str, Any] = json.loads(stream.readline())
            return answer


async def test_ctl_sends_every_line_the_daemon_takes(tmp_path: Path) -> None:
    """The daemon reads a line of LINE_LIMIT bytes before its newline; ctl refused it,
    counting the newline against the bound."""
    path = tmp_path / "ctl.sock"
    async with ControlServer(path, status):
        line = json.dumps({"cmd": "status", "pad": padded(LINE_LIMIT + 1)}).encode() + b"\n"
        assert len(line) == LINE_LIMIT + 1
        assert (await asyncio.to_thread(send_raw, path, line))["state"] == "idle"
        got = await asyncio.to_thread(request, path, "status", pad=padded(LINE_LIMIT + 1))
        assert got["state"] == "idle"


def test_ctl_a_request_just_past_the_bound_is_not_said_to_be_at_it(tmp_path: Path) -> None:
    """Half a KiB over: "the request is 64 KiB, over the 64 KiB the daemon takes"."""
    with pytest.raises(ControlError) as refused:
        request(tmp_path / "none.sock", "status", pad=padded(LINE_LIMIT + 512))
    size, bound = map(int, re.findall(r"(\d+) KiB", str(refused.value)))
    assert size > bound, str(refused.value)
