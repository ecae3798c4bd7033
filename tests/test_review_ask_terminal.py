"""`live-appliance ask --audio` when the owner's terminal goes away (review of stop 55)."""

from __future__ import annotations

import errno
import io
import wave
from pathlib import Path
from typing import Any

import pytest

from device import ask as ask_mod
from device.cli import main
from device.live.client import Reply


class GoneTerminal(io.StringIO):
    """A terminal whose SSH connection dropped: every write fails with EIO."""

    def write(self, text: str) -> int:
        raise OSError(errno.EIO, "Input/output error")


def test_a_terminal_gone_as_a_reply_prints_still_writes_the_audio_of_the_turns_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SSH connection dropped as the first reply was printed: its audio was to be
    kept in --audio, but ask said why it stopped on stderr, the same gone terminal, and
    that EIO ended it before the file was written: the owner found no reply.wav."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFakeKeyForTheTest0000000000000000000")
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    wav = tmp_path / "reply.wav"
    said = Reply(text="Hello there", audio=b"\x01\x00" * 2400, first_audio_s=0.1, seconds=0.2)

    async def terminal_gone(cfg: Any, args: Any) -> list[Reply]:
        raise ask_mod.AskError("printing the reply: [Errno 5] Input/output error", [said])

    monkeypatch.setattr(ask_mod, "_ask_and_play", terminal_gone)
    monkeypatch.setattr("sys.stderr", GoneTerminal())
    monkeypatch.setattr("sys.stdout", GoneTerminal())
    try:
        code = main(["ask", "Hello", "--audio", str(wav), "--config", str(cfg)])
    except OSError:
        code = None  # what is asserted is the file; the exit status below
    assert wav.exists(), "the turns' audio was never written"
    with wave.open(str(wav)) as kept:
        assert kept.readframes(kept.getnframes()) == said.audio
    assert code == 1, "a session cut short is a failure, said by the exit status"
