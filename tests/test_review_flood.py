"""What a service (or something posing as it) floods the box with has a bound on what the
box sends back: its answers to tool calls are small whatever the calls were."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from fakes import FakeActions
from google.genai.live import AsyncSession
from test_server_fuzz import ScriptedWire, sdk_client

from device.config import ConversationConfig, LiveConfig, ToolsConfig
from device.errors import TEXT_LIMIT
from device.live.client import run_turn
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.turn import WireTurn
from device.outbox import Outbox
from device.states import (
    AwaitDrain,
    CancelTimer,
    CloseSession,
    Event,
    Machine,
    PlaybackDrained,
    Pressed,
    Released,
    ReplyAudio,
    SetupComplete,
    StartTimer,
    Timeout,
    Timer,
    TurnComplete,
    step,
)
from device.tools import ToolBox

#: Turns of the loop the box is given after the service's last frame, for its answers.
SETTLE = [lambda: None] * 20


def answered(frames: list[bytes], tools: ToolBox | None = None) -> list[str]:
    """What the box sent back over a scripted connection whose service sent `frames`."""
    wire = ScriptedWire([*frames, *SETTLE])
    session = AsyncSession(api_client=sdk_client(), websocket=wire)  # type: ignore[arg-type]
    hooks = Hooks(1, lambda event: None, lambda item, t: None, lambda handle: None)
    connection = Connection(session, contextlib.AsyncExitStack(), LiveConfig(), Outbox(5),
                            hooks, WireTurn(), tools)  # fmt: skip
    asyncio.run(connection.run())
    return wire.answers


def tool_call(*calls: dict[str, object]) -> bytes:
    return json.dumps({"toolCall": {"functionCalls": list(calls)}}).encode()


def test_a_call_with_forty_thousand_made_up_arguments_is_answered_in_a_few_kilobytes() -> None:
    """The model's arguments were echoed whole in the error ("unexpected argument(s): ..."):
    a megabyte sent back for one call, ahead of the person's speech on the link."""
    made_up = {f"made_up_argument_{n:06d}": 0 for n in range(40_000)}
    toolbox = ToolBox(ToolsConfig(enabled=("set_volume",)), FakeActions())
    [answer] = answered([tool_call({"id": "c1", "name": "set_volume", "args": made_up})], toolbox)
    [response] = json.loads(answer)["tool_response"]["functionResponses"]
    assert response["response"]["error"].startswith("bad arguments: unexpected argument(s)")
    assert len(answer) < TEXT_LIMIT + 1024, len(answer)


def test_twenty_thousand_calls_at_once_are_answered_in_a_few_kilobytes() -> None:
    """Past the calls the box runs at once, each was answered busy in one message: 750 KB
    of calls brought 2.5 MB of answers, held on the link ahead of the person's speech."""
    calls = [{"id": f"c{n}", "name": "get_time"} for n in range(20_000)]
    frame = tool_call(*calls)
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions())
    answers = answered([frame], toolbox)
    responses = [response for answer in answers
                 for response in json.loads(answer)["tool_response"]["functionResponses"]]
    assert any("busy" in response["response"].get("error", "") for response in responses)
    assert sum(len(answer) for answer in answers) < 16 * 1024, len(answers)


def test_ask_answers_twenty_thousand_calls_at_once_in_a_few_kilobytes() -> None:
    """`ask` and `doctor --turn` answered every call "not run", all in one message: 750 KB
    of calls brought 2 MB of answers back."""
    calls = [{"id": f"c{n}", "name": "get_time"} for n in range(20_000)]
    wire = ScriptedWire([tool_call(*calls), json.dumps({"serverContent": {"turnComplete": True}})
                         .encode()])  # fmt: skip
    session = AsyncSession(api_client=sdk_client(), websocket=wire)  # type: ignore[arg-type]
    reply = asyncio.run(run_turn(session, "what time is it?"))
    assert reply.audio == b""
    answers = [answer for answer in wire.answers if "tool_response" in answer]
    assert answers, wire.answers
    assert sum(len(answer) for answer in answers) < 16 * 1024, len(answers[0])


# ---- the service alone keeps a push-to-talk session busy ---------------------------------

TIMERS_S = {timer: 60.0 for timer in Timer} | {
    Timer.IDLE: ConversationConfig().idle_timeout_s,
    Timer.REPLY: ConversationConfig().reply_timeout_s,
    Timer.LONG_REPLY: ConversationConfig().longest_reply_s,
}


def closed_at(script: list[tuple[float, Event]], hours: float = 1.0) -> float | None:
    """When the machine closed its session, the events of `script` taken at their times and
    its timers' Timeouts at theirs (a reply drains as soon as it is done); None: never."""
    m, now, due = Machine(), 0.0, {}
    waiting = sorted(script, key=lambda timed: timed[0])
    while now < hours * 3600:
        next_timer = min(due.items(), key=lambda item: item[1], default=None)
        if waiting and (next_timer is None or waiting[0][0] <= next_timer[1]):
            now, event = waiting.pop(0)
        elif next_timer is not None:
            (timer, now), event = next_timer, Timeout(next_timer[0])
            del due[timer]
        else:
            return None
        m, actions = step(m, event)
        for action in actions:
            match action:
                case CloseSession():
                    return now
                case StartTimer(timer):
                    due[timer] = now + TIMERS_S[timer]
                case CancelTimer(timer):
                    due.pop(timer, None)
                case AwaitDrain():
                    waiting.insert(0, (now, PlaybackDrained()))
    return None


@pytest.mark.parametrize("reply_s", [1.0, 40.0])
def test_a_push_to_talk_session_the_service_alone_keeps_talking_in_closes_when_idle(
    reply_s: float,
) -> None:
    """One question, then the service speaks every 50 s of its own accord (or something
    posing as it), each reply `reply_s` long: each reply nobody asked for started the idle
    timer again (one playing as it ran out kept the session too), and the session, its
    connection and the speaker's surprises went on for good. A reply still playing as the
    idle time runs out plays to its end."""
    reply, done = ReplyAudio(session=1, pcm=b"\x01\x00"), TurnComplete(session=1)
    asked = [(0.0, Pressed()), (0.0, SetupComplete(session=1)), (1.0, Released()),
             (2.0, reply), (3.0, done)]  # fmt: skip
    unasked = [(3.0 + 50 * n + second, reply) for n in range(1, 100)
               for second in range(int(reply_s))]  # fmt: skip
    unasked += [(3.0 + 50 * n + reply_s, done) for n in range(1, 100)]
    closed = closed_at([*asked, *unasked])
    assert closed is not None and closed <= 3.0 + TIMERS_S[Timer.IDLE] + 50, closed
    assert closed == 3.0 + (TIMERS_S[Timer.IDLE] if reply_s < 10 else 50 + reply_s), closed
