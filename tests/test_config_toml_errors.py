"""A configuration file an owner edited by hand and got wrong: the journal (the daemon's
start) and `doctor` name the file, the line and the key or table, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from device import cli
from device.doctor.settings import check_config


@pytest.mark.parametrize(
    ("text", "line", "named"),
    [
        # The volume set twice (one line copied from the README, one left from before).
        ("[audio]\nvolume = 0.5\nchunk_ms = 20\nvolume = 0.7\n", 4, "[audio] volume"),
        # The same on the file's last line, without its newline: "at end of document".
        ("[audio]\nvolume = 0.5\nvolume = 0.7", 3, "[audio] volume"),
        # A table written twice (a second [audio] pasted lower down).
        ("[audio]\nvolume = 0.5\n\n[button]\nmode = 'toggle'\n\n[audio]\nchunk_ms = 20\n", 7,
         "[audio]"),
        # A line separator (U+2028) in a comment: a line to Python's splitlines, not TOML's.
        ("# salon\u2028kitchen\n[audio]\nvolume = 0.5\nchunk_ms = 20\nvolume = 0.7\n", 5,
         "[audio] volume"),
        # A dotted key at the top, set twice.
        ("audio.volume = 0.5\naudio.volume = 0.7\n", 2, "audio.volume"),
    ],
)
def test_a_repeated_key_or_table_is_named_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, named: str
) -> None:
    """tomllib says only "Cannot overwrite a value (at line 4, column 10)": the owner
    counted lines in a file of comments to find which of the settings it meant."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert cli.main(["run", "--config", str(path)]) != 0
    journal = capsys.readouterr().err.strip()
    doctor, _ = check_config(path)
    for said in (journal, doctor.measured):
        assert "\n" not in said, said
        assert str(path) in said, said
        assert f"line {line}" in said, said
        assert named in said, said


def test_a_value_in_the_line_is_not_repeated_in_the_journal(tmp_path: Path) -> None:
    """The key is named, never its value: the line may hold a secret."""
    path = tmp_path / "config.toml"
    path.write_text('[live]\napi_key_file = "/etc/k"\napi_key_file = "/etc/secret-k"\n')
    doctor, _ = check_config(path)
    assert "[live] api_key_file" in doctor.measured, doctor.measured
    assert "secret" not in doctor.measured, doctor.measured


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
