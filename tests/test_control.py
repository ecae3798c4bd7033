"""The control socket, over real UNIX sockets in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import grp
import itertools
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import open_descriptors, open_refused
from system_view import device_after
from test_persist import SERVICE_UID

from device import appliance as appliance_module
from device import logs, workers
from device.cli import main as cli_main
from device.control import (
    BACKLOG,
    CLIENTS_LIMIT,
    LONGEST_HOLD_S,
    AlreadyRunning,
    ControlServer,
    single_instance,
)
from device.control_client import LINE_LIMIT, ControlError, NotRunning, request
from device.errors import ConfigError


class Daemon:
    """A stand-in for the appliance's handler: records commands, knows three."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.state = "idle"

    async def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(req)
        match req["cmd"]:
            case "press":
                self.state = "listening"
                return {}
            case "release":
                self.state = "thinking"
                return {}
            case "status":
                return {"state": self.state}
            case "explode":
                raise RuntimeError("boom")
            case other:
                return {"ok": False, "error": f"unknown command {other!r}"}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "ctl.sock"  # the parent does not exist yet


def socket_mode(path: Path) -> int | None:
    """Permission bits of the socket file at `path`, None if there is no socket."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    return stat.S_IMODE(mode) if stat.S_ISSOCK(mode) else None


async def ask(path: Path, cmd: str, **fields: Any) -> dict[str, Any]:
    """The real synchronous client, off the loop so the server can answer."""
    return await asyncio.to_thread(request, path, cmd, **fields)


async def ask_past_busy(path: Path) -> dict[str, Any] | None:
    """`status`'s answer, or None for a "busy" refusal (read, or the pipe it closed)."""
    try:
        answer = await ask(path, "status")
    except ControlError as exc:
        assert "dropped the connection" in str(exc)
        return None
    if answer["ok"] is False and "busy" in answer["error"]:
        return None
    return answer


class Line:
    """A raw connection for sending what the client never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Line:
        return cls(*await asyncio.open_unix_connection(path))

    async def send(self, raw: bytes) -> dict[str, Any]:
        self.writer.write(raw)
        await self.writer.drain()
        async with asyncio.timeout(5):
            return json.loads(await self.reader.readline())

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_press_release_status_round_trip(path: Path) -> None:
    daemon = Daemon()
    async with ControlServer(path, daemon):
        assert await ask(path, "status") == {"ok": True, "state": "idle"}
        assert await ask(path, "press", source="test") == {"ok": True}
        assert await ask(path, "status") == {"ok": True, "state": "listening"}
        assert await ask(path, "release") == {"ok": True}
        assert await ask(path, "status") == {"ok": True, "state": "thinking"}
    assert daemon.requests[1] == {"cmd": "press", "source": "test"}
    assert [r["cmd"] for r in daemon.requests] == [
        "status",
        "press",
        "status",
        "release",
        "status",
    ]


async def test_socket_mode_and_removal_on_close(path: Path) -> None:
    server = ControlServer(path, Daemon())
    await server.start()
    assert socket_mode(path) == 0o660
    await server.aclose()
    assert socket_mode(path) is None
    async with ControlServer(path, Daemon(), mode=0o600):
        assert socket_mode(path) == 0o600


async def test_a_stopping_server_leaves_a_newer_servers_socket_in_place(path: Path) -> None:
    """A daemon that stops after a newer one has put its own socket in place (its file
    removed and made anew) must not remove the newer one's: `ctl` would then find no daemon
    while one runs."""
    older = ControlServer(path, Daemon())
    await older.start()
    await asyncio.to_thread(path.unlink)  # its file gone (a tmpfiles clean-up, an owner) ...
    async with ControlServer(path, Daemon()):  # ... and a newer daemon listens there
        await older.aclose()
        assert await ask(path, "status") == {"ok": True, "state": "idle"}


async def test_bad_input_is_answered_and_the_server_serves_on(path: Path) -> None:
    async with ControlServer(path, Daemon()):
        line = await Line.open(path)
        bad = [
            b"{not json\n",
            b"\xff\xfe\n",
            b"[1, 2]\n",
            b'{"cmd": 3}\n',
            b'{"nocmd": "status"}\n',
            b'{"cmd": "dance"}\n',
            b'{"cmd": "explode"}\n',
            b"[" * 50_000 + b"\n",  # nested past Python's recursion limit
            b'{"cmd": "status", "n": ' + b"1" * 5000 + b"}\n",  # past int's digit limit
        ]
        for raw in bad:
            reply = await line.send(raw)
            assert reply["ok"] is False and reply["error"], raw
        assert "dance" in (await line.send(b'{"cmd": "dance"}\n'))["error"]
        assert "boom" in (await line.send(b'{"cmd": "explode"}\n'))["error"]
        # Same connection, then a new one: both still served.
        assert await line.send(b'{"cmd": "status"}\n') == {"ok": True, "state": "idle"}
        await line.close()
        assert await ask(path, "status") == {"ok": True, "state": "idle"}


async def test_an_overlong_line_is_refused_without_killing_the_server(path: Path) -> None:
    async with ControlServer(path, Daemon()):
        line = await Line.open(path)
        reply = await line.send(b'{"cmd": "' + b"x" * 100_000 + b'"}\n')
        assert reply == {"ok": False, "error": "request line too long"}
        await line.close()
        assert (await ask(path, "status"))["ok"] is True


@pytest.fixture
def stale(path: Path) -> Path:
    """A socket file bound by a process that died without removing it."""
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    return path


async def test_a_stale_socket_file_is_replaced(stale: Path) -> None:
    path = stale
    assert socket_mode(path) is not None
    with pytest.raises(NotRunning):
        request(path, "status")
    async with ControlServer(path, Daemon()):
        assert await ask(path, "status") == {"ok": True, "state": "idle"}


async def test_a_second_server_on_a_live_socket_is_refused(path: Path) -> None:
    async with ControlServer(path, Daemon()):
        with pytest.raises(AlreadyRunning, match="already running"):
            await ControlServer(path, Daemon()).start()
        assert await ask(path, "status") == {"ok": True, "state": "idle"}  # first one unharmed


def test_a_daemon_still_stopping_keeps_a_second_one_out(path: Path) -> None:
    """The first daemon has closed its socket but still holds its pins and sound devices
    while it stops: a second one started then is refused (it ran on without its LEDs);
    once the first is gone the next one starts."""
    with single_instance(path):
        assert not path.exists()  # the socket is gone: only the lock tells
        second = single_instance(path)
        with pytest.raises(AlreadyRunning, match="already running, or still stopping"):
            second.__enter__()
    with single_instance(path):
        pass


def test_the_services_lock_another_user_may_not_open_leaves_it_to_the_socket(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone in the service's group runs `live-appliance run` while the service is up:
    the service's lock (0600, its own) cannot be opened. That is not a configuration
    error (exit 2): the socket's check says the daemon is running, as before the lock."""
    path.parent.mkdir(parents=True)
    Path(f"{path}.lock").write_text("")
    open_refused(monkeypatch, lambda name: name.suffix == ".lock")
    with single_instance(path):
        pass  # no lock taken: ControlServer.start finds the live socket


def test_a_lock_that_cannot_be_made_is_the_owners_to_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    unusable = single_instance(tmp_path / "file" / "live.sock")
    with pytest.raises(ConfigError, match=r"\[control\] socket: cannot make the lock"):
        unusable.__enter__()


def test_the_daemon_lock_is_held_while_a_stuck_call_keeps_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon whose camera or sound card is stuck in a driver call still has the device
    while exit_past_stuck ends it: a `live-appliance run` started meanwhile must be told
    one is still stopping, not start and find its devices taken."""
    socket = tmp_path / "control.sock"
    second_refused: list[bool] = []

    class Appliance:
        failed = restart_asked = False

        def __init__(self, cfg: Any) -> None:
            pass

        async def run(self) -> None:
            pass

    def exit_past_stuck(status: int) -> int:
        try:
            with single_instance(socket):
                second_refused.append(False)
        except AlreadyRunning:
            second_refused.append(True)
        return status

    monkeypatch.setattr(appliance_module, "Appliance", Appliance)
    monkeypatch.setattr(appliance_module.logs, "setup", lambda **_: None)
    monkeypatch.setattr(workers, "exit_past_stuck", exit_past_stuck)
    cfg: Any = SimpleNamespace(api_key=None, control=SimpleNamespace(socket=str(socket)))
    assert appliance_module.run_daemon(cfg) == 0
    assert second_refused == [True]


# ---- Vertex AI credentials revoked, press after press ------------------------------------


def test_a_file_that_is_not_a_socket_is_left_alone(path: Path) -> None:
    """A configuration error (exit 2, not restarted): only the owner can move it."""
    path.parent.mkdir(parents=True)
    path.write_text("precious")
    with pytest.raises(ConfigError, match=r"\[control\] socket: .* not a socket"):
        asyncio.run(ControlServer(path, Daemon()).start())
    assert path.read_text() == "precious"


def test_client_says_the_daemon_is_not_running(path: Path) -> None:
    with pytest.raises(NotRunning, match=f"not running.*{path}"):
        request(path, "status")


async def test_close_ends_connected_clients(path: Path) -> None:
    server = ControlServer(path, Daemon())
    await server.start()
    idle = await Line.open(path)  # connected, sends nothing
    busy = await Line.open(path)
    assert (await busy.send(b'{"cmd": "status"}\n'))["ok"] is True
    async with asyncio.timeout(5):
        await server.aclose()
        assert await idle.reader.read() == b""  # the server hung up
        assert await busy.reader.read() == b""
    assert socket_mode(path) is None
    await server.aclose()  # harmless twice


async def test_a_slow_handler_is_cancelled_by_close(path: Path) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(req: dict[str, Any]) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    server = ControlServer(path, stuck)
    await server.start()
    line = await Line.open(path)
    line.writer.write(b'{"cmd": "status"}\n')
    async with asyncio.timeout(5):
        await started.wait()
        await server.aclose()
    assert cancelled.is_set()
    await line.close()


async def test_client_times_out_on_a_daemon_that_never_answers(path: Path) -> None:
    async def stuck(req: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}

    async with ControlServer(path, stuck):
        with pytest.raises(ControlError, match="no answer"):
            await asyncio.to_thread(request, path, "status", timeout=0.2)


async def test_clients_past_the_bound_are_refused_while_each_is_being_answered(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon, answering = Daemon(), asyncio.Event()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        await answering.wait()  # a command that takes its time (a press waits for the mic)
        return await daemon(req)

    async with ControlServer(path, slow, clients_limit=2, idle_s=0.5):
        busy = [await Line.open(path) for _ in range(2)]
        for line in busy:
            line.writer.write(b'{"cmd": "status"}\n')
        await asyncio.sleep(0.1)
        for _ in range(3):  # refused, told why, let go; one journal line for all of them
            extra = await Line.open(path)
            async with asyncio.timeout(5):
                refused = json.loads(await extra.reader.readline())
                assert await extra.reader.read() == b""
            assert refused["ok"] is False and "busy" in refused["error"]
            await extra.close()
        answering.set()
        for line in busy:
            async with asyncio.timeout(5):
                assert json.loads(await line.reader.readline())["state"] == "idle"
    bounds = [r for r in caplog.records if getattr(r, "LIVE_BOUND", None) == "control_clients"]
    assert len(bounds) == 1


BUSY_2 = b'{"ok": false, "error": "busy: 2 clients are connected; try again", "full": true}\n'


async def test_clients_that_hold_the_socket_asking_nothing_cannot_lock_the_owner_out(
    path: Path,
) -> None:
    """Twelve connections that never sent a line made 79 of 92 `ctl status` calls busy."""
    async with ControlServer(path, Daemon(), clients_limit=2, idle_s=5.0):
        asked = await Line.open(path)
        assert (await asked.send(b'{"cmd": "status"}\n'))["ok"] is True  # then holds on
        hogs = [await Line.open(path) for _ in range(12)]
        for _ in range(5):
            assert (await ask(path, "status"))["state"] == "idle"
        async with asyncio.timeout(5):  # each made room in turn, the longest idle first
            assert await asked.reader.read() == b""
            for hog in hogs:  # let go, or turned away (newer than IDLE_AFTER_S)
                assert (await hog.reader.read()) in (b"", BUSY_2)


async def test_clients_that_read_none_of_their_answers_cannot_lock_the_owner_out(
    path: Path,
) -> None:
    """A client silent for long is let go for a newcomer, but not one that sent requests
    and never read their answers: as many as the daemon serves kept every `ctl` of the
    owner busy for as long as they went on."""
    daemon = Daemon()
    async with ControlServer(path, daemon, clients_limit=2, idle_s=5.0):
        hogs = [await Line.open(path) for _ in range(2)]
        for hog in hogs:  # far more answers than a socket holds
            hog.writer.write(b'{"cmd": "status"}\n' * 50_000)
        answered = -1
        while answered != len(daemon.requests):  # until their answers fill their sockets
            answered = len(daemon.requests)
            await asyncio.sleep(0.3)
        # The owner gets in well within the idle_s an unread client was kept for before
        # (a "busy" is possible only if the hogs were still being answered).
        deadline = asyncio.get_running_loop().time() + 3.0
        while (answer := await ask_past_busy(path)) is None:
            assert asyncio.get_running_loop().time() < deadline, "the owner is locked out"
            await asyncio.sleep(0.1)
        assert answer == {"ok": True, "state": "idle"}
        for hog in hogs:
            hog.writer.transport.abort()


async def test_a_burst_of_connections_cannot_take_more_than_the_idle_clients_places(
    path: Path,
) -> None:
    """Each newcomer made room by letting the longest idle client go, but that client was
    picked again by every newcomer of the same burst: 939 clients at once (the unit allows
    256 descriptors)."""
    async with ControlServer(path, Daemon(), clients_limit=8, idle_s=5.0):
        for _ in range(8):
            asked = await Line.open(path)
            assert (await asked.send(b'{"cmd": "status"}\n'))["ok"] is True  # then idle
        burst = await asyncio.gather(*(Line.open(path) for _ in range(50)))

        async def let_in(line: Line) -> bool:
            try:
                async with asyncio.timeout(0.3):
                    await line.reader.readline()  # busy, or let go for a later newcomer
            except TimeoutError:
                return True  # it made room, or took a place
            except OSError:  # past the queue the daemon keeps: asyncio took EAGAIN for
                pass  # a connection under way, and never connected (EINVAL)
            return False

        served = sum(await asyncio.gather(*(let_in(line) for line in burst)))
        assert served <= 8, f"{served} of 50 served at once"


async def test_a_client_that_never_sends_is_let_go_soon(path: Path) -> None:
    async with ControlServer(path, Daemon(), idle_s=60):
        silent = await Line.open(path)
        async with asyncio.timeout(3):  # FIRST_REQUEST_S, not the idle minute
            assert await silent.reader.read() == b""
        await silent.close()


async def test_a_socket_path_that_cannot_be_used_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    """Not a crash with a traceback that systemd restarts every few seconds: the owner's
    to fix (the daemon exits 2, which the unit does not restart)."""
    (tmp_path / "file").write_text("")
    for unusable in (tmp_path / "file" / "ctl.sock", tmp_path / ("x" * 120) / "c.sock"):
        with pytest.raises(ConfigError, match=r"\[control\] socket: cannot listen on"):
            await ControlServer(unusable, Daemon()).start()


def test_the_client_says_why_a_socket_path_cannot_be_reached(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for unusable in (tmp_path / ("x" * 120) / "c.sock", tmp_path / "file" / "ctl.sock"):
        with pytest.raises(ControlError, match=r"cannot reach the daemon at .*: "):
            request(unusable, "status")


async def flood_unread(path: Path, requests: int) -> socket.socket:
    """A client that sends status requests and never reads an answer."""
    client = socket.socket(socket.AF_UNIX)
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, str(path))
    with contextlib.suppress(BlockingIOError):
        client.send(b'{"cmd": "status"}\n' * requests)
    return client


class Talkative(Daemon):
    async def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"state": "idle", "history": ["x" * 100] * 40}  # a status's size


async def test_a_client_let_go_for_not_reading_its_answers_takes_its_connection_along(
    path: Path,
) -> None:
    """Let go after idle_s, its task ended (no longer counted against the bound of 8), but
    its connection stayed open in the daemon, answers buffered, as long as the client
    lived: enough of them and the daemon has no descriptor left for its Live connection."""
    async with ControlServer(path, Talkative(), idle_s=0.2):
        before = open_descriptors()
        clients = [await flood_unread(path, 600) for _ in range(12)]
        try:
            await asyncio.sleep(1.5)
            assert open_descriptors() - before == len(clients), "connections of clients let go held"
        finally:
            for client in clients:
                client.close()


async def test_a_client_that_finished_without_reading_is_let_go_with_its_connection(
    path: Path,
) -> None:
    """A client that sent its requests, closed its end and read none of the answers: its
    task ended, no longer counted against the bound of 8, while its connection waited
    for it to read, for as long as it lived: three hundred of them, one every 50 ms,
    and the daemon had none of the unit's 256 descriptors left."""
    async with ControlServer(path, Talkative(), idle_s=0.2):
        before = open_descriptors()
        clients = []
        for requests in range(30, 90, 3):  # answers past what the socket holds, or not
            client = socket.socket(socket.AF_UNIX)
            client.connect(str(path))
            client.sendall(b'{"cmd": "status"}\n' * requests)
            client.shutdown(socket.SHUT_WR)
            clients.append(client)
            await asyncio.sleep(0.05)
        try:
            await asyncio.sleep(1.0)
            assert open_descriptors() - before == len(clients), "connections of clients gone"
        finally:
            for client in clients:
                client.close()


async def test_a_client_that_finished_gets_its_answers_before_the_close(path: Path) -> None:
    daemon = Daemon()
    async with ControlServer(path, daemon, idle_s=2.0):
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            client.sendall(b'{"cmd": "press"}\n{"cmd": "status"}\n')
            client.shutdown(socket.SHUT_WR)
            answers = await asyncio.to_thread(client.makefile("rb").read)
    assert [json.loads(line) for line in answers.splitlines()] == [
        {"ok": True},
        {"ok": True, "state": "listening"},
    ]


async def test_hooks_polling_at_once_are_each_answered_or_told_busy(path: Path) -> None:
    """More hooks polling `ctl status` than the daemon serves at once: a client whose
    request had just come was taken for idle and let go for the next one, unanswered
    ("closed the connection without answering", a quarter of the refusals)."""

    def poll() -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(150):
            try:
                answer = request(path, "status")
            except ControlError as exc:
                seen[str(exc)] += 1
            else:
                seen["answered" if answer["ok"] else answer["error"]] += 1
        return seen

    async with ControlServer(path, Talkative(), clients_limit=2):
        polls = await asyncio.gather(*(asyncio.to_thread(poll) for _ in range(6)))
    seen = sum(polls, Counter[str]())
    assert set(seen) <= {"answered", "busy: 2 clients are connected; try again"}, seen
    assert seen["answered"] > 0


async def test_a_client_whose_request_comes_as_a_newcomer_connects_is_answered(
    path: Path,
) -> None:
    """All places taken by one client idle for a while; its next request came in the
    same turn of the loop as a newcomer: it was read, its task not yet woken, and the
    client was let go for the newcomer with its `press` unanswered and never run."""
    daemon = Daemon()
    server = ControlServer(path, daemon, clients_limit=1, idle_s=10.0)
    loop = asyncio.get_running_loop()
    async with server:
        with socket.socket(socket.AF_UNIX) as old, socket.socket(socket.AF_UNIX) as new:
            old.setblocking(False)
            await loop.sock_connect(old, str(path))
            await loop.sock_sendall(old, b'{"cmd": "status"}\n')
            assert json.loads(await loop.sock_recv(old, 4096))["state"] == "idle"
            await asyncio.sleep(0.4)  # idle for longer than IDLE_AFTER_S
            accept = server._accept

            def request_comes_as_the_newcomer_connects(*streams: Any) -> None:
                accept(*streams)
                old.send(b'{"cmd": "press"}\n')

            server._accept = request_comes_as_the_newcomer_connects  # type: ignore[method-assign]
            new.setblocking(False)
            await loop.sock_connect(new, str(path))
            async with asyncio.timeout(5):
                answer = json.loads(await loop.sock_recv(old, 4096))
                assert b"busy" in await loop.sock_recv(new, 4096)
    assert answer == {"ok": True}
    assert [r["cmd"] for r in daemon.requests] == ["status", "press"]


async def test_clients_sending_without_end_cannot_lock_out_the_release_of_a_press(
    path: Path,
) -> None:
    """Clients that send request after request and read each answer were never idle, so
    never made room: as many as the daemon serves refused the owner's every `ctl`, the
    release of a press taken with `ctl press` among them (held until longest_turn_s)."""
    daemon, stop = Daemon(), threading.Event()

    def without_end() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
                answers = sock.makefile("rb")
                sock.sendall(b'{"cmd": "status"}\n' * 10)
                while not stop.is_set() and answers.readline():  # until let go, then again
                    sock.sendall(b'{"cmd": "status"}\n')  # ten always on their way

    async with ControlServer(path, daemon, clients_limit=2, idle_s=5.0):
        assert await ask(path, "press") == {"ok": True}
        hogs = [asyncio.create_task(asyncio.to_thread(without_end)) for _ in range(2)]
        try:
            await asyncio.sleep(LONGEST_HOLD_S + 0.5)
            released = await ask(path, "release")
        finally:
            stop.set()
            await asyncio.gather(*hogs)
    assert released == {"ok": True}
    assert daemon.state == "thinking"


async def test_connections_the_daemon_has_not_taken_yet_are_few(path: Path) -> None:
    """asyncio's queue of 100 connections, each taken before the bound of 8 could turn
    it away: a flood held 200 of the unit's 256 descriptors, and the daemon logged
    "out of system resource" with a traceback a hundred times a second."""
    async with ControlServer(path, Daemon()):
        flood: list[socket.socket] = []
        try:
            for _ in range(100):  # the loop takes none meanwhile: no await
                sock = socket.socket(socket.AF_UNIX)
                sock.setblocking(False)
                try:
                    sock.connect(str(path))
                except BlockingIOError:
                    sock.close()
                    break
                flood.append(sock)
            assert len(flood) <= BACKLOG + 1  # Linux queues one past the backlog
            # `ctl` waits its turn as the daemon takes them: no "not answering".
            answer = await ask(path, "status")
        finally:
            for sock in flood:
                sock.close()
    assert answer == {"ok": True, "state": "idle"}


SHUTDOWN_WITH_AN_UNREAD_CLIENT = """
import asyncio, contextlib, socket, sys, tempfile
from pathlib import Path
from device.control import ControlServer

async def main():
    async def status(req):
        return {"state": "idle", "history": ["x" * 100] * 40}
    path = Path(tempfile.mkdtemp()) / "ctl.sock"
    server = ControlServer(path, status)
    await server.start()
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(path))
    client.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        client.send(b'{"cmd": "status"}\\n' * 2000)
    await asyncio.sleep(1.0)  # answers back up unread
    async with asyncio.timeout(5):
        await server.aclose()  # the first thing a stop does
    print("closed")

asyncio.run(main())
"""


@pytest.mark.parametrize("python", [sys.executable, *sorted(glob.glob(
    "/root/.pyenv/versions/3.1[2-9]*/bin/python3"))])  # fmt: skip
def test_a_stop_does_not_wait_for_a_client_that_reads_nothing(python: str) -> None:
    """From Python 3.12 (Debian trixie's 3.13) a server's wait_closed waits for every
    connection, and a graceful close waits for the client to read: SIGTERM hung until
    systemd killed the daemon, LEDs lit and streams open."""
    root = Path(__file__).resolve().parents[1]
    ran = subprocess.run(
        [python, "-c", SHUTDOWN_WITH_AN_UNREAD_CLIENT],
        capture_output=True, text=True, timeout=30, cwd=root, env={"PYTHONPATH": str(root)},
    )  # fmt: skip
    assert ran.stdout.strip() == "closed", ran.stderr[-2000:]


async def test_a_flood_of_requests_on_one_connection_lets_the_daemon_run_between_them(
    path: Path,
) -> None:
    """Requests sent in one write were answered in one go without the event loop running
    anything else: 50,000 `ctl press` lines (refused at their bound, a few bytes each)
    held the loop for 0.45 s on a PC, seconds on a Pi, the microphone's chunks and the
    reply's audio waiting behind them each time the socket was read."""
    daemon, lines = Daemon(), 5000
    seen = [0]  # requests answered so far, each time something else ran

    async def other_work() -> None:
        while seen[-1] < lines:
            await asyncio.sleep(0)
            seen.append(len(daemon.requests))

    async with ControlServer(path, daemon):
        work = asyncio.create_task(other_work())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            # All of it waits in the socket before the daemon's loop looks: one read takes it.
            sock.connect(str(path))
            sock.sendall(b'{"cmd": "press"}\n' * lines)
            sock.shutdown(socket.SHUT_WR)
            await asyncio.to_thread(sock.makefile("rb").read)
        async with asyncio.timeout(10):
            await work
    longest = max(b - a for a, b in itertools.pairwise(seen))
    assert len(daemon.requests) == lines
    assert longest <= 2, f"{longest} requests were answered with the loop held"


def send_unframed(path: Path, size: int) -> bytes:
    """A client that writes `size` bytes with no newline (as fast as the daemon takes
    them), then reads what it was answered."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused: the daemon stopped reading and let go
        answer = b""
        try:
            while data := sock.recv(4096):
                answer += data
        except ConnectionResetError:
            pass
        return answer


async def test_ten_megabytes_without_a_newline_are_refused_at_the_line_bound(
    path: Path,
) -> None:
    """The daemon stops at LINE_LIMIT, says why, and serves the next client; it neither
    buffers the 10 MB nor waits for a newline that never comes."""
    async with ControlServer(path, Daemon()):
        started = time.monotonic()
        answer = await asyncio.to_thread(send_unframed, path, 10 * 1024 * 1024)
        assert time.monotonic() - started < 3
        assert json.loads(answer) == {"ok": False, "error": "request line too long"}
        assert (await ask(path, "status"))["state"] == "idle"


async def test_a_client_that_trickles_a_byte_at_a_time_is_let_go_within_the_idle_bound(
    path: Path,
) -> None:
    """Slowloris: each byte arrives before the idle time, but the line never completes."""
    async with ControlServer(path, Daemon(), idle_s=0.5):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"cmd": "status"}\n')
        assert json.loads(await reader.readline())["ok"] is True
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            for byte in b'{"cmd": "status", "pad": "' + b"x" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
                if reader.at_eof():
                    raise ConnectionResetError
        assert time.monotonic() - started < 2, "let go at idle_s, not at the line's end"
        writer.close()
        assert (await ask(path, "status"))["ok"] is True


async def test_three_hundred_connections_held_at_once_leave_the_owners_ctl_served(
    path: Path,
) -> None:
    """Hundreds of clients that connect and hold on: the daemon keeps at most its bound of
    them (descriptors too: the unit allows 256), and `ctl status` still gets through."""
    async with ControlServer(path, Daemon()):
        before = open_descriptors()
        held: list[socket.socket] = []
        try:
            for _ in range(300):
                sock = socket.socket(socket.AF_UNIX)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, str(path))
                held.append(sock)
            await asyncio.sleep(0.5)
            daemons_own = open_descriptors() - before - len(held)
            assert daemons_own <= CLIENTS_LIMIT + 1
            for _ in range(3):
                # Those the daemon took in one go, their tasks not yet run, are not idle
                # yet: it says "busy ... try again" until they are (a loaded machine).
                for _try in range(50):
                    answer = await ask(path, "status")
                    if "busy" not in answer.get("error", ""):
                        break
                    await asyncio.sleep(0.1)
                assert answer["state"] == "idle", answer
        finally:
            for sock in held:
                sock.close()


async def test_a_ctl_text_too_long_for_the_daemon_says_so_not_broken_pipe(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ctl text $(cat notes.txt)` with a long file: past the socket's buffer the daemon has
    refused the line and closed before the client finished writing, and the owner read
    "dropped the connection: [Errno 32] Broken pipe"."""
    async with ControlServer(path, Daemon()):
        words = ["word"] * 100_000  # 500 KB: argv takes it (2 MB), a line does not (64 KiB)
        code = await asyncio.to_thread(cli_main, ["ctl", "text", *words, "--socket", str(path)])
        assert code == 1
        err = capsys.readouterr().err
        assert "Broken pipe" not in err
        assert f"over the {LINE_LIMIT // 1024} KiB" in err
        with pytest.raises(ControlError, match="request is 5121 KiB"):
            await ask(path, "text", text="x" * (5 * 1024 * 1024))


def padded(size: int) -> str:
    """A pad that makes the status request's line `size` bytes, its newline included."""
    return "x" * (size - len(json.dumps({"cmd": "status", "pad": ""}).encode()) - 1)


async def test_ctl_sends_every_line_the_daemon_takes(path: Path) -> None:
    """The daemon reads a line of LINE_LIMIT bytes before its newline; ctl refused it,
    counting the newline against the bound."""
    async with ControlServer(path, Daemon()):
        line = json.dumps({"cmd": "status", "pad": padded(LINE_LIMIT + 1)}).encode() + b"\n"
        assert len(line) == LINE_LIMIT + 1
        raw = await Line.open(path)
        try:
            assert (await raw.send(line))["state"] == "idle"
        finally:
            await raw.close()
        got = await ask(path, "status", pad=padded(LINE_LIMIT + 1))
        assert got["state"] == "idle"


def test_ctl_a_request_just_past_the_bound_is_not_said_to_be_at_it(tmp_path: Path) -> None:
    """Half a KiB over: "the request is 64 KiB, over the 64 KiB the daemon takes"."""
    with pytest.raises(ControlError) as refused:
        request(tmp_path / "none.sock", "status", pad=padded(LINE_LIMIT + 512))
    size, bound = map(int, re.findall(r"(\d+) KiB", str(refused.value)))
    assert size > bound, str(refused.value)


def test_ctl_on_a_wedged_daemon_whose_queue_is_full_says_it_does_not_answer(
    tmp_path: Path,
) -> None:
    """A daemon whose loop hangs still has its socket: each `ctl status` (a hook polling
    every minute) waits in its queue, unanswered. Once that queue is full the owner read
    "cannot reach the daemon: Resource temporarily unavailable", an errno, not a hang."""
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wedged:
        wedged.bind(str(path))
        wedged.listen(0)  # never accepts; the queue is full after a connection or two
        waiting = []
        for _ in range(4):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(str(path))
            waiting.append(client)
        try:
            with pytest.raises(ControlError) as refused:
                request(path, "status", timeout=0.5)
        finally:
            for client in waiting:
                client.close()
    message = str(refused.value)
    assert "not answering" in message and "temporarily unavailable" not in message
    assert "systemctl restart live-appliance" in message


MB = 1024 * 1024


@contextlib.contextmanager
def serve_once(path: Path, answer: Callable[[socket.socket], None]) -> Iterator[None]:
    """A stand-in daemon at `path`: takes one request and answers it with `answer`."""
    path.parent.mkdir(exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            with contextlib.suppress(OSError):  # the client gave up
                answer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.close()
        thread.join(10)


def test_ctl_gives_up_on_a_daemon_answering_an_endless_line(path: Path) -> None:
    """`ctl status`, `doctor` and `devices` read the daemon's answer line: one that never
    ends (a daemon gone wrong, something else at the socket's path) took all the memory
    of the box, 250 MB a second, until the kernel killed something."""
    sent = 0

    def endless(conn: socket.socket) -> None:
        nonlocal sent
        chunk = b"x" * 65536
        while sent < 64 * MB:  # the test's own bound: without one, the client takes it all
            conn.sendall(chunk)
            sent += len(chunk)

    with serve_once(path, endless), pytest.raises(ControlError, match="over 1024 KiB"):
        request(path, "status", timeout=2.0)
    assert sent < 8 * MB, f"ctl read {sent / MB:.0f} MB before it gave up"


def test_ctl_gives_up_on_a_daemon_that_drips_its_answer_within_its_timeout(
    path: Path,
) -> None:
    """A byte a second restarted the socket's timeout at every byte: `ctl` and the doctor
    waited for ever, where the owner was promised an answer within the timeout."""
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        conn.sendall(b'{"ok": true')
        while not stop.wait(0.2):  # the test's own bound: 8 s, then the line ends
            conn.sendall(b" ")
            if time.monotonic() - began > 8:
                conn.sendall(b"}\n")
                return

    began = time.monotonic()
    with serve_once(path, drip):
        try:
            with pytest.raises(ControlError, match="within 1 s"):
                request(path, "status", timeout=1.0)
        finally:
            stop.set()
    assert time.monotonic() - began < 3


GROUP = MEMBER = 65534  # nobody: in the group of the run directory below, not its owner


SERVICE = 1  # daemon: stands in for the user live-appliance, the run directory's owner


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="makes the service's place as root"
)
def test_a_group_members_run_beside_the_stopped_service_is_no_configuration_error() -> None:
    """A member of the service's group runs `live-appliance run` to try the box by hand
    while the service is stopped: /run/live-appliance is the service user's (0750, its
    lock in it). The run said "configuration error: [control] socket: cannot listen" and
    exited 2, and the owner went through a configuration nothing is wrong with. It says
    whose place the socket's is, what to run instead, and exits 1 (as beside a running
    service)."""
    with tempfile.TemporaryDirectory(prefix="live-appliance-member-") as place:
        ran = _run_as_member(Path(place))
    assert ran.returncode == 1, (ran.returncode, ran.stderr)
    assert "configuration error" not in ran.stderr, ran.stderr
    assert "systemctl start live-appliance" in ran.stderr, ran.stderr


def _run_as_member(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`live-appliance run` as a member of the group of a run directory the service made."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chown(run_dir, SERVICE, GROUP)
    run_dir.chmod(0o750)
    lock = run_dir / "control.sock.lock"  # the stopped service's, mode 0600
    lock.write_text("")
    lock.chmod(0o600)
    os.chown(lock, SERVICE, SERVICE)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[control]\nsocket = "{run_dir / "control.sock"}"\n')
    tmp_path.chmod(0o755)
    return subprocess.run(
        ["setpriv", f"--reuid={MEMBER}", f"--regid={GROUP}", "--clear-groups",
         sys.executable, "-m", "device", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).parents[1],
        env={**os.environ, "GEMINI_API_KEY": "AIza" + "x" * 35, "HOME": str(tmp_path)},
    )  # fmt: skip


def test_a_run_directory_out_of_inodes_is_no_configuration_error(tmp_path: Path) -> None:
    """/run (a small tmpfs) out of inodes, a runaway program's files in it: the daemon
    said "configuration error: [control] socket: cannot make the lock ...: No space left
    on device" and exited 2, which systemd does not restart: the box stayed off until the
    retry timer, ten minutes, and the owner searched a configuration with nothing wrong.
    It says the place is full and how to see it, and exits 1 (systemd tries again)."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[control]\nsocket = "{run / "control.sock"}"\n')
    full = f"mount -t tmpfs -o nr_inodes=1 tmpfs {run}"  # the root's inode the only one
    done = device_after(full, "run", "--config", str(cfg))
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "configuration error" not in done.stderr, done.stderr
    assert f"df -h -i {run}" in done.stderr, done.stderr


GUEST = 1602  # an account on the box in none of its groups


def _guest_asks_status(run_dir: Path) -> subprocess.CompletedProcess[str]:
    """`live-appliance ctl status` as GUEST, at the socket in `run_dir`."""
    return subprocess.run(
        ["setpriv", f"--reuid={GUEST}", f"--regid={GUEST}", "--clear-groups", sys.executable,
         "-m", "device", "ctl", "status", "--socket", str(run_dir / "control.sock")],
        env={**os.environ, "PYTHONPATH": os.getcwd(), "HOME": "/tmp"}, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="asks as another user"
)
def test_a_guest_refused_by_the_control_socket_is_told_which_group_to_join(
    open_dir: Path,
) -> None:
    """/run/live-appliance is the service group's (0750): a user outside it was told
    "run as a member of its group, or with sudo", and could not even look up which group
    that is (the socket inside may not be looked at)."""
    run_dir = open_dir / "live-appliance"
    run_dir.mkdir()
    os.chown(run_dir, 0, grp.getgrnam("nogroup").gr_gid)  # the service's group, by name
    run_dir.chmod(0o750)
    asked = _guest_asks_status(run_dir)
    assert asked.returncode == 1, asked.stderr
    assert "Traceback" not in asked.stderr
    assert "group nogroup" in asked.stderr and "sudo" in asked.stderr, asked.stderr
    assert "usermod -a -G nogroup" in asked.stderr, asked.stderr


HOLD_THE_LOCK = """
import sys
from device.control import single_instance
with single_instance(sys.argv[1]):
    print("running", flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="root's lock, then the service's"
)
def test_the_service_keeps_a_second_copy_out_after_a_copy_run_as_root(open_dir: Path) -> None:
    """`sudo live-appliance run` by hand (the service had stopped before making its lock,
    a configuration error) made /run/live-appliance/control.sock.lock root's, 0600: the
    service started later could not open it and ran without it, and a second copy run
    by hand while it stopped took the pins and sound devices from under it."""
    run_dir = open_dir / "live-appliance"
    run_dir.mkdir(mode=0o750)
    os.chown(run_dir, SERVICE_UID, SERVICE_UID)  # RuntimeDirectory=, kept between starts
    sock = run_dir / "control.sock"
    with single_instance(sock):
        pass  # the copy run as root, and stopped
    service = subprocess.Popen(
        ["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups",
         sys.executable, "-c", HOLD_THE_LOCK, str(sock)],
        env={**os.environ, "PYTHONPATH": os.getcwd()}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert service.stdout is not None and service.stdout.readline() == "running\n"
        with pytest.raises(AlreadyRunning), single_instance(sock):
            pass  # a second copy, run by hand again
    finally:
        service.communicate("", timeout=10)


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
    asked = _guest_asks_status(run_dir)
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
