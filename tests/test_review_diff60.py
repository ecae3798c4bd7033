"""Review of stop 60's device changes: what an owner meets."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.doctor.settings import check_config


@pytest.mark.parametrize(
    ("text", "line", "named", "not_named"),
    [
        # A persona line with "[...]" in a multi-line string is not a table.
        ('[live]\ninstruction = """\n[note] be brief\n"""\nmodel = "a"\nmodel = "b"\n', 6,
         "[live] model", "[note]"),
        # Nor is a line of a nested array that begins with "[".
        ("[audio]\nx = [\n [1], [2]\n]\nvolume = 1\nvolume = 2\n", 6, "[audio] volume", "[1]"),
        # A file saved with CRLF line ends (Windows' Notepad), set twice.
        ("[audio]\r\nvolume = 0.5\r\nvolume = 0.7\r\n", 3, "[audio] volume", "[1]"),
    ],
)
def test_a_bracket_inside_a_value_is_not_taken_for_the_table(
    tmp_path: Path, text: str, line: int, named: str, not_named: str
) -> None:
    """The doctor named "[note] model": a table the file has not, sending the owner to look
    for it; the key set twice is in [live]."""
    path = tmp_path / "config.toml"
    path.write_bytes(text.encode())
    doctor, _ = check_config(path)
    assert f"line {line}" in doctor.measured, doctor.measured
    assert named in doctor.measured, doctor.measured
    assert not_named not in doctor.measured, doctor.measured


@pytest.mark.parametrize(
    "text",
    [
        # An unterminated persona: the last line's text before "=" is no key.
        '[live]\ninstruction = """hi\nsk-private-words = x\n',
        # A bad escape inside a multi-line string, on a line with "=".
        '[live]\ninstruction = """hi\nsk-private-words=abc \\q\n"""\n',
    ],
)
def test_words_inside_a_string_are_never_named_as_a_key(tmp_path: Path, text: str) -> None:
    """Words inside a string are a value, which the message must never repeat (it may be
    a secret): the doctor named them as a key ("[live] sk-private-words")."""
    path = tmp_path / "config.toml"
    path.write_bytes(text.encode())
    doctor, _ = check_config(path)
    assert "not valid TOML" in doctor.measured, doctor.measured
    assert "sk-private" not in doctor.measured, doctor.measured


async def test_a_question_the_service_ends_unanswered_after_a_stray_interrupted() -> None:
    """Push-to-talk: a reply came whole, then a stray `interrupted` alone. The person asks;
    the service cuts its answer before its first word and ends the turn (interrupted with
    turnComplete) and says nothing more. The box must leave thinking: the new `repeated`
    rule takes that end for the stray one's and the box sits thinking for reply_timeout_s."""
    from test_live_connection import SESSION, Seen, audio, connection, content, replay

    from device.live.turn import WireTurn
    from device.states import Machine, Pressed, Released, State

    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    turn.sent("activity_start")
    turn.sent("activity_end")
    conn._dispatch(audio(b"\x01\x00" * 100))
    conn._dispatch(content(turn_complete=True))  # whole
    conn._dispatch(content(interrupted=True))  # stray, alone
    seen.events.append(Pressed())
    turn.sent("activity_start")
    seen.events.append(Released())
    turn.sent("activity_end")
    conn._dispatch(content(interrupted=True, turn_complete=True))  # its answer cut, ended
    machine = Machine(state=State.SPEAKING, session_open=True, session=SESSION, connected=True)
    machine, _, states = replay(seen.events, machine)
    assert not turn.in_flight, "the question still awaits a reply that will not come"
    assert machine.state is not State.THINKING, f"left thinking; states {states}"
