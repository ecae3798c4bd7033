"""What a service (or something posing as it) floods the box with has a bound on what the
box sends back: its answers to tool calls are small whatever the calls were."""

from __future__ import annotations

import asyncio
import contextlib
import json

from fakes import FakeActions
from google.genai.live import AsyncSession
from test_server_fuzz import ScriptedWire, sdk_client

from device.config import LiveConfig, ToolsConfig
from device.errors import TEXT_LIMIT
from device.live.client import run_turn
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.turn import WireTurn
from device.outbox import Outbox
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


