"""What a local user can send the daemon, and what a daemon can send `ctl`, has a bound."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from device import config
from device.control import ControlServer
from device.control_client import ControlError, request
from device.doctor.camera import check_camera
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status

MB = 1024 * 1024


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ctl.sock"


@contextlib.contextmanager
def serve_once(path: Path, answer: Callable[[socket.socket], None]) -> Iterator[None]:
    """A stand-in daemon at `path`: takes one request and answers it with `answer`."""
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


async def test_a_flood_of_requests_on_one_connection_lets_the_daemon_run_between_them(
    path: Path,
) -> None:
    """Requests sent in one write were answered in one go without the event loop running
    anything else: 50,000 `ctl press` lines (refused at their bound, a few bytes each)
    held the loop for 0.45 s on a PC, seconds on a Pi, the microphone's chunks and the
    reply's audio waiting behind them each time the socket was read."""
    handled = 0

    async def handler(_request: dict[str, Any]) -> dict[str, Any]:
        nonlocal handled
        handled += 1
        return {"ok": False, "error": "busy"}

    lines = 5000
    seen = [0]  # requests answered so far, each time something else ran

    async def other_work() -> None:
        while seen[-1] < lines:
            await asyncio.sleep(0)
            seen.append(handled)

    async with ControlServer(path, handler):
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
    assert handled == lines
    assert longest <= 2, f"{longest} requests were answered with the loop held"


def test_a_setting_from_the_environment_nested_thousands_deep_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The configuration file's own nesting was caught; a variable's was not: `ctl`,
    `doctor` and the service itself ended in a RecursionError traceback."""
    for name in [name for name in os.environ if name.startswith(config.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    path = tmp_path / "config.toml"
    path.write_text("")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_CHUNK_MS", "[" * 5000)
    with pytest.raises(config.ConfigError, match="AUDIO_CHUNK_MS: must be an integer"):
        config.load(path)


async def test_clients_that_read_none_of_their_answers_cannot_lock_the_owner_out(
    path: Path,
) -> None:
    """A client silent for long is let go for a newcomer, but not one that sent requests
    and never read their answers: as many as the daemon serves kept every `ctl` of the
    owner busy for as long as they went on."""

    async def handler(_request: dict[str, Any]) -> dict[str, Any]:
        return {"state": "idle"}

    async with ControlServer(path, handler, clients_limit=2, idle_s=5.0):
        hogs = []
        for _ in range(2):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b'{"cmd": "status"}\n' * 50_000)  # far more answers than a socket holds
            hogs.append((reader, writer))
        await asyncio.sleep(0.5)  # each is answered until its answers fill its socket
        assert await asyncio.to_thread(request, path, "status") == {"ok": True, "state": "idle"}
        for _, writer in hogs:
            writer.transport.abort()


def doctor_context(tmp_path: Path, photo: Path) -> Context:
    """The doctor's camera check with the synthetic camera, saving its frame at `photo`."""
    path = tmp_path / "config.toml"
    path.write_text("[camera]\nenabled = true\nsource = 'synthetic'\n")
    return Context(config.load(path), Options(camera_out=photo), Progress(spinner=False))


async def test_a_fifo_where_the_doctor_saves_its_picture_does_not_hold_the_doctor(
    tmp_path: Path,
) -> None:
    """The picture goes to /tmp by default, where any local user may put a FIFO: opening
    it to write waited for a reader, and `sudo live-appliance doctor` never ended."""
    photo = tmp_path / "camera.jpg"
    os.mkfifo(photo, 0o666)
    check = asyncio.create_task(check_camera(doctor_context(tmp_path, photo)))
    done, _ = await asyncio.wait([check], timeout=5)
    if not done:  # a reader comes, or the thread stuck in open() keeps the test process
        await asyncio.to_thread(photo.read_bytes)
    assert done, "the doctor waited on the FIFO"
    result = check.result()
    assert result.status is not Status.FAIL, result


async def test_a_file_held_open_where_the_doctor_saves_its_picture_never_gets_it(
    tmp_path: Path,
) -> None:
    """A local user who made the file and holds it open read the room's picture through
    it, whatever its owner and mode became once the doctor had written it."""
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(b"")
    with photo.open("rb") as held:  # opened before the doctor ran, by someone else
        result = await check_camera(doctor_context(tmp_path, photo))
        assert result.status is Status.PASS, result
        assert held.read() == b"", "the picture went into a file another process held"
    assert photo.read_bytes()[:2] == b"\xff\xd8"
    assert photo.stat().st_mode & 0o777 == 0o600
