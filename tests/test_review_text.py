"""Text in a German, French or Japanese home: words the terminal's character set cannot
show, transcripts with line breaks and control characters, text that is not UTF-8."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import running
from helpers import journal_lines

from device import config
from device.control import ControlServer
from device.live.turn import WireTurn
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


def printable(text: str) -> bool:
    """What journalctl shows as words, not as "[N B blob data]": no C0 or C1 control but a
    tab (a line break it shows, but on a line of its own, without the unit's prefix)."""
    return not any((c < " " and c != "\t") or "\x7f" <= c <= "\x9f" for c in text)


def test_a_transcript_with_line_breaks_and_controls_is_one_readable_journal_line() -> None:
    """The service's words are the service's: a line break, a carriage return or an escape
    in them made `journalctl` show the line as blob data (or cleared a terminal); the
    words of any language, right-to-left and combined, stay as said."""
    turn = WireTurn()
    for part in ["Grüß Gott,", " wie spät?\n", "ist es\r\n", "\x1b[2J jetzt\x00", " مرحبا",
                 " e\u0301 🇩🇪", "\x85ok"]:  # fmt: skip
        turn.heard.add(part)
    turn.said.add("こんにちは。\n\nお元気ですか")
    with journal_lines("device.live") as journal:
        turn.log_words()
    heard, said = journal.records
    for record, field in ((heard, "LIVE_TRANSCRIPT_IN"), (said, "LIVE_TRANSCRIPT_OUT")):
        for text in (record["MESSAGE"], record[field]):
            assert printable(text), repr(text)
    assert heard["LIVE_TRANSCRIPT_IN"].startswith("Grüß Gott, wie spät? ist es ")
    assert "jetzt" in heard["MESSAGE"] and " مرحبا e\u0301 🇩🇪" in heard["MESSAGE"]
    assert said["MESSAGE"] == "model said: こんにちは。 お元気ですか"


def test_ask_prints_one_line_per_turn_whatever_the_reply_holds(scratch: Path) -> None:
    """ask's stdout is one line per turn, so it can be piped: a reply whose words hold a
    line break (here the local server's echo of the question) must not make it two."""
    with ServerThread(pace=0, reply_seconds=0.2) as server:
        cfg = scratch / "config.toml"
        cfg.write_text(to_toml(rig_settings(server.base_url, scratch)))
        result = cli(
            "ask", "Erste Zeile\nzweite Zeile", "Noch eine Frage", "--config", str(cfg),
            env={"GEMINI_API_KEY": server.api_key, "SSL_CERT_FILE": server.ca_file},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == [
        'Reply 1: you said "Erste Zeile zweite Zeile".',
        'Reply 2: you said "Noch eine Frage".',
    ]


#: "Grüße" as a Latin-1 file holds it (`ctl text "$(cat note.txt)"` on a UTF-8 system):
#: Python hands those bytes on as unpaired surrogates, which JSON carries as "\udcfc".
LATIN1_WORDS = "Gr\xfc\xdfe".encode("latin-1")


async def test_ctl_text_that_is_not_utf8_is_refused_with_the_reason(scratch: Path) -> None:
    """Not sent as "Gr\\udcfc\\udcdfe", which the model cannot read as words and a strict
    JSON reader refuses: the owner is told to convert it."""
    sock = scratch / "control.sock"
    seen: list[dict[str, Any]] = []

    async def daemon(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return {"ok": True}

    async with ControlServer(sock, daemon):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "device", "ctl", "text", LATIN1_WORDS, "--socket", str(sock),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
    assert proc.returncode == 2 and not seen
    assert "not UTF-8 text (byte 0xfc)" in err.decode(), err.decode()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (os.fsdecode(LATIN1_WORDS), "not UTF-8 text"),  # a hook that sends the escapes itself
        ("\x00", "no words in it"),  # a C string's end, a buggy template
        ("\u200b\x1b\r\n", "no words in it"),  # nothing to see, nothing to say
    ],
)
async def test_the_daemon_refuses_a_text_turn_without_words_to_say(
    tmp_path: Path, text: str, why: str
) -> None:
    """It was taken (ok) and the box woke up and answered nothing in particular, aloud;
    the hook is told why instead, and nothing goes out."""
    async with running(tmp_path) as box:
        reply = await box.control.ask("text", text=text)
        assert not reply["ok"] and why in reply["error"], reply
        await box.settle()
        assert box.state == "idle" and not box.link.opened


@pytest.mark.parametrize("edited", ["persona", "configuration"])
def test_a_file_saved_in_latin1_says_where_and_how_to_convert_it(
    tmp_path: Path, edited: str
) -> None:
    """An editor set to Latin-1 (or Windows' "ANSI") saved the umlauts as single bytes:
    the doctor's fix was "Correct that setting", which is right; the file is not."""
    persona = tmp_path / "persona.txt"
    persona.write_bytes("Du bist eine Küchenhilfe.\nAntworte kurz.\n".encode())
    settings = f'[live]\nsystem_instruction_file = "{persona}"\n# Küche\n'
    latin1 = "Du bist eine Hilfe.\nSprich über Küche.\n".encode("latin-1")
    if edited == "persona":
        persona.write_bytes(latin1)
    else:
        settings += "# Gerät\n"
    path = tmp_path / "config.toml"
    path.write_bytes(settings.encode("latin-1") if edited == "configuration" else settings.encode())
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    line = 2 if edited == "persona" else 3
    assert f"is not UTF-8 text: byte 0xfc on line {line}" in str(caught.value)
    assert "save it as UTF-8" in str(caught.value)


def test_ask_refuses_an_empty_turn_before_opening_a_session() -> None:
    """`ask "$QUESTION"` with the variable unset: a session opened (and paid) for a turn
    with no words, which the model answers with whatever it likes, or the service refuses."""
    result = cli("ask", "What time is it?", "  ", env={"GEMINI_API_KEY": "unused"})
    assert result.returncode == 2
    assert b"argument TEXT: no words in it" in result.stderr, result.stderr.decode()
