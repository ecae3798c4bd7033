"""Branches a home meets that no other in-process test ran (found with coverage)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import until

from device.config import Config, LiveConfig, Secret
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import ConnectFailed, Event
from rig.server.server import LiveServer


async def test_a_name_the_resolver_refuses_at_once_is_named_a_dns_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wi-Fi up, no uplink, and a router whose resolver says so at once (or a typo in
    `base_url`): the press beeps and `ctl status` must say DNS, not a generic network."""
    host = "live.refused-test.invalid"
    resolve = socket.getaddrinfo

    def refusing_resolver(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return resolve(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", refusing_resolver)
    live = LiveConfig(base_url=f"https://{host}", connect_timeout_s=5)
    events: list[Event] = []
    link = LiveLink(Config(live=live, api_key=Secret("AIza-test")), Outbox(5), events.append,
                    lambda _item, _t: None)
    link.open(1)
    try:
        await until(lambda: bool(events), within=30)
    finally:
        await link.close()
    (failed,) = events
    assert isinstance(failed, ConnectFailed)
    assert failed.reason == (
        "DNS: cannot resolve the Live API host (Temporary failure in name resolution)"
    )


def test_ctl_status_lists_the_last_turns_with_their_timings() -> None:
    """What an owner reads to see why the box feels slow: each finished turn's timings, in
    ms below ten seconds and in seconds past, and a dash for what the turn never had."""
    from device.doctor.daemon import one_line, summary_lines
    from device.turns import TurnLog

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
        "  turn 2: press to first audio sent -, release to end of turn sent -, "
        "release to first reply -, whole turn 1000 ms",
    ]
    assert one_line({"state": "idle", "turns": turns.recent()}).endswith(
        "last turn 2: press to first audio sent -, release to end of turn sent -, "
        "release to first reply -, whole turn 1000 ms"
    )


def test_a_crash_outside_the_loop_is_one_masked_error_entry_not_raw_stderr() -> None:
    """What nothing caught (a crash at start, before the loop) must reach the journal at
    error priority (`journalctl -p err` shows it) with the key masked, not printed raw."""
    key = "AIzaSy-uncaught-0123456789abcdef"
    program = (
        "from device import logs\n"
        f"logs.setup(secrets=[{key!r}])\n"
        f"raise ValueError('bad header x-goog-api-key: {key}')\n"
    )
    env = {**os.environ, "LIVE_APPLIANCE_LOG_FORMAT": "json", "JOURNAL_STREAM": ""}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 1
    assert key not in done.stderr, done.stderr
    (entry,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert entry["PRIORITY"] == 2 and entry["LOGGER"] == "device"
    assert entry["MESSAGE"].startswith("uncaught ValueError\nTraceback"), entry["MESSAGE"]
    assert "ValueError: bad header x-goog-api-key:" in entry["MESSAGE"]


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
    from device import cli

    path = tmp_path / "control.sock"
    served = _daemon_answering(path, answer)
    assert cli.main(["ctl", args[0], "--socket", str(path), *args[1:]]) == code
    served.join(10)
    err = capsys.readouterr().err
    assert said in err, err


def test_ctl_status_prints_the_summary_not_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from device import cli

    path = tmp_path / "control.sock"
    status = {"ok": True, "state": "idle", "session_open": False, "volume": 0.5, "turns": []}
    served = _daemon_answering(path, json.dumps(status).encode() + b"\n")
    assert cli.main(["ctl", "status", "--socket", str(path)]) == 0
    served.join(10)
    out = capsys.readouterr().out
    assert out.splitlines()[1:] == [
        "session:  closed", "audio:    volume 50%", "no finished turns yet",
    ], out


async def _connect_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, proxy: str
) -> tuple[str, list[logging.LogRecord]]:
    """A press with HTTPS_PROXY set to `proxy`: the error state's reason and the journal's
    "cannot connect" records (the try once more, then the error)."""
    monkeypatch.setenv("https_proxy", proxy)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    events: list[Event] = []
    link = LiveLink(Config(live=LiveConfig(connect_timeout_s=5), api_key=Secret("AIza-test")),
                    Outbox(5), events.append, lambda _item, _t: None)
    with caplog.at_level(logging.INFO, logger="device"):
        link.open(1)
        try:
            await until(lambda: bool(events), within=30)
        finally:
            await link.close()
    (failed,) = events
    assert isinstance(failed, ConnectFailed)
    said = [r for r in caplog.records if r.getMessage().startswith("cannot connect")]
    assert said[-1].levelno == logging.ERROR, said
    return failed.reason, said


async def test_a_proxy_password_stays_out_of_the_journal_and_ctl_status(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTPS_PROXY with the proxy's login, and a path websockets refuses: the error line,
    its LIVE_ERROR field and the reason `ctl status` shows quoted the password whole."""
    reason, said = await _connect_failure(
        monkeypatch, caplog, "http://alice:pr0xy-pa55word@proxy.lan:3128/login"
    )
    for text in (reason, said[-1].LIVE_ERROR, *(record.getMessage() for record in said)):
        assert "pr0xy-pa55word" not in text, text
        assert "alice:" in text and "@proxy.lan:3128" in text, text  # which proxy, still


async def test_a_proxy_setting_websockets_cannot_use_is_a_proxy_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTPS_PROXY=proxy.lan:3128 (curl's way, without http://): the owner filtering on
    LIVE_FAILURE=proxy (README) found nothing; the line said only "InvalidProxy"."""
    reason, said = await _connect_failure(monkeypatch, caplog, "proxy.lan:3128")
    assert said[-1].LIVE_FAILURE == "proxy"
    assert reason == (
        "proxy: HTTPS_PROXY's proxy.lan:3128 cannot be used: scheme proxy.lan isn't supported"
    )


@contextlib.asynccontextmanager
async def _proxy_to(port: int) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP proxy on 127.0.0.1 that resolves names itself: each CONNECT is tunnelled
    to 127.0.0.1:`port`. Yields its port and the CONNECT lines it took."""
    asked: list[bytes] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1], asked
    finally:
        listening.close()


async def test_the_doctor_checks_the_way_the_daemon_goes_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A school or office network: the box reaches the internet only through HTTPS_PROXY,
    and its resolver knows no outside names (the proxy resolves them). The daemon talks
    through the proxy; `doctor network` resolved and connected to the Live API's host
    itself, and failed on DNS: "Check the box's network and DNS"."""
    from device.doctor.network import check_network
    from device.doctor.progress import Progress
    from device.doctor.result import Context, Options, Status

    resolve = socket.getaddrinfo

    def inside_names_only(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == "localhost":  # an outside name, for this box
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(name, *args, **kwargs)

    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        port = urlsplit(server.base_url).port
        assert port is not None
        async with _proxy_to(port) as (proxy_port, asked):
            for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                         "all_proxy"):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy_port}")
            monkeypatch.setattr(socket, "getaddrinfo", inside_names_only)
            cfg = Config(live=LiveConfig(base_url=f"https://localhost:{port}"),
                         api_key=Secret(server.api_key))
            result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.PASS, (result.measured, result.fix)
    assert asked == [f"CONNECT localhost:{port} HTTP/1.1".encode()]
    assert f"through the proxy 127.0.0.1:{proxy_port}" in result.measured, result.measured


def _journald(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(5)
    return listener


def test_lines_reach_the_journal_again_after_journald_restarts(tmp_path: Path) -> None:
    """systemd-journald restarted (an upgrade, a crash): its socket is a new one. The
    daemon's lines must reach the new journal, the first saying how many were lost."""
    from device.logs import JournalSender

    path = tmp_path / "journal.socket"
    journald = _journald(path)
    send = JournalSender(str(path))
    send("before", LIVE_STATE="idle")
    assert b"MESSAGE=before\n" in journald.recv(65536)
    journald.close()
    path.unlink()
    send("while it restarts")
    journald = _journald(path)
    send("after")
    with journald:
        datagram = journald.recv(65536)
    assert b"MESSAGE=after (1 lines before it lost" in datagram, datagram
    assert b"LIVE_LINES_LOST=1\n" in datagram, datagram


@pytest.fixture
def box_etc(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A box's /etc/live-appliance, the service's own configuration there, and the
    installer's service user (uid 4242, its group 4242): the doctor runs as root."""
    import grp
    import pwd

    from device import config
    from device.doctor import settings

    etc = Path(tempfile.mkdtemp(prefix="etc-"))
    etc.chmod(0o755)
    user = pwd.struct_passwd(("live-appliance", "x", 4242, 4242, "", "/nonexistent", ""))

    def service_user_only(name: str) -> pwd.struct_passwd:
        if name != user.pw_name:
            raise KeyError(name)
        return user

    def no_group(name: str) -> grp.struct_group:
        raise KeyError(name)  # audio, video, gpio, spi: none on this machine

    monkeypatch.setattr(pwd, "getpwnam", service_user_only)
    monkeypatch.setattr(grp, "getgrnam", no_group)
    monkeypatch.setattr(config, "DEFAULT_PATH", etc / "config.toml")
    monkeypatch.setattr(settings, "HIDDEN_FROM_SERVICE", ())  # the scratch is under /tmp
    try:
        yield etc
    finally:
        shutil.rmtree(etc, ignore_errors=True)


@pytest.mark.parametrize(
    ("mode", "owner", "warned"),
    [(0o600, 0, True), (0o640, 0, True), (0o600, 4242, False), (0o644, 0, False)],
    ids=["root's alone", "root's group", "the service's own", "readable by all"],
)
def test_the_doctor_says_when_the_service_may_not_read_its_persona_file(
    box_etc: Path, mode: int, owner: int, warned: bool
) -> None:
    """`sudo doctor` reads a persona file root saved 0600 (an editor's backup copy moved
    in, `install -m 600`): the service then exits 2 at every start, so the doctor must
    warn, and say nothing of a file the service may read."""
    from device.doctor.result import Status
    from device.doctor.settings import check_config

    persona = box_etc / "persona.md"
    persona.write_text("You are the kitchen's helper.\n")
    persona.chmod(mode)
    os.chown(persona, owner, 0)
    (box_etc / "config.toml").write_text(f'[live]\nsystem_instruction_file = "{persona}"\n')
    result, _ = check_config(None)
    if warned:
        assert result.status is Status.WARN, result.measured
        assert f"may not read [live] system_instruction_file {persona}" in result.measured
    else:
        assert result.status is Status.PASS, result.measured
