"""Text in a German, French or Japanese home: words the terminal's character set cannot
show, transcripts with line breaks and control characters, text that is not UTF-8."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.daemon import rig_settings, scratch_dir, to_toml
from rig.server.server import ServerThread


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = scratch_dir("text-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cli(*args: str | bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """`python -m device ARGS` with the environment given on top of this one; bytes out."""
    return subprocess.run(
        [sys.executable, "-m", "device", *args],
        capture_output=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_ask_in_a_latin1_terminal_prints_the_reply_not_a_failure_of_the_service(
    scratch: Path,
) -> None:
    """A German reply's quotes („…“) are not in Latin-1: the turn went well, and the owner
    was told the service sent a message that cannot be decoded (exit 1, no words)."""
    with ServerThread(pace=0, reply_seconds=0.2) as server:
        cfg = scratch / "config.toml"
        cfg.write_text(to_toml(rig_settings(server.base_url, scratch)))
        result = cli(
            "ask", "„Grüße“", "--config", str(cfg),
            env={"GEMINI_API_KEY": server.api_key, "SSL_CERT_FILE": server.ca_file,
                 "PYTHONIOENCODING": "latin-1"},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode("latin-1")
    assert "Grüße" in result.stdout.decode("latin-1")


def test_doctor_shows_a_path_that_is_not_utf8_instead_of_a_traceback(scratch: Path) -> None:
    """A UTF-8 terminal (Raspberry Pi OS's en_GB.UTF-8) and a directory named in Latin-1
    (a backup from an old system): the doctor's line, not UnicodeEncodeError."""
    path = os.fsencode(scratch) + b"/K\xfcche/config.toml"
    result = cli("doctor", "config", "--config", path, env={"PYTHONIOENCODING": "utf-8"})
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert b"no such configuration file" in result.stdout
