"""The Live API's messages as PROTOCOL.md and the SDK name them, one by one, against the
box: what the person at it, or its owner reading the journal, notices."""

from __future__ import annotations

import asyncio
import json
import syslog
from typing import Any

import pytest
from helpers import journal_lines, until
from wire import config_for, set_up_link

from device.ask import _report, ask
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.states import TurnComplete
from rig.server.server import LiveServer


async def journal_of_a_turn_ended_with(server: LiveServer, content: dict[str, Any]) -> list[Any]:
    """The journal's records while the model ends a text turn, without a word, with
    `content` (its turnComplete message)."""
    server.config.unanswered_turns = 1  # the model says nothing of its own
    async with set_up_link(server) as (_, outbox, events):
        with journal_lines("device") as journal:
            outbox.put("text", "tell me about it")
            await server.wait_for(lambda: "client_content" in server.kinds(direction="in"), 10)
            await server.send_raw(json.dumps({"serverContent": content}))
            await until(lambda: any(isinstance(e, TurnComplete) for e in events), within=10)
    return journal.records


@pytest.mark.parametrize("reason", ["PROHIBITED_INPUT_CONTENT", "MALFORMED_FUNCTION_CALL"])
async def test_a_turn_the_service_ends_for_a_reason_says_the_reason_in_the_journal(
    server: LiveServer, reason: str
) -> None:
    """The service ends a turn without a word and says why (`turnCompleteReason`: a
    safety block, a function call it could not make): the person hears nothing and the
    box goes back to idle; the owner found only the turn's timings in the journal, and
    nothing to tell a refusal from a lost reply."""
    records = await journal_of_a_turn_ended_with(
        server, {"turnComplete": True, "turnCompleteReason": reason}
    )
    said = [record for record in records if reason in record["MESSAGE"]]
    assert said, [record["MESSAGE"] for record in records]
    assert said[0].get("LIVE_TURN_END") == reason, said[0]
    assert said[0]["PRIORITY"] == str(syslog.LOG_WARNING), said[0]


async def test_a_turn_ended_for_more_input_is_said_without_a_warning(server: LiveServer) -> None:
    """NEED_MORE_INPUT is the model waiting for the person to go on (a sentence cut off,
    a pause hands-free), not a refusal: said for the owner (LIVE_TURN_END), but a warning
    at each such turn would bury the warnings that are."""
    records = await journal_of_a_turn_ended_with(
        server, {"turnComplete": True, "turnCompleteReason": "NEED_MORE_INPUT"}
    )
    said = [record for record in records if record.get("LIVE_TURN_END") == "NEED_MORE_INPUT"]
    assert said, [record["MESSAGE"] for record in records]
    assert said[0]["PRIORITY"] == str(syslog.LOG_INFO), said[0]


@pytest.mark.parametrize(
    "content",
    [{"turnComplete": True},
     {"turnComplete": True, "turnCompleteReason": "TURN_COMPLETE_REASON_UNSPECIFIED"}],
)  # fmt: skip
async def test_a_turn_ended_without_a_reason_says_none(
    server: LiveServer, content: dict[str, Any]
) -> None:
    """A plain turnComplete (or one whose reason is unspecified) is the usual end: no line
    of its own."""
    records = await journal_of_a_turn_ended_with(server, content)
    assert not [record for record in records if "LIVE_TURN_END" in record], records


async def turn_ended_after_setup(server: LiveServer, reason: str) -> None:
    """The model ends the first turn without a word, for `reason`."""
    server.config.unanswered_turns = 1
    await server.wait_for(lambda: "client_content" in server.kinds(direction="in"), 10)
    content = {"turnComplete": True, "turnCompleteReason": reason}
    await server.send_raw(json.dumps({"serverContent": content}))


async def test_ask_says_why_the_service_ended_a_turn_without_a_word(
    server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ask` said "(the reply had no transcript)" and "first audio after never, 0.0 s of
    audio": the owner could not tell the model's refusal from a reply lost on the way."""
    ended = asyncio.create_task(turn_ended_after_setup(server, "RESPONSE_REJECTED"))
    await ask(config_for(server), ["hello"], on_reply=_report)
    await ended
    said = capsys.readouterr().err
    assert "ended by the service: RESPONSE_REJECTED" in said, said


async def test_the_doctors_turn_says_why_the_service_ended_it_without_a_word(
    server: LiveServer,
) -> None:
    """`doctor network --turn` said "Live turn: the reply had no audio" and to try again
    in a minute, the service may be down: it was up, and had said why it said nothing."""
    ended = asyncio.create_task(turn_ended_after_setup(server, "MALFORMED_FUNCTION_CALL"))
    context = Context(config_for(server), Options(turn=True), Progress(spinner=False))
    result = await check_network(context)
    await ended
    assert result.status is Status.FAIL, result
    assert "MALFORMED_FUNCTION_CALL" in result.measured, result
    assert "may be down" not in (result.fix or ""), result


@pytest.mark.parametrize(
    ("reason", "said", "unsaid"),
    [("NEED_MORE_INPUT", "waits for more", "refused this turn"),
     ("MALFORMED_FUNCTION_CALL", "[tools] enabled", "refused this turn"),
     ("PROHIBITED_INPUT_CONTENT", "refused this turn", "waits for more"),
     ("RESPONSE_REJECTED", "refused this turn", "waits for more")],
)  # fmt: skip
async def test_the_doctors_fix_for_a_turn_ended_without_a_word_is_true_for_its_reason(
    server: LiveServer, reason: str, said: str, unsaid: str
) -> None:
    """The doctor called every turn the service ended without a word refused: one it ended
    waiting for more from the person (NEED_MORE_INPUT) refuses nothing, and a tool call
    the model could not make is not a refusal of what was asked either."""
    ended = asyncio.create_task(turn_ended_after_setup(server, reason))
    context = Context(config_for(server), Options(turn=True), Progress(spinner=False))
    result = await check_network(context)
    await ended
    assert reason in result.measured, result
    assert said in (result.fix or "") and unsaid not in (result.fix or ""), result.fix


#: A reason no SDK knows yet, as a faulty or hostile service may spell it.
STRANGE_REASON = "NEW_REASON\n\x1b[2J" + "x" * 1000


@pytest.mark.filterwarnings("ignore:(?s).* is not a valid TurnCompleteReason")  # logs.setup's too
async def test_a_reason_the_box_does_not_know_is_said_on_one_short_line(
    server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reason is the service's text, passed on by the SDK whatever it is: a line break
    in it split `ask`'s line and the journal's (the rest without its priority), an escape
    sequence acted on the terminal showing it, and a long one filled the screen."""
    ended = asyncio.create_task(turn_ended_after_setup(server, STRANGE_REASON))
    await ask(config_for(server), ["hello"], on_reply=_report)
    await ended
    said = [line for line in capsys.readouterr().err.splitlines() if "NEW_REASON" in line]
    assert len(said) == 1, said
    assert "\x1b" not in said[0] and len(said[0]) < 300, said
    records = await journal_of_a_turn_ended_with(
        server, {"turnComplete": True, "turnCompleteReason": STRANGE_REASON}
    )
    [record] = [record for record in records if "LIVE_TURN_END" in record]
    for text in (record["MESSAGE"], record["LIVE_TURN_END"]):
        assert "\n" not in text and "\x1b" not in text and len(text) < 300, text
