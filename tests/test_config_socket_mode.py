"""`[control] mode`, the control socket's file mode, written the way `chmod` takes it:
the error names the key and says how TOML writes a mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from device import config


@pytest.mark.parametrize("value", ["0660", '"0660"', '"660"', '"0o660"'])
def test_a_mode_written_as_for_chmod_says_how_to_write_it(tmp_path: Path, value: str) -> None:
    """`mode = 0660` said "Expected newline or end of document after a statement (at line
    2, column 9)"; `mode = "0660"` "must be an integer (got '0660')": neither says that
    TOML writes the mode 0o660."""
    path = tmp_path / "config.toml"
    path.write_text(f"[control]\nmode = {value}\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    said = str(caught.value)
    assert str(path) in said and "[control] mode" in said, said
    assert "written 0o660" in said, said


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0o7777", "must be between 0o600 and 0o666"),
        ("-1", "must be between 0o600 and 0o666"),
        ("0o000", "must be between 0o600 and 0o666"),  # nobody, the owner too, could use ctl
        ("true", "must be an integer"),
        ("0o666", "lets others on the box use the socket"),
    ],
)
def test_a_mode_out_of_bounds_is_refused_naming_the_key(
    tmp_path: Path, value: str, words: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[control]\nmode = {value}\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert "[control] mode" in str(caught.value) and words in str(caught.value)
