"""Tests that kill hand mutants of stop 54's code which the suite let live: each checks
something a Pi owner sees (journal words, what reaches the service, doctor output)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeActions, Gate, gated_tools, running
from google.genai import types
from helpers import until
from system_view import device_after
from test_control import GUEST, Daemon, Line, _run_as_member
from test_live_connection import Seen, ToolAnswers, audio, connection, content, tool_call
from test_states import DONE, REPLY, SETUP, names, reconnecting, run
from test_tools import WAIT_S, run_alone

from device import ask as ask_mod
from device import config, logs
from device import states as s
from device.cli import main
from device.config import ToolsConfig
from device.control import ControlServer
from device.live.connection import TOOL_CALLS_LIMIT
from device.live.errors import describe_failure
from device.live.turn import UNSAVED_MOST_S, WireTurn, unsaved_limit
from device.live.wire import MIC_RATE
from device.states import Machine
from device.tools import TOOL_THREADS_LIMIT, Device, Registry, ToolBox, declarations


def test_an_undeclarable_parameter_is_named_with_the_types_that_work() -> None:
    """A tuple parameter the Live API cannot declare: the journal names the parameter and
    says which types work, not pydantic's text cut to one line (a careless bound on the
    error's location fell back to that, still naming the tool and the word "position")."""
    registry = Registry()

    @registry.tool
    def point_camera(device: Device, position: tuple[int, int]) -> dict[str, Any]:
        """Turn the camera to an x, y position."""
        return {"position": list(position)}

    with pytest.raises(TypeError) as caught:
        declarations(ToolsConfig(enabled=("point_camera",)), registry)
    said = str(caught.value)
    assert said.startswith("tool point_camera: parameter position: "), said
    assert "the Live API cannot declare its type" in said, said
    assert "use int, float, str, bool, a Literal, an Enum, or a list of one of them" in said


@pytest.mark.parametrize("words", [True, False], ids=["words", "counts"])
def test_a_reply_interrupted_and_ended_in_one_message_is_said_cut_short(
    caplog: pytest.LogCaptureFixture, words: bool
) -> None:
    """The service may end a reply its VAD cut in one message, interrupted with its
    turnComplete: the journal's line for it must say "cut short" (LIVE_REPLY_CUT=1) as it
    does when the two come apart; a careless flag made it "model said: <every word>", as
    for a reply heard whole."""
    seen, turn = Seen(), WireTurn(log_transcripts=words)
    conn = connection(seen, turn)
    caplog.set_level(logging.INFO)
    conn._dispatch(audio(b"\x01\x00" * 100))
    said = types.Transcription(text="Tomorrow will be sunny and warm.")
    conn._dispatch(content(output_transcription=said))
    conn._dispatch(content(interrupted=True, turn_complete=True))
    (line,) = [r for r in caplog.records if r.getMessage().startswith(("model said", "turn "))]
    assert getattr(line, "LIVE_REPLY_CUT", None) == 1, line.getMessage()
    assert "cut short" in line.getMessage(), line.getMessage()


def test_a_press_past_what_is_kept_says_the_seconds_lost_to_two_figures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A press held 2.5 s past what is kept to send again, then a switch: the journal says
    its first 2.5 s are lost, not "2 s" (nor "0 s" for a press a chunk past it)."""
    half = b"\x01\x00" * (MIC_RATE // 2)
    turn = WireTurn(unsaved_limit=unsaved_limit(3600))
    turn.sent("activity_start")
    for _ in range(round(UNSAVED_MOST_S * 2) + 5):
        turn.spoke(half)
    with caplog.at_level(logging.WARNING):
        turn.words_to_repeat()
    assert "its first 2.5 s are lost" in caplog.text, caplog.text


def test_a_reply_cut_before_any_of_its_words_is_not_said_cut_in_the_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Words kept out of the journal: a reply cut before any of its words came is a turn
    of the person's words alone, "1 words heard, 0 said", with nothing said cut short (no
    LIVE_REPLY_CUT): there were no words of the model's to cut."""
    seen, turn = Seen(), WireTurn(log_transcripts=False)
    conn = connection(seen, turn)
    caplog.set_level(logging.INFO)
    conn._dispatch(content(input_transcription=types.Transcription(text="weather?")))
    conn._dispatch(audio(b"\x01\x00" * 100))
    conn._dispatch(content(interrupted=True, turn_complete=True))
    (line,) = [r for r in caplog.records if r.getMessage().startswith("turn transcript")]
    assert line.getMessage() == "turn transcript: 1 words heard, 0 said (words not logged)"
    assert getattr(line, "LIVE_REPLY_CUT", None) is None


def test_the_restart_earcon_of_a_session_started_afresh_plays_once_at_the_release() -> None:
    """Push-to-talk: the session started afresh while the button was held, and its
    earcon waits for the release (not beeped into the question). It is said once: the
    next question's release plays no restart earcon, as though the session had started
    afresh again; and with the button up, a session started afresh says so at once."""
    afresh = s.Reconnected(session=1, history_lost=True)
    m, _, held = run(Machine(), s.Pressed(), SETUP, reconnecting("goAway"), afresh)
    assert "play_earcon:restart" not in names(held), names(held)
    m, _, released = run(m, s.Released())
    assert names(released).count("play_earcon:restart") == 1, names(released)
    m, seen, again = run(m, REPLY, DONE, s.PlaybackDrained(), s.Pressed(), s.Released())
    assert seen[-1] is s.State.THINKING, seen
    assert "play_earcon:restart" not in names(again), names(again)
    # The button up (the question out, its answer awaited), it plays at once.
    moved = s.Reconnecting(session=1, reason="goAway", reply_lost=False)
    _, _, thinking = run(m, moved, afresh)
    assert "play_earcon:restart" in names(thinking), names(thinking)


def test_a_model_name_pasted_with_a_typo_still_names_the_one_meant(tmp_path: Path) -> None:
    """A heading pasted with a slip of the keys as well ("Gemini 3.8 Lvie"): the start
    is refused, and the line still offers the model meant, not only the rule."""
    path = tmp_path / "config.toml"
    path.write_text('[live]\nmodel = "Gemini 3.8 Lvie"\n')
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, key=False)
    assert str(caught.value).endswith("(got 'Gemini 3.8 Lvie'); did you mean 'gemini-3.8-live'?")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="makes the service's place as root"
)
def test_the_service_refused_its_own_place_stays_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service itself (systemd gives it NOTIFY_SOCKET) refused the directory of its
    socket, another user's: that is the configuration's to fix, status 2 (systemd does not
    restart it for ever), not the by-hand copy's "stop the service and run as that user"."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    with tempfile.TemporaryDirectory(prefix="live-appliance-service-") as place:
        ran = _run_as_member(Path(place))
    assert ran.returncode == 2, (ran.returncode, ran.stderr)
    assert "configuration error" in ran.stderr, ran.stderr
    assert "systemctl start live-appliance" not in ran.stderr, ran.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="asks as another user")
@pytest.mark.parametrize(
    ("gid", "told"),
    [
        (0, "only root may use it: run it with sudo"),  # a copy run by hand with sudo
        (54321, "run as a member of its group, or with sudo"),  # a group with no name
    ],
    ids=["root", "unnamed"],
)
def test_a_guest_refused_by_the_control_socket_is_told_who_may_use_it(
    open_dir: Path, gid: int, told: str
) -> None:
    """A guest refused by the socket's directory is told who may use it by that
    directory's group: root's alone (no group to join), or a group with no name (no
    name to join, and not that of some directory above it)."""
    run_dir = open_dir / "live-appliance"
    run_dir.mkdir()
    os.chown(run_dir, 0, gid)
    run_dir.chmod(0o750)
    asked = subprocess.run(
        ["setpriv", f"--reuid={GUEST}", f"--regid={GUEST}", "--clear-groups", sys.executable,
         "-m", "device", "ctl", "status", "--socket", str(run_dir / "control.sock")],
        env={**os.environ, "PYTHONPATH": os.getcwd(), "HOME": "/tmp"}, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert asked.returncode == 1, asked.stderr
    assert asked.stderr.rstrip().endswith(f"permission denied on {run_dir}/control.sock: {told}")


def test_a_run_directory_with_room_for_the_lock_but_not_the_socket_is_no_configuration_error(
    tmp_path: Path,
) -> None:
    """/run out of inodes one file later: the lock made, the socket not. As for the lock,
    the place is said full with how to see it, and the daemon exits 1 (systemd tries
    again), not 2 ("configuration error", the box off until the retry timer)."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[control]\nsocket = "{run / "control.sock"}"\n')
    lock_only = f"mount -t tmpfs -o nr_inodes=2 tmpfs {run}"  # its root's, then the lock's
    done = device_after(lock_only, "run", "--config", str(cfg))
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "configuration error" not in done.stderr, done.stderr
    assert f"cannot listen on {run / 'control.sock'}" in done.stderr, done.stderr
    assert f"df -h -i {run}" in done.stderr, done.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="runs as another user")
def test_a_socket_place_of_ones_own_that_refuses_is_a_configuration_error(
    open_dir: Path,
) -> None:
    """A copy run by hand whose [control] socket is in a directory of its own user that
    it may not write (0500, its lock already there): a configuration to correct, status
    2, not "the place is user <themselves>'s, the service's: run as that user"."""
    run_dir = open_dir / "run"
    run_dir.mkdir()
    (run_dir / "control.sock.lock").write_text("")
    for place in (run_dir, run_dir / "control.sock.lock"):
        os.chown(place, GUEST, GUEST)
    run_dir.chmod(0o500)
    cfg = open_dir / "config.toml"
    cfg.write_text(f'[control]\nsocket = "{run_dir / "control.sock"}"\n')
    ran = subprocess.run(
        ["setpriv", f"--reuid={GUEST}", f"--regid={GUEST}", "--clear-groups",
         sys.executable, "-m", "device", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).parents[1],
        env={**os.environ, "GEMINI_API_KEY": "AIza" + "x" * 35, "HOME": "/tmp"},
    )  # fmt: skip
    assert ran.returncode == 2, (ran.returncode, ran.stderr)
    assert "configuration error: [control] socket: cannot listen" in ran.stderr, ran.stderr
    assert "sudo -u" not in ran.stderr, ran.stderr


def test_addresses_failing_the_same_way_say_the_reason_once() -> None:
    """Both of the host's addresses (IPv6 and IPv4) unreachable the same way, as when the
    Wi-Fi is up without its router: the line says the reason once, not once an address
    ("Network is unreachable; Network is unreachable")."""
    both = OSError(
        "Multiple exceptions: [Errno 101] Connect call failed ('2001:db8::1', 443, 0, 0), "
        "[Errno 101] Connect call failed ('192.0.2.7', 443)"
    )
    unreachable = os.strerror(errno.ENETUNREACH)
    said = describe_failure(both)
    assert said == f"network: {unreachable} (each address of the host tried)", said


@pytest.mark.skipif(os.geteuid() != 0, reason="what `sudo` may write: needs root")
def test_sudo_ask_audio_on_a_card_with_only_roots_reserve_left_runs_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sudo live-appliance ask --audio reply.wav` on a card whose free blocks are only
    those kept for root (ext4's 5%): root writes the reply there, so the question is
    asked, not refused "No space left on device" before the session."""
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFakeKeyForTheTest0000000000000000000")
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    wav = tmp_path / "reply.wav"
    real = os.statvfs

    def reserve_only(path: Any) -> Any:
        room = real(path)
        if os.fspath(path) != str(wav):
            return room
        fields = list(room)  # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, ...
        fields[3], fields[4] = 1000, 0  # free blocks, none of them for users
        return os.statvfs_result(fields)

    asked = []

    async def replies(cfg: Any, args: Any) -> list[Any]:
        asked.append(args)
        return []

    monkeypatch.setattr(os, "statvfs", reserve_only)
    monkeypatch.setattr(ask_mod, "_ask_and_play", replies)
    main(["ask", "Hello", "--audio", str(wav), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert os.strerror(errno.ENOSPC) not in err, err
    assert asked, "the question was refused before the session"


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="writes as another user"
)
def test_a_reply_kept_by_a_user_sudo_made_not_root_is_written_as_theirs(open_dir: Path) -> None:
    """`sudo -u someone live-appliance ask --audio reply.wav`: sudo names the owner who
    typed it (SUDO_UID), but the command runs as `someone`, not root, and may give no file
    away. The reply is kept, theirs, and the ask does not fail on it."""
    out = open_dir / "reply.wav"
    os.chown(open_dir, GUEST, GUEST)
    write = (
        "from device.audio.pcm import write_wav\n"
        f"write_wav({str(out)!r}, bytes(4800), 24000, private=True)\n"
    )
    ran = subprocess.run(
        ["setpriv", f"--reuid={GUEST}", f"--regid={GUEST}", "--clear-groups",
         sys.executable, "-c", write],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": os.getcwd(), "SUDO_UID": "4321", "SUDO_GID": "4322"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert out.read_bytes()[:4] == b"RIFF"
    assert (out.stat().st_uid, out.stat().st_mode & 0o777) == (GUEST, 0o600)


async def test_a_button_flood_after_the_queue_emptied_is_said_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A chattering pin floods the presses waiting: one line says presses are ignored.
    Once the machine has taken them (the bound kept again), a new flood is news, said
    again (at most a minute after the last, here at once), with its count: it was one
    line for the life of the service."""
    monkeypatch.setattr(logs.SaidOnce, "EVERY_S", 0.0)
    caplog.set_level(logging.WARNING, logger="device.appliance")
    ignored = lambda: [r for r in caplog.records if "press ignored" in r.getMessage()]  # noqa: E731
    async with running(tmp_path) as box:
        for flood in (1, 2):
            for _ in range(100):
                box.button.on_edge("pressed", 0.0)
                box.button.on_edge("released", 0.0)
            await box.settle()
            assert len(ignored()) == flood, [r.getMessage() for r in ignored()]


async def test_tools_busy_again_after_the_threads_came_free_is_said_again(
    gate: Gate, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every tool thread hung, a call refused busy: one LIVE_BOUND=tool_threads line. The
    threads came free and a call ran; hung again later, the new run of refusals is news,
    said again (at most a minute after the last, here at once): it was one line for the
    life of the service."""
    monkeypatch.setattr(logs.SaidOnce, "EVERY_S", 0.0)
    tools = ToolsConfig(enabled=("slow",), timeout_s=0.1)
    toolbox = ToolBox(tools, FakeActions(), registry=gated_tools(gate))
    bounds = lambda: [  # noqa: E731
        r for r in caplog.records if getattr(r, "LIVE_BOUND", "") == "tool_threads"
    ]
    tool_threads = lambda: sum(t.name == "tool" for t in threading.enumerate())  # noqa: E731
    for hung in (1, 2):
        for _ in range(TOOL_THREADS_LIMIT):  # each hangs past its timeout
            assert await run_alone(toolbox, "slow") == {"error": "timed out after 0.1 s"}
        busy = await run_alone(toolbox, "slow")
        assert busy["error"].startswith("the device is busy"), busy
        assert len(bounds()) == hung, [r.getMessage() for r in bounds()]
        gate.opened.set()  # the hung calls return: a call runs again
        await until(lambda: tool_threads() == 0, WAIT_S)
        assert await run_alone(toolbox, "slow") == {"done": True}
        gate.opened.clear()


async def test_ctl_clients_crowding_again_after_room_came_back_are_said_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client refused because the control socket is full: one LIVE_BOUND=control_clients
    line. Room came back and a client was answered; a new crowd later is news, said again
    (at most a minute after the last, here at once): it was one line for the life of the
    service."""
    monkeypatch.setattr(logs.SaidOnce, "EVERY_S", 0.0)
    path = tmp_path / "run" / "ctl.sock"
    daemon, answering = Daemon(), asyncio.Event()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        await answering.wait()
        return await daemon(req)

    bounds = lambda: [  # noqa: E731
        r for r in caplog.records if getattr(r, "LIVE_BOUND", "") == "control_clients"
    ]
    async with ControlServer(path, slow, clients_limit=1, idle_s=0.5):
        for crowd in (1, 2):
            held = await Line.open(path)
            held.writer.write(b'{"cmd": "status"}\n')
            await asyncio.sleep(0.1)
            extra = await Line.open(path)
            async with asyncio.timeout(5):
                assert "busy" in json.loads(await extra.reader.readline())["error"]
            await extra.close()
            assert len(bounds()) == crowd, [r.getMessage() for r in bounds()]
            answering.set()
            async with asyncio.timeout(5):
                assert json.loads(await held.reader.readline())["state"] == "idle"
            await held.close()
            await asyncio.sleep(0.1)  # its task gone: room again
            answering.clear()


async def test_a_tool_call_flood_after_the_calls_ran_out_is_said_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The service calls more tools than may run at once: one LIVE_BOUND=tool_calls line.
    The calls ran out and one more ran with room; a new flood later is news, said again
    (at most a minute after the last, here at once): it was one line for the life of the
    connection."""
    monkeypatch.setattr(logs.SaidOnce, "EVERY_S", 0.0)
    turn, session = WireTurn(), ToolAnswers()
    conn = connection(Seen(), turn, session)
    bounds = lambda: [  # noqa: E731
        r for r in caplog.records if getattr(r, "LIVE_BOUND", "") == "tool_calls"
    ]
    async with asyncio.TaskGroup() as group:
        conn._group = group
        for flood in ("a", "b"):
            conn._dispatch(tool_call(flood, TOOL_CALLS_LIMIT + 1))
            await until(lambda: not conn._tool_runs)
            conn._dispatch(tool_call(f"{flood}-alone-", 1))  # room for it
            await until(lambda: not conn._tool_runs)
    assert len(bounds()) == 2, [r.getMessage() for r in bounds()]
