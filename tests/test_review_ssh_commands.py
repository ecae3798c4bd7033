"""The commands an owner types over SSH, piped into scripts: what they print and their
exit codes when the input is wrong or the reader of their output has gone."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import shutil
import struct
import sys
import termios
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import daemon_saying, with_reader_gone
from helpers import run_cli as cli

from device.cli import EXIT_CONFIG, EXIT_PIPE
from device.doctor.progress import Progress
from device.doctor.result import CHECK_NAMES
from rig.daemon import rig_settings, scratch_dir, to_toml
from rig.server.server import ServerThread


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = scratch_dir("ssh-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("command", [[], ["doctor"], ["ctl", "text"]], ids=" ".join)
async def test_help_piped_into_head_ends_quietly(command: list[str]) -> None:
    """`live-appliance doctor --help | head -3`: help is printed while the arguments are
    parsed, before the guard of the commands' own output, and a reader gone left argparse's
    BrokenPipeError traceback and exit status 1."""
    assert await with_reader_gone(*command, "--help") == (EXIT_PIPE, "")


async def test_ask_piped_into_head_ends_quietly_not_blaming_the_network(
    scratch: Path,
) -> None:
    """`ask "Q1" "Q2" | head -1`: the reply's line to a reader gone was taken for a failure
    of the session: "ask: turn 1: network: Broken pipe", exit status 1."""
    with ServerThread(pace=0, reply_seconds=0.3) as server:
        cfg = scratch / "config.toml"
        cfg.write_text(to_toml(rig_settings(server.base_url, scratch)))
        env = {**os.environ, "GEMINI_API_KEY": server.api_key, "SSL_CERT_FILE": server.ca_file}
        code, err = await with_reader_gone("ask", "Hello", "And again?", "--config", str(cfg),
                                           env=env)  # fmt: skip
    assert "Broken pipe" not in err and "network" not in err, err
    assert code == EXIT_PIPE


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (["ctl", "status", "--jsn"], "usage: live-appliance ctl status [-h] [--socket PATH]"),
        (["doctor", "--no-buton"], "usage: live-appliance doctor [-h] [--json]"),
        (["ask", "Hello", "--tiemout", "5"], "usage: live-appliance ask [-h] [--audio PATH]"),
    ],
    ids=["ctl status", "doctor", "ask"],
)
def test_a_mistyped_option_is_refused_with_the_usage_of_the_command_typed(
    command: list[str], usage: str
) -> None:
    """`ctl status --jsn`: the owner was shown `usage: live-appliance [-h] COMMAND ...`,
    the top command's, which names none of the options they were after."""
    result = cli(*command)
    assert result.returncode == 2
    assert result.stderr.startswith(usage), result.stderr
    mistyped = next(word for word in command if word.startswith("--"))
    assert "error: unrecognized arguments: " + mistyped in result.stderr, result.stderr


async def test_the_spinner_in_a_narrow_terminal_stays_on_its_line() -> None:
    """An SSH client on a phone, 30 columns: a step's text longer than the terminal wrapped,
    and each frame's carriage return went back to the start of the wrapped part only: a
    new line scrolled by ten times a second, and the wipe at the end left them all."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 30, 0, 0))
    with os.fdopen(terminal, "w") as stream:
        progress = Progress(stream)
        async with progress.step("connecting to the Live API (gemini-live-2.5-flash-preview)"):
            await asyncio.sleep(0.35)
        shown = b""
        while select.select([controller], [], [], 0)[0]:
            shown += os.read(controller, 4096)
    os.close(controller)
    frames = [f for f in shown.decode().split("\r\x1b[K") if f]
    assert len(frames) >= 3
    assert all(len(frame) < 30 for frame in frames), frames


async def test_ctl_text_in_japanese_is_taken_up_to_the_documented_64_kib() -> None:
    """A note of 40 KiB in Japanese (13,000 characters, `wc -c` says 39,000 bytes) from a
    hook: refused as "the request is 77 KiB, over the 64 KiB the daemon takes", since
    each character went as a six-byte \\uXXXX escape; the README promises 64 KiB."""
    words = "今日は雨です。" * 1857  # 12,999 characters, 38,997 bytes of UTF-8
    seen: list[dict[str, Any]] = []
    async with daemon_saying({"ok": True}, seen) as sock:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "device", "ctl", "text", words, "--socket", str(sock),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
    assert (proc.returncode, err.decode()) == (0, "")
    assert seen == [{"cmd": "text", "text": words}]


async def _with_closed(redirect: str, *args: str) -> tuple[int, str, str]:
    """`live-appliance ARGS >&-` (or `2>&-`, `<&-`, in `redirect`): a script's idea of
    silence, the descriptor closed, not /dev/null. The exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", "device", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ctl_press_with_stdout_closed_says_the_press_was_taken() -> None:
    """`ctl press >&-` in a hook: Python has no sys.stdout then, and flushing it raised
    AttributeError: a traceback and exit status 1 for a press the daemon took."""
    seen: list[dict[str, Any]] = []
    async with daemon_saying({"ok": True}, seen) as sock:
        code, _, err = await _with_closed(">&-", "ctl", "press", "--socket", str(sock))
    assert seen == [{"cmd": "press"}]
    assert (code, err) == (0, "")


@pytest.mark.parametrize("redirect", ["2>&-", "<&-"])
async def test_doctor_with_stderr_or_stdin_closed_still_reports(
    scratch: Path, redirect: str
) -> None:
    """`doctor config 2>&-` (or `<&-` from a hook): its progress to a stderr that is not
    there (or the look at stdin for a person to press the button) raised AttributeError,
    and the owner got no line at all and exit status 1."""
    settings = scratch / "config.toml"
    settings.write_text(f'[control]\nsocket = "{scratch / "control.sock"}"\n')
    code, out, _ = await _with_closed(redirect, "doctor", "config", "--config", str(settings))
    assert out.startswith("PASS  config"), out
    assert code == 0


def test_doctor_help_tells_of_every_check_it_runs() -> None:
    """`doctor --help` tells what it checks, in order; the power check (the firmware's
    under-voltage and throttling flags) was missing from it, and an owner after the
    supply's flags did not learn that the doctor reads them."""
    shown = cli("doctor", "--help").stdout
    told = " ".join(shown.split("In order:", 1)[1].split("positional arguments:")[0].split())
    missing = [name for name in CHECK_NAMES if name[:3] not in told.lower()]
    assert missing == [], told


def test_the_readme_says_what_each_exit_code_of_the_commands_means() -> None:
    """An owner's script tests the exit code of `ctl`, `ask` or `doctor`: the README's
    Commands section said some of them here and there (ctl text's 0, 1 and 2, the
    doctor's 0), never 130 (Ctrl-C) nor 141 (a reader gone: `| head`), nor that one
    code means one thing in every command."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    commands = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    said = " ".join(commands.split())
    assert "Exit codes" in said
    for code in (0, 1, EXIT_CONFIG, 130, EXIT_PIPE):
        assert f"`{code}`" in said, code


async def test_ask_piped_into_head_keeps_the_audio_of_the_turns_done(scratch: Path) -> None:
    """`ask "Q1" "Q2" --audio reply.wav | head -1`: the reader gone as the first reply
    was printed, the owner still asked for its audio; none was written."""
    out = scratch / "reply.wav"
    with ServerThread(pace=0, reply_seconds=0.3) as server:
        cfg = scratch / "config.toml"
        cfg.write_text(to_toml(rig_settings(server.base_url, scratch)))
        env = {**os.environ, "GEMINI_API_KEY": server.api_key, "SSL_CERT_FILE": server.ca_file}
        code, err = await with_reader_gone(
            "ask", "Hello", "And again?", "--audio", str(out), "--config", str(cfg), env=env
        )
    assert code == EXIT_PIPE, err
    with wave.open(str(out)) as kept:
        assert kept.getnframes() / kept.getframerate() > 0.2
