"""`live-appliance ask` as an owner runs it, against the local Live server over TLS."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import proxy
from test_control import GUEST

from device import ask as ask_mod
from device.audio import pcm
from device.audio.pcm import write_wav
from device.cli import main
from device.live.client import Reply
from rig.daemon import rig_settings, scratch_dir, to_toml
from rig.loopback import PulseLoopback
from rig.server.server import ServerThread
from rig.server.voice import reply_audio, tone_frequency

REPLY_SECONDS = 0.6


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(pace=0, reply_seconds=REPLY_SECONDS) as thread:
        yield thread


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = scratch_dir("ask-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ask(
    scratch: Path, base_url: str, env: dict[str, str], *args: str, encoding: str | None = None
) -> subprocess.CompletedProcess[str]:
    cfg = scratch / "config.toml"
    settings = rig_settings(base_url, scratch)
    settings["live"]["transcripts"] = False  # ask turns output transcription on by itself
    cfg.write_text(to_toml(settings))
    return subprocess.run(
        [sys.executable, "-m", "device", "ask", *args, "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        encoding=encoding,
        timeout=60,
    )


def env_for(loopback: PulseLoopback, server: ServerThread, key: str | None = None) -> dict:
    return {
        **loopback.child_env(),
        "GEMINI_API_KEY": key or server.api_key,
        "SSL_CERT_FILE": server.ca_file,
    }


def silent_env(server: ServerThread, **extra: str) -> dict[str, str]:
    """For a turn that plays nothing: no sound server needed."""
    return {**os.environ, "GEMINI_API_KEY": server.api_key, "SSL_CERT_FILE": server.ca_file,
            **extra}  # fmt: skip


def test_two_turns_in_one_session_print_the_replies_and_keep_their_audio(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    out = scratch / "reply.wav"
    result = ask(
        scratch,
        server.base_url,
        env_for(loopback, server),
        "What is the tallest mountain?",
        "And the second tallest?",
        "--audio",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'Reply 1: you said "What is the tallest mountain?".',
        'Reply 2: you said "And the second tallest?".',
    ]
    assert "turn 1: first audio after" in result.stderr
    assert len(server.log.connections()) == 1  # one session for both turns
    with wave.open(str(out)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        assert wav.readframes(wav.getnframes()) == reply_audio(1, REPLY_SECONDS) + reply_audio(
            2, REPLY_SECONDS
        )


def test_replies_in_odd_parts_beside_other_parts_are_kept_whole(
    loopback: PulseLoopback, scratch: Path
) -> None:
    out = scratch / "reply.wav"
    options = {"odd_parts": True, "other_parts": True}
    with ServerThread(pace=0, reply_seconds=REPLY_SECONDS, **options) as server:
        result = ask(scratch, server.base_url, env_for(loopback, server), "Hi", "--audio", str(out))
    assert result.returncode == 0, result.stderr
    with wave.open(str(out)) as wav:
        assert wav.readframes(wav.getnframes()) == reply_audio(1, REPLY_SECONDS)


def test_a_reply_at_16_khz_is_kept_at_24_khz_with_its_pitch_and_length(
    loopback: PulseLoopback, scratch: Path
) -> None:
    out = scratch / "reply.wav"
    with ServerThread(pace=0, reply_seconds=REPLY_SECONDS, reply_rate=16000) as server:
        result = ask(scratch, server.base_url, env_for(loopback, server), "Hi", "--audio", str(out))
    assert result.returncode == 0, result.stderr
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 24000
        audio = wav.readframes(wav.getnframes())
    assert abs(len(audio) / 2 - REPLY_SECONDS * 24000) < 48
    assert abs(pcm.dominant_frequency(audio, 24000) - tone_frequency(1)) < 5


def test_play_sends_the_reply_to_the_speaker(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    recorder = loopback.record(24000)
    try:
        recorder.wait_started()
        result = ask(scratch, server.base_url, env_for(loopback, server), "Hello", "--play")
    finally:
        heard = recorder.stop()
    assert result.returncode == 0, result.stderr
    assert abs(pcm.dominant_frequency(heard, 24000) - tone_frequency(1)) < 20


def test_a_wrong_key_is_one_line_and_exit_code_1(
    loopback: PulseLoopback, server: ServerThread, scratch: Path
) -> None:
    result = ask(scratch, server.base_url, env_for(loopback, server, "wrong-key-42"), "Hello")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "live-appliance ask: setup: the service refused the API key (close code 1008" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "wrong-key-42" not in result.stderr


def test_server_down(loopback: PulseLoopback, server: ServerThread, scratch: Path) -> None:
    result = ask(scratch, "https://127.0.0.1:9", env_for(loopback, server), "Hello")
    assert result.returncode == 1
    assert "live-appliance ask: setup: TCP: connection refused" in result.stderr


def test_ask_in_a_latin1_terminal_prints_the_reply_not_a_failure_of_the_service(
    server: ServerThread, scratch: Path
) -> None:
    """A German reply's quotes („…“) are not in Latin-1: the turn went well, and the owner
    was told the service sent a message that cannot be decoded (exit 1, no words)."""
    env = silent_env(server, PYTHONIOENCODING="latin-1")
    result = ask(scratch, server.base_url, env, "„Grüße“", encoding="latin-1")
    assert result.returncode == 0, result.stderr
    assert "Grüße" in result.stdout


def test_ask_prints_one_line_per_turn_whatever_the_reply_holds(
    server: ServerThread, scratch: Path
) -> None:
    """ask's stdout is one line per turn, so it can be piped: a reply whose words hold a
    line break (here the local server's echo of the question) must not make it two."""
    result = ask(scratch, server.base_url, silent_env(server),
                 "Erste Zeile\nzweite Zeile", "Noch eine Frage")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'Reply 1: you said "Erste Zeile zweite Zeile".',
        'Reply 2: you said "Noch eine Frage".',
    ]


def test_a_proxy_setting_urllib_cannot_parse_is_said_as_the_proxy_setting(
    server: ServerThread, scratch: Path
) -> None:
    """HTTPS_PROXY with a bracket left open: websockets raises a bare ValueError, and ask
    said "the service sent a message that cannot be decoded", as if the service were at
    fault."""
    env = silent_env(server, https_proxy="http://[bad")
    for name in ("HTTPS_PROXY", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        env.pop(name, None)
    result = ask(scratch, server.base_url, env, "Hello")
    assert result.returncode == 1
    assert (
        "live-appliance ask: setup: proxy: HTTPS_PROXY's http://[bad cannot be used: "
        "Invalid IPv6 URL" in result.stderr
    ), result.stderr


async def test_a_proxy_whose_certificate_is_not_trusted_is_said_without_a_library_traceback(
    server: ServerThread, scratch: Path
) -> None:
    """A school's proxy that shows its own certificate: ask names the TLS failure, and the
    terminal got two tracebacks of websockets' own beside it ("Exception in callback
    Connection.connection_lost ... no attribute 'recv_messages'", a fault of its connect
    through a proxy), a bug's words the daemon's journal had at ERROR on every try."""
    port = urlsplit(server.base_url).port
    async with proxy(to_port=port) as (proxy_port, asked):
        env = silent_env(server, https_proxy=f"http://127.0.0.1:{proxy_port}")
        for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "ALL_PROXY", "all_proxy",
                     "NO_PROXY", "no_proxy"):  # fmt: skip
            env.pop(name, None)  # the proxy's certificate is not trusted
        result = await asyncio.to_thread(ask, scratch, server.base_url, env, "Hello")
    assert asked, "went through the proxy"
    assert result.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


OWNER_UID, OWNER_GID = 4321, 4322  # who typed `sudo`


@pytest.mark.skipif(os.geteuid() != 0, reason="what `sudo` writes: needs root")
def test_sudo_ask_keeps_the_reply_audio_for_the_owner_who_asked_not_for_every_user(
    server: ServerThread, tmp_path: Path
) -> None:
    """`sudo live-appliance ask "..." --audio /tmp/reply.wav` (sudo: only root may read the
    key) left the reply root's and 0644: any guest on the box could play what the box
    told the owner, and the owner could not write over it without sudo again."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(to_toml(rig_settings(server.base_url, tmp_path)))
    out = tmp_path / "reply.wav"
    out.write_bytes(b"an earlier run's, root's")
    out.chmod(0o644)
    env = {
        **os.environ,
        "GEMINI_API_KEY": server.api_key,
        "SSL_CERT_FILE": server.ca_file,
        "SUDO_UID": str(OWNER_UID),
        "SUDO_GID": str(OWNER_GID),
    }
    result = subprocess.run(
        [sys.executable, "-m", "device", "ask", "Hello", "--audio", str(out), "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),  # sudo's, as on Raspberry Pi OS
    )
    assert result.returncode == 0, result.stderr
    saved = out.stat()
    assert out.read_bytes()[:4] == b"RIFF"
    assert saved.st_mode & 0o077 == 0, f"others may read it: {saved.st_mode & 0o777:o}"
    assert (saved.st_uid, saved.st_gid) == (OWNER_UID, OWNER_GID)


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

    async def replies(cfg: Any, args: Any, _kept: list[Any]) -> list[Any]:
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


def test_sudo_ask_keeps_the_reply_on_a_file_system_that_refuses_a_new_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sudo live-appliance ask "..." --audio /mnt/stick/reply.wav`, a FAT stick mounted by
    root (fstab): FAT keeps no owners, and the kernel answers a chown to another user with
    EPERM (here a chown that refuses stands in for it, none being mountable here). The
    reply was asked, paid for, and then not written ("Operation not permitted"), where
    before the reply was made the owner's it was written; it is written, as the mount
    makes every file there."""
    monkeypatch.setenv("SUDO_UID", "4321")  # `sudo` by uid 4321
    monkeypatch.setenv("SUDO_GID", "4322")
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root's, as under sudo

    def fat_chown(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "fchown", fat_chown)
    out = tmp_path / "reply.wav"
    write_wav(out, b"\x01\x00" * 2400, 24000, private=True)
    assert out.read_bytes()[:4] == b"RIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reply.wav"]  # no .tmp left


OWNER_UID, OWNER_GID = 4321, 4322  # who typed `sudo`


@pytest.mark.skipif(os.geteuid() != 0, reason="what `sudo` writes: needs root")
def test_sudo_ask_through_a_link_keeps_the_reply_for_the_owner_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sudo live-appliance ask "..." --audio ~/latest.wav`, latest.wav a link the owner made
    to where today's reply goes: a link is written in place, through it, and the reply
    was made root's and 0644 by sudo's umask, any local user's to play and not the
    owner's to replace, what the README says it is not ("yours alone to read, also under
    sudo"). Written through the link, it is the owner's and 0600, as when no link is
    there; a device or a pipe there is written as it is."""
    monkeypatch.setenv("SUDO_UID", str(OWNER_UID))
    monkeypatch.setenv("SUDO_GID", str(OWNER_GID))
    (tmp_path / "replies").mkdir()
    target = tmp_path / "replies" / "today.wav"
    link = tmp_path / "latest.wav"
    link.symlink_to(target)
    umask = os.umask(0o022)  # sudo's, as on Raspberry Pi OS
    try:
        write_wav(link, b"\x01\x00" * 2400, 24000, private=True)
        write_wav("/dev/null", b"\x01\x00" * 2400, 24000, private=True)
    finally:
        os.umask(umask)
    assert link.is_symlink() and target.read_bytes()[:4] == b"RIFF"
    saved = target.stat()
    assert saved.st_mode & 0o077 == 0, f"others may read it: {saved.st_mode & 0o777:o}"
    assert (saved.st_uid, saved.st_gid) == (OWNER_UID, OWNER_GID)
    null = os.stat("/dev/null")
    assert (null.st_uid, null.st_mode & 0o777) == (0, 0o666), "the device was made private"


async def test_a_terminal_gone_as_a_reply_prints_keeps_the_replies_for_their_audio(
    server: ServerThread, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SSH connection dropped as a reply was printed (EIO, not a closed pipe): `ask`
    ended in a traceback, and the audio of the turns done was never written to --audio."""
    from device import config as config_mod
    from device.doctor.progress import Progress

    cfg_path = scratch / "config.toml"
    cfg_path.write_text(to_toml(rig_settings(server.base_url, scratch)))
    monkeypatch.setenv("GEMINI_API_KEY", server.api_key)
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)

    def terminal_gone(_number: int, _reply: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(ask_mod.AskError) as failed:
        await ask_mod.ask(config_mod.load(str(cfg_path)), ["Hello"], on_reply=terminal_gone,
                          progress=Progress(spinner=False))  # fmt: skip
    assert [bool(reply.audio) for reply in failed.value.replies] == [True]
    assert "Input/output error" in str(failed.value) and "network" not in str(failed.value)


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

    async def terminal_gone(cfg: Any, args: Any, _kept: list[Reply]) -> list[Reply]:
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


FAKE_KEY = "AIzaFakeKeyForTheTest0000000000000000000"


def _ask_saying(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, replies: list[Reply]
) -> tuple[Path, Path]:
    """`ask` whose session gives `replies`; its config and --audio path."""
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    cfg = tmp_path / "config.toml"
    cfg.write_text("")

    async def session(cfg: Any, args: Any, _kept: list[Reply]) -> list[Reply]:
        return replies

    monkeypatch.setattr(ask_mod, "_ask_and_play", session)
    return cfg, tmp_path / "reply.wav"


def test_ask_says_how_much_reply_audio_it_kept_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ask --audio reply.wav` tells the owner what it wrote: without the line, an owner
    cannot tell a file of the replies from one of nothing."""
    said = Reply(text="Hi", audio=b"\x01\x00" * 12000, first_audio_s=0.1, seconds=0.5)
    cfg, wav = _ask_saying(monkeypatch, tmp_path, [said])
    code = main(["ask", "Hello", "--audio", str(wav), "--config", str(cfg)])
    assert code == 0
    assert f"wrote 0.5 s of reply audio to {wav}" in capsys.readouterr().err


def test_ask_whose_audio_cannot_be_written_after_the_session_says_why_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The card filled while the turns were asked (the check before the session passed):
    the reply's WAV is not written, and ask says so on stderr and by its exit status,
    never a 0 a script takes for a kept reply."""
    from device.audio import pcm

    said = Reply(text="Hi", audio=b"\x01\x00" * 2400, first_audio_s=0.1, seconds=0.2)
    cfg, wav = _ask_saying(monkeypatch, tmp_path, [said])

    def card_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pcm, "write_wav", card_full)
    code = main(["ask", "Hello", "--audio", str(wav), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"--audio {wav}: No space left on device" in err, err
    assert "wrote" not in err, err


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_run_stopped_after_a_reply_keeps_that_replys_audio(
    scratch: Path, sig: signal.Signals, status: int
) -> None:
    """Ctrl-C, or a hook's `timeout 30 live-appliance ask`, while turn 2 waits: turn 1's
    words were printed and its sound thrown away (kept only when a turn failed)."""
    with ServerThread(pace=0, reply_seconds=REPLY_SECONDS, think_seconds=5) as server:
        cfg = scratch / "config.toml"
        cfg.write_text(to_toml(rig_settings(server.base_url, scratch)))
        wav = scratch / "reply.wav"
        with subprocess.Popen(
            [sys.executable, "-m", "device", "ask", "one", "two", "--audio", str(wav),
             "--config", str(cfg), "--timeout", "50"],
            env=silent_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as child:  # fmt: skip
            assert child.stdout is not None
            first = child.stdout.readline()  # turn 1's words: its reply is whole
            child.send_signal(sig)
            _, err = child.communicate(timeout=30)
    assert first.strip(), err
    assert child.returncode == status, err
    assert "Traceback" not in err, err
    with wave.open(str(wav)) as kept:
        assert kept.getframerate() == 24000 and kept.getnframes() > 0
    assert f"of reply audio to {wav}" in err, err


def test_a_run_that_fails_before_any_reply_leaves_an_earlier_wav_whole(
    server: ServerThread, scratch: Path
) -> None:
    """A wrong key (or no network) replaced last run's reply.wav with an empty one."""
    cfg = scratch / "config.toml"
    cfg.write_text(to_toml(rig_settings(server.base_url, scratch)))
    wav = scratch / "reply.wav"
    with wave.open(str(wav), "wb") as earlier:
        earlier.setnchannels(1)
        earlier.setsampwidth(2)
        earlier.setframerate(24000)
        earlier.writeframes(b"\x01\x00" * 2400)
    before = wav.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "device", "ask", "one", "--audio", str(wav), "--config", str(cfg)],
        env=silent_env(server, GEMINI_API_KEY="wrong-key-42"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert wav.read_bytes() == before
    assert f"no reply audio to keep: --audio {wav} not written" in result.stderr
