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
