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
