"""The command line as an owner types it: help, `devices`, and `ctl` against a daemon."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import LATIN1_WORDS, daemon_saying, open_refused, with_reader_gone
from helpers import run_cli as cli

from device import logs
from device.audio import pcm
from device.cli import EXIT_CONFIG, EXIT_PIPE, build_parser, main
from device.control import ControlServer
from device.control_client import ControlError, request
from device.doctor.daemon import one_line, summary_lines
from device.doctor.progress import Progress
from device.doctor.result import CHECK_NAMES
from device.turns import TurnLog
from rig.daemon import rig_settings, scratch_dir, start_daemon, to_toml
from rig.loopback import PulseLoopback
from rig.server.server import ServerThread

COMMANDS = [
    ("run",),
    ("ctl",),
    ("ctl", "press"),
    ("ctl", "release"),
    ("ctl", "status"),
    ("ctl", "text"),
    ("devices",),
    ("leds-off",),
    ("doctor",),
    ("ask",),
]


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = scratch_dir("cli-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_command_says_what_it_does_with_an_example(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process: help is parsing only (the tests below run the command itself)."""
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    assert "example:\n  live-appliance " + " ".join(words) in capsys.readouterr().out


def test_an_unknown_doctor_check_is_a_usage_error() -> None:
    result = cli("doctor", "microphone")
    assert result.returncode == 2
    assert "unknown check 'microphone' (choose from config, key, network" in result.stderr


def test_devices_lists_the_loopback_devices_and_marks_the_configured_ones(
    loopback: PulseLoopback, scratch: Path
) -> None:
    cfg = scratch / "config.toml"
    cfg.write_text('[audio]\ninput_device = "pulse"\n')
    result = cli("devices", "--config", str(cfg), env=loopback.child_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["index", "in", "out", "default", "16000", "24000", "48000", "name"]
    pulse = next(line for line in lines if line.split("<-")[0].split()[-1:] == ["pulse"])
    assert pulse.split()[1:7] == ["32", "32", "44100", "in/out", "in/out", "in/out"]
    assert pulse.endswith("<- input")
    assert any(line.endswith("default  <- output") for line in lines)


def test_devices_exits_1_when_the_configured_device_is_missing(
    loopback: PulseLoopback, scratch: Path
) -> None:
    cfg = scratch / "config.toml"
    cfg.write_text('[audio]\ninput_device = "USB mic"\n')
    result = cli("devices", "--config", str(cfg), env=loopback.child_env())
    assert result.returncode == 1
    assert "input: no input device matches 'USB mic'" in result.stdout


async def ctl(sock: Path, *args: str) -> tuple[int, str]:
    """`live-appliance ctl ARGS --socket SOCK` as its own process, the daemon's side in
    this loop (so never waited for in a blocking call): the exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "device", "ctl", *args, "--socket", str(sock),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_ctl_text_sends_the_words() -> None:
    seen: list[dict[str, Any]] = []
    async with daemon_saying({"ok": True}, seen) as sock:
        code, _ = await ctl(sock, "text", "What", "time is it?")
    assert code == 0
    assert seen == [{"cmd": "text", "text": "What time is it?"}]


async def test_ctl_text_that_is_not_utf8_is_refused_with_the_reason() -> None:
    """Not sent as "Gr\\udcfc\\udcdfe", which the model cannot read as words and a strict
    JSON reader refuses: the owner is told to convert it."""
    seen: list[dict[str, Any]] = []
    async with daemon_saying({"ok": True}, seen) as sock:
        code, err = await ctl(sock, "text", LATIN1_WORDS)
    assert code == 2 and not seen
    assert "not UTF-8 text (byte 0xfc)" in err, err


def test_ask_refuses_an_empty_turn_before_opening_a_session() -> None:
    """`ask "$QUESTION"` with the variable unset: a session opened (and paid) for a turn
    with no words, which the model answers with whatever it likes, or the service refuses."""
    result = cli("ask", "What time is it?", "  ", env={**os.environ, "GEMINI_API_KEY": "unused"})
    assert result.returncode == 2
    assert "argument TEXT: no words in it" in result.stderr, result.stderr


def test_ctl_text_with_an_empty_word_among_its_words_is_sent() -> None:
    """`ctl text "$QUESTION" "$DETAIL"` with DETAIL empty: the words are one turn, and it
    has words. Each word was judged alone, and the turn refused as "no words in it"
    (before today the daemon took it)."""
    args = build_parser().parse_args(["ctl", "text", "What time is it?", ""])
    assert args.words.strip() == "What time is it?"


def test_ctl_text_takes_an_emoji_newer_than_pythons_unicode_tables() -> None:
    """A single emoji is a question a child asks. One newer than Python's tables (U+1FAE9,
    Unicode 16) is "unassigned" to it, and was refused as "no words in it"."""
    args = build_parser().parse_args(["ctl", "text", "\U0001FAE9"])
    assert args.words == "\U0001FAE9"


async def test_ctl_shows_the_daemons_error_and_exits_1(scratch: Path) -> None:
    sock = scratch / "control.sock"

    async def daemon(request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "no session is open"}

    async with ControlServer(sock, daemon):
        code, err = await ctl(sock, "text", "hello")
    assert code == 1
    assert err.strip() == "live-appliance ctl text: no session is open"


async def test_ctl_reaches_the_daemon_past_an_edit_of_the_configuration_it_has_not_seen(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner's edit with a mistake in it (the running daemon still has the old one):
    `ctl` refused to talk to the daemon at all."""
    sock = scratch / "control.sock"
    monkeypatch.setattr("device.config.DEFAULT_SOCKET", str(sock))
    cfg = scratch / "config.toml"
    cfg.write_text("[audio]\nchunk_ms = 5\n")

    async def daemon(request: dict[str, Any]) -> dict[str, Any]:
        return {"state": "idle"}

    async with ControlServer(sock, daemon):
        code = await asyncio.to_thread(main, ["ctl", "status", "--json", "--config", str(cfg)])
    assert code == 0


def test_ctl_without_a_daemon_says_so(scratch: Path) -> None:
    result = cli("ctl", "status", "--socket", str(scratch / "control.sock"))
    assert result.returncode == 1
    assert "the live-appliance daemon is not running" in result.stderr


def test_ctl_status_shows_the_last_turn_and_its_timings(
    loopback: PulseLoopback, scratch: Path
) -> None:
    with ServerThread(pace=0, reply_seconds=0.3) as server:
        assert server.server is not None
        daemon = start_daemon(scratch, loopback, server.server)
        try:
            daemon.wait_ready()
            sock = str(daemon.socket)
            assert cli("ctl", "press", "--socket", sock).returncode == 0
            loopback.play(pcm.from_float(pcm.tone(300, 500, 16000, 0.3)), 16000).wait()
            assert cli("ctl", "release", "--socket", sock).returncode == 0
            daemon.wait_until(lambda s: len(s["turns"]) == 1, 20, "the turn to finish")
            summary = cli("ctl", "status", "--socket", sock)
            raw = cli("ctl", "status", "--json", "--socket", sock)
        finally:
            daemon.terminate()
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert lines[0] == "state:    idle (push_to_talk mode)"
    assert lines[-2] == "last 1 turn:"
    assert lines[-1].startswith("  turn 1: press to first audio sent ")
    assert "release to first reply " in lines[-1] and "whole turn " in lines[-1]
    status = json.loads(raw.stdout)
    assert status["state"] == "idle" and len(status["turns"]) == 1


def test_the_hang_up_of_the_ssh_session_that_ran_it_stops_the_daemon_cleanly(
    loopback: PulseLoopback, scratch: Path
) -> None:
    """`live-appliance run` in an SSH session that drops: SIGHUP killed the daemon outright,
    its LEDs left lit and its socket file behind, no "stopped" line."""
    with ServerThread(pace=0) as server:
        assert server.server is not None
        daemon = start_daemon(scratch, loopback, server.server)
        try:
            daemon.wait_ready()
            daemon.proc.send_signal(signal.SIGHUP)
            status = daemon.proc.wait(10)
        finally:
            daemon.terminate()
    assert status == 0, daemon.log()
    assert "stopped" in daemon.log() and not daemon.socket.exists()


def test_ctl_status_says_while_the_live_client_is_still_being_built() -> None:
    """Just after a start (READY does not wait for the SDK) a press connects later: the
    summary says why, and says nothing once the client is there."""
    from device.doctor.daemon import summary_lines

    status = {"state": "idle", "session_open": False, "connections": 0}
    building = summary_lines({**status, "live_client": False})
    assert building[1] == (
        "session:  closed; 0 connections since start; the Live client still being built"
    )
    assert not any("Live client" in line for line in summary_lines({**status, "live_client": True}))
    starting = summary_lines({**status, "ready": False})
    assert starting[0].startswith("state:    starting (opening the microphone")


def test_ctl_status_does_not_promise_a_reopen_every_few_seconds() -> None:
    """A card gone for hours is tried every half hour (the README): not "every few s"."""
    from device.doctor.daemon import summary_lines

    lines = summary_lines({"status": "error: microphone: gone", "faults": ["microphone"]})
    (faults,) = [line for line in lines if line.startswith("faults:")]
    assert "microphone" in faults and "less often the longer" in faults


def test_ask_audio_to_a_path_it_cannot_write_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ask "Hello" --audio /nonexistent/r.wav` (or a directory) ran every turn, then ended
    in a traceback: it is said before the session, in one line."""
    from device import ask as ask_mod

    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFakeKeyForTheTest0000000000000000000")
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    asked = []

    async def replies(cfg: Any, args: Any) -> list[Any]:
        asked.append(args)
        return []

    monkeypatch.setattr(ask_mod, "_ask_and_play", replies)
    for out in (tmp_path / "no" / "reply.wav", tmp_path):
        code = main(["ask", "Hello", "--audio", str(out), "--config", str(cfg)])
        err = capsys.readouterr().err
        assert code == 1 and len(err.strip().splitlines()) == 1 and str(out) in err
    assert not asked, "no session for a reply that cannot be kept"
    fresh = tmp_path / "reply.wav"
    assert ask_mod._unwritable(str(fresh)) is None and not fresh.exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_an_ask_timeout_that_cannot_be_waited_is_a_bad_option(value: str) -> None:
    """Accepted, it opened a session and said "no answer from the Live API in time"."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["ask", "Hello", f"--timeout={value}"])
    assert exited.value.code == 2


def test_the_daemon_check_of_ctl_and_doctor_imports_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "import device.doctor.daemon\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    assert in_a_fresh_python(probe) == "[]"


def in_a_fresh_python(probe: str) -> str:
    """What `probe` prints in a Python of its own: the modules it imports are its own."""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
        env={**os.environ},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_ctl_status_runs_without_asyncio(tmp_path: Path) -> None:
    """`ctl` is what an owner types over SSH: the daemon's server side (asyncio, and ssl
    with it) is a tenth of a second on a Pi Zero that the one request does not need."""
    probe = (
        "import sys\n"
        "from device.cli import main\n"
        f"code = main(['ctl', 'status', '--socket', {str(tmp_path / 'none.sock')!r}])\n"
        "print(code, [m for m in ('asyncio', 'ssl') if m in sys.modules])\n"
    )
    assert in_a_fresh_python(probe) == "1 []"


def test_ctl_reads_only_the_socket_from_a_configuration_with_tools(tmp_path: Path) -> None:
    """`ctl` needs the socket's path: not the tools' declarations (pydantic), nor the
    persona file."""
    persona = tmp_path / "persona.txt"
    persona.write_text("You are the kitchen radio.\n")
    settings = tmp_path / "config.toml"
    settings.write_text(
        f'[tools]\nenabled = ["get_time"]\n[live]\nsystem_instruction_file = "{persona}"\n'
        f'[control]\nsocket = "{tmp_path / "nobody.sock"}"\n'
    )
    probe = (
        "import sys\n"
        "from device import cli\n"
        f"code = cli.main(['ctl', 'status', '--config', {str(settings)!r}])\n"
        "print(code, [m for m in ('pydantic', 'google.genai', 'numpy') if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == "1 []", result.stderr
    assert "not running" in result.stderr


def test_a_configuration_error_reaches_the_journal_as_an_error(tmp_path: Path) -> None:
    """Under systemd stderr is the journal, read at priority info unless a line says
    otherwise: the reason a box will not start must show in `journalctl -p err`."""
    settings = tmp_path / "config.toml"
    settings.write_text("[audio]\nchunk_ms = 'soon'\n")
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        info = os.fstat(sink.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        code = subprocess.run(
            [sys.executable, "-m", "device", "run", "--config", str(settings)],
            stderr=sink, env=env, timeout=30,
        ).returncode  # fmt: skip
    assert code == 2
    assert stderr.read_text().startswith("<3>live-appliance: configuration error:")
    plain = subprocess.run(
        [sys.executable, "-m", "device", "run", "--config", str(settings)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert plain.stderr.startswith("live-appliance: configuration error:"), "not on a terminal"


def test_a_configuration_error_quoting_a_huge_value_is_one_bounded_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error quotes the value it refuses: a file (up to its 1 MiB) or a variable
    holding a page of text made a line of that size, which journald cuts into a journal
    line every 48 KiB, past the bound every other line of the box keeps."""
    settings = tmp_path / "config.toml"
    settings.write_text('[button]\nmode = "' + "x" * 900_000 + '"\n')
    (tmp_path / "empty.toml").write_text("")
    assert main(["run", "--config", str(settings)]) == 2
    said = capsys.readouterr().err
    assert said.startswith("live-appliance: configuration error:") and said.count("\n") == 1
    assert len(said) < 2 * logs.TEXT_LIMIT, f"{len(said)} characters"
    monkeypatch.setenv("LIVE_APPLIANCE_BUTTON_MODE", "y" * 100_000)
    assert main(["run", "--config", str(tmp_path / "empty.toml")]) == 2
    assert len(capsys.readouterr().err) < 2 * logs.TEXT_LIMIT


def test_a_configuration_this_user_may_not_read_says_how_to_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The installed configuration is root's and the service group's: an owner not (yet)
    in the group was told of a configuration error, and the doctor to correct a setting."""
    settings = tmp_path / "config.toml"
    settings.write_text("[audio]\nvolume = 0.5\n")
    open_refused(monkeypatch, lambda path: path == settings)
    assert main(["ctl", "status", "--config", str(settings)]) == 2
    said = capsys.readouterr().err
    assert "configuration error" not in said
    assert "cannot read: Permission denied. Run it with sudo, or as a member" in said
    main(["doctor", "--config", str(settings)])
    shown = capsys.readouterr().out
    assert "fix: Run it with sudo" in shown and "Correct that setting" not in shown


async def test_ctl_status_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`ctl status | head -1` printed a BrokenPipeError traceback under the line it showed."""
    sock = tmp_path / "control.sock"

    async def daemon(request: dict[str, Any]) -> dict[str, Any]:
        return {"state": "idle", "status": "idle", "turns": []}

    async with ControlServer(sock, daemon):
        code, err = await with_reader_gone("ctl", "status", "--socket", str(sock))
        json_code, json_err = await with_reader_gone(
            "ctl", "status", "--json", "--socket", str(sock)
        )
    assert (code, err) == (EXIT_PIPE, "")
    assert (json_code, json_err) == (EXIT_PIPE, "")


async def test_doctor_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`doctor | head -3` (the first lines of a long report): the next line it printed
    raised BrokenPipeError, a traceback in the middle of the owner's terminal."""
    settings = tmp_path / "config.toml"
    settings.write_text(f'[control]\nsocket = "{tmp_path / "control.sock"}"\n')
    code, err = await with_reader_gone("doctor", "config", "--config", str(settings))
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code == EXIT_PIPE


#: Each a tenth of a second or more on a Pi Zero (google-genai alone a second): none of
#: them is needed to print help, talk to the control socket or refuse a configuration.
HEAVY = (
    "google.genai", "google.auth", "numpy", "pydantic", "websockets", "PIL", "simplejpeg",
    "soxr", "webrtc_audio_processing", "gpiozero", "picamera2", "pyaudio",
)  # fmt: skip

HELP_COMMANDS = [
    [],
    ["run"],
    ["ctl"],
    ["ctl", "press"],
    ["ctl", "release"],
    ["ctl", "status"],
    ["ctl", "text"],
    ["devices"],
    ["leds-off"],
    ["doctor"],
    ["ask"],
]


def heavy_after(argv: list[str], *, allowed: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The exit code of `live-appliance ARGV` in a Python of its own, and the heavy
    modules (`allowed` apart) it had imported by then."""
    probe = (
        "import json, sys\n"
        "from device.cli import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules and m not in {allowed!r}]\n"
        "print(code, json.dumps(heavy), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, env=env
    )
    code, _, heavy = result.stderr.strip().splitlines()[-1].partition(" ")
    return code, json.loads(heavy)


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_every_help_imports_nothing_heavy(command: list[str]) -> None:
    assert heavy_after([*command, "--help"]) == ("0", [])


def test_devices_imports_portaudio_and_nothing_else_heavy(tmp_path: Path) -> None:
    settings = tmp_path / "config.toml"
    settings.write_text(
        f'[tools]\nenabled = ["get_time"]\n[control]\nsocket = "{tmp_path / "none.sock"}"\n'
    )
    code, heavy = heavy_after(["devices", "--config", str(settings)], allowed=("pyaudio",))
    assert code in ("0", "1") and heavy == []


@pytest.mark.parametrize("check", ["config", "key", "power", "card", "service"])
def test_a_doctor_check_that_needs_no_sdk_imports_nothing_heavy(
    check: str, tmp_path: Path
) -> None:
    """`doctor service` over SSH, to ask how the service does: every check imported the
    Live SDK, numpy and PortAudio first (1.2-1.8 s here, seconds on a Pi), for the
    network and audio checks only."""
    settings = tmp_path / "config.toml"
    settings.write_text(f'[control]\nsocket = "{tmp_path / "none.sock"}"\n')
    code, heavy = heavy_after(["doctor", check, "--json", "--config", str(settings)])
    assert code in ("0", "1") and heavy == []


def test_ask_refuses_a_configuration_before_importing_numpy(tmp_path: Path) -> None:
    """A configuration file missing or wrong is said at once: numpy (half a second on a
    Pi Zero) is for writing the reply's WAV, which no refused `ask` gets to."""
    settings = tmp_path / "config.toml"
    settings.write_text("[audio]\nchunk_ms = 'soon'\n")
    assert heavy_after(["ask", "Hello", "--config", str(tmp_path / "none.toml")]) == ("2", [])
    assert heavy_after(["ask", "Hello", "--config", str(settings)]) == ("2", [])


def test_a_daemon_that_takes_the_request_and_never_answers_is_named_hung(
    tmp_path: Path,
) -> None:
    """Its event loop stuck: the kernel queues the connection and takes the line. After
    the bound the owner reads that it is hung and what to do, as for a daemon whose
    queue is full."""
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(8)  # never accepted: a loop that no longer runs
        started = time.monotonic()
        with pytest.raises(ControlError) as raised:
            request(path, "status", timeout=0.3)
    assert time.monotonic() - started < 2
    message = str(raised.value)
    assert "0.3 s" in message and "sudo systemctl restart live-appliance" in message


def test_ctl_status_lists_the_last_turns_with_their_timings() -> None:
    """What an owner reads to see why the box feels slow: each finished turn's timings, in
    ms below ten seconds and in seconds past, and a dash for what the turn never had. A
    turn that ended in the error state says so: it read as any turn that had no reply (a
    press with nothing said), and only the journal said "failed"."""
    turns = TurnLog()
    turns.start(100.0, "s1")
    turns.sent("audio", 100.12)
    turns.released(103.0)
    turns.sent("activity_end", 103.03)
    turns.reply_received(103.9)
    turns.finish(112.5, "s1")
    turns.start(120.0, "s1")  # a press that sent nothing before the box went wrong
    turns.released(120.4)
    turns.finish(121.0, "s1", failed=True)
    lines = summary_lines({"state": "idle", "turns": turns.recent()})
    assert lines[-3:] == [
        "last 2 turns:",
        "  turn 1: press to first audio sent 120 ms, release to end of turn sent 30 ms, "
        "release to first reply 900 ms, whole turn 12.5 s",
        "  turn 2 (failed): press to first audio sent -, release to end of turn sent -, "
        "release to first reply -, whole turn 1000 ms",
    ]
    assert one_line({"state": "idle", "turns": turns.recent()}).endswith(
        "last turn 2 (failed): press to first audio sent -, release to end of turn sent -, "
        "release to first reply -, whole turn 1000 ms"
    )



def _daemon_answering(path: Path, answer: bytes) -> threading.Thread:
    """A control socket that reads one request and answers `answer` (a daemon of another
    version, or one stopping), in a thread."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        with server, server.accept()[0] as client:
            client.recv(65536)
            client.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("args", "answer", "said", "code"),
    [
        (["text", "hello"], b'{"ok": false, "error": "busy: someone is holding the button"}\n',
         "live-appliance ctl text: busy: someone is holding the button\n", 1),
        (["status"], b"", "closed the connection without answering", 1),
        (["status"], b"<html>\n", "answered with bad JSON", 1),
        (["status"], b"[1, 2]\n", "answered with [1, 2], not an object", 1),
    ],
    ids=["refused", "closed", "not json", "not an object"],
)
def test_ctl_says_what_the_daemon_answered_when_it_is_no_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], answer: bytes,
    said: str, code: int,
) -> None:
    """The owner's `ctl` over SSH: a refusal is the daemon's own words on stderr, and an
    answer that is none says so, with exit status 1 for a script that checks it."""
    path = tmp_path / "control.sock"
    served = _daemon_answering(path, answer)
    assert main(["ctl", args[0], "--socket", str(path), *args[1:]]) == code
    served.join(10)
    err = capsys.readouterr().err
    assert said in err, err


def test_ctl_status_prints_the_summary_not_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "control.sock"
    status = {"ok": True, "state": "idle", "session_open": False, "volume": 0.5, "turns": []}
    served = _daemon_answering(path, json.dumps(status).encode() + b"\n")
    assert main(["ctl", "status", "--socket", str(path)]) == 0
    served.join(10)
    out = capsys.readouterr().out
    assert out.splitlines()[1:] == [
        "session:  closed", "audio:    volume 50%", "no finished turns yet",
    ], out


@pytest.mark.parametrize("device", ["microphone", "speaker"])
def test_ctl_status_says_a_sound_card_plugged_in_is_tried_at_once(device: str) -> None:
    """A USB card gone for an hour: `ctl status` said it is tried "less often the longer it
    stays away", and the owner who plugged it back in waited, or restarted the service,
    where the box looks at the sound hardware every second and tries a new card at once."""
    from device.doctor.daemon import summary_lines

    lines = summary_lines({"status": f"error: {device}: gone", "faults": [device]})
    (faults,) = [line for line in lines if line.startswith("faults:")]
    assert "at once" in faults and "plugged in" in faults, faults
    button = summary_lines({"status": "error: button", "faults": ["button"]})
    assert not any("plugged in" in line for line in button), button  # a GPIO line: no card


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
        code, err = await ctl(sock, "text", words)
    assert (code, err) == (0, "")
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


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [("devices",), ("doctor", "--no-button"), ("ask", "Hello")])
def test_a_python_without_the_packages_dependencies_says_which_command_to_use(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """README: "`python -m device ...` is the same command". In a checkout, the system's
    `python3 -m device doctor` (not the venv's) ended in a traceback, ModuleNotFoundError:
    No module named 'pyaudio', and nothing said that the checkout's own command is
    `.venv/bin/live-appliance`. `-S` leaves out site-packages: the package's own modules
    are there (run from the checkout), its dependencies are not."""
    settings = tmp_path / "config.toml"
    settings.write_text("")
    env = {**os.environ, "GEMINI_API_KEY": "AIzaNotARealKey"}
    result = subprocess.run(
        [sys.executable, "-S", "-m", "device", *command, "--config", str(settings)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert "No module named" in result.stderr and ".venv/bin/live-appliance" in result.stderr
