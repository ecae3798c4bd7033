"""The control socket: newline-delimited JSON over a UNIX stream socket.

The daemon serves it (`ControlServer`) so `live-appliance ctl` and tests can
press the button, release it and read the status without touching GPIO. Each
request is one JSON object with a "cmd" on one line; each answer is one JSON
object on one line, with "ok" and, on failure, "error". The client (`request`)
is in device.control_client: `ctl` answers without importing asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import pwd
import socket
import stat
import struct
import termios
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, SupportsIndex

from device.control_client import LINE_LIMIT, ControlError
from device.errors import ConfigError
from device.logs import Overflow

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

#: Clients served at once; one more is answered with an error and let go.
CLIENTS_LIMIT = 8
#: A client that sends no request (or reads no answer) for this long is let go.
CLIENT_IDLE_S = 10.0
#: A client's first request must come this soon: `ctl` sends it as it connects.
FIRST_REQUEST_S = 1.0
#: A client that waited this long for its request, or for it to read the answer, may
#: be let go for a newcomer: not one that connected and is about to send (`ctl` a moment
#: late on a busy Pi), which was let go unanswered.
IDLE_AFTER_S = 0.2
#: A client busy this long (`ctl` takes milliseconds) may be let go for a newcomer.
LONGEST_HOLD_S = FIRST_REQUEST_S
#: Connections the kernel keeps waiting for the daemon: asyncio takes as many at once
#: before the bound can turn them away (100 took 200 descriptors of the unit's 256).
BACKLOG = 2 * CLIENTS_LIMIT
#: struct ucred, as SO_PEERCRED gives it: pid, uid, gid.
PEERCRED = struct.Struct("3i")


class AlreadyRunning(ControlError):
    """Another live process already serves the control socket."""


class NotYourPlace(ControlError):
    """A copy run by hand may not listen where the service does: nothing in the
    configuration is wrong (not status 2), the place is the service user's."""


def _by_hand_in_place_of(path: Path) -> str | None:
    """The user whose directory `path` is in, when a copy run by hand (systemd gives the
    service NOTIFY_SOCKET) is someone else: the service's place. None where the place is
    root's or ours, or the service itself is refused: a configuration to correct."""
    if os.environ.get("NOTIFY_SOCKET"):
        return None
    try:
        uid = path.parent.stat().st_uid
    except OSError:
        return None
    if uid in (0, os.geteuid()):
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@contextlib.contextmanager
def single_instance(socket_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the daemon's lock (`<socket>.lock`, flock) for as long as the process runs.

    The socket alone cannot tell: a daemon that is stopping has closed it but still
    holds its pins and sound devices for a few seconds, and a second one started then
    ran without its LEDs for good; two started at once could each find the socket
    stale and remove the other's. The lock goes with the process, however it ends.
    """
    path = Path(f"{os.fspath(socket_path)}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except PermissionError as exc:
        if not path.exists():  # the socket's directory: the owner's to fix
            raise _unusable(path, exc) from None
        # The service user's own lock, and `live-appliance run` by someone else (in its
        # group): the socket's check says whether a daemon runs, as it did before.
        yield
        return
    except OSError as exc:
        raise _unusable(path, exc) from None
    try:
        _to_the_owner_of_its_place(fd, path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"live-appliance is already running, or still stopping: {_holder(fd)} "
                f"holds {path}"
            ) from None
        # Its pid in it, for the next one refused to name (a `sudo live-appliance run` the
        # owner forgot, not the service). A courtesy: with /run full (a small tmpfs) the
        # lock still holds, and the next one refused names "another process".
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _to_the_owner_of_its_place(lock_fd: int, path: Path) -> None:
    """The lock root makes (`sudo live-appliance run` by hand) is given to the owner of its
    directory, the service's /run/live-appliance: root's and 0600, the service started
    later could not open it and ran without it, and a copy run by hand while it stopped
    took its pins and sound devices."""
    if os.geteuid() != 0:
        return
    place = path.parent.stat()
    with contextlib.suppress(OSError):
        os.fchown(lock_fd, place.st_uid, place.st_gid)


def _holder(lock_fd: int) -> str:
    """"process N", the pid the lock's holder wrote in it; else "another process"."""
    written = os.pread(lock_fd, 32, 0).strip()
    return f"process {int(written)}" if written.isdigit() else "another process"


def _in_the_group_of_its_place(path: Path) -> None:
    """The socket in its directory's group, as the service's own is (its user's group owns
    /run/live-appliance): a copy run by hand with sudo made it root:root, and a member of the
    service's group was refused `ctl` and the doctor. A user who may not give it that group
    keeps their own."""
    group = path.parent.stat().st_gid
    if path.stat().st_gid != group:
        with contextlib.suppress(PermissionError):
            os.chown(path, -1, group)


class NoRoom(ControlError):
    """The socket's file system (/run, a small tmpfs) has no room or no inode left: not
    the configuration (status 2 stops systemd's restarts), a place that may be freed."""


def _unusable(lock: Path, exc: OSError) -> ConfigError | NoRoom:
    problem = f"cannot make the lock {lock}: {exc.strerror or exc}"
    return _no_room(problem, lock, exc) or ConfigError(f"[control] socket: {problem}")


def _no_room(problem: str, path: Path, exc: OSError) -> NoRoom | None:
    """NoRoom for an OSError of a full file system (out of space or of inodes)."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return NoRoom(
        f"{problem}: its file system is full, or out of inodes (a program's runaway "
        f"files); `df -h -i {path.parent}` shows which"
    )


class ControlServer:
    """Serves the control socket, answering each request with `handler`.

    A bad line (not JSON, not an object, no "cmd", or a handler that raises) is
    answered with {"ok": false, "error": ...}; the connection and the server live
    on. The handler decides which commands exist and answers unknown ones with an
    error reply of its own; a reply without "ok" gets "ok": true.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Handler,
        *,
        mode: int = 0o660,
        clients_limit: int = CLIENTS_LIMIT,
        idle_s: float = CLIENT_IDLE_S,
    ) -> None:
        self.path = Path(path)
        self._handler = handler
        self._mode = mode
        self._clients_limit = clients_limit
        self._idle_s = idle_s
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._counted: dict[asyncio.Task[None], float] = {}  # not let go yet, and since when
        # Idle or unread, since when, and whether its request has come meanwhile.
        self._waiting: dict[asyncio.Task[None], tuple[float, Callable[[], bool]]] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self._crowded = Overflow(logger, "control_clients")

    async def start(self) -> None:
        """Listen, replacing a stale socket file; AlreadyRunning if a live one answers."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await self._remove_stale()
            self._server = await asyncio.get_running_loop().create_unix_server(
                lambda: asyncio.StreamReaderProtocol(_Reader(LINE_LIMIT), self._accept),
                path=self.path,
                backlog=BACKLOG,
            )
        except OSError as exc:  # the path is unusable: the owner's to fix, no retry helps
            problem = f"cannot listen on {self.path}: {exc.strerror or exc}"
            if full := _no_room(problem, self.path, exc):
                raise full from None
            if isinstance(exc, PermissionError) and (owner := _by_hand_in_place_of(self.path)):
                # Not as that user (`sudo -u`): the installer's key is root's alone, the
                # service's only as systemd's credential, and sudo drops the caller's own.
                raise NotYourPlace(
                    f"{problem}: {self.path.parent} is user {owner}'s, the service's: "
                    "sudo systemctl start live-appliance runs the box; to run it by hand, "
                    "stop the service and run it as root, who may read the key: sudo "
                    "live-appliance run"
                ) from None
            raise ConfigError(f"[control] socket: {problem}") from None
        os.chmod(self.path, self._mode)
        _in_the_group_of_its_place(self.path)
        self._inode = self.path.stat().st_ino

    async def aclose(self) -> None:
        """Stop listening, end every client task and remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in self._clients:
            task.cancel()
        if self._clients:
            await asyncio.wait(self._clients)
        await server.wait_closed()
        self._unlink_if_ours()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _remove_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(  # a file in the way is the owner's to move: no restart helps
                f"[control] socket: {self.path} exists and is not a socket; not replacing it"
            )
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 2.0)
        except (ConnectionRefusedError, FileNotFoundError):
            logger.info("removing stale control socket %s", self.path)
            self.path.unlink(missing_ok=True)
            return
        except TimeoutError:
            holder = "another process"  # a listener too busy to accept is still a listener
        else:
            holder = _peer(writer)
            writer.close()
        raise AlreadyRunning(f"live-appliance is already running: {holder} serves {self.path}")

    def _unlink_if_ours(self) -> None:
        # A newer daemon may have replaced the file; only remove the one we made.
        try:
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert isinstance(reader, _Reader)  # the server's protocol makes only these
        task = asyncio.create_task(self._serve(reader, writer), name="control-client")
        self._clients.add(task)
        task.add_done_callback(self._gone)

    def _take_place(self, newcomer: asyncio.Task[None]) -> bool:
        """Whether `newcomer` is served: there is room, or a client makes room for it."""
        if len(self._counted) >= self._clients_limit:
            if (making_room := self._to_let_go()) is None:
                self._crowded.hit("control client refused: %d are connected", self._clients_limit)
                return False
            # Out of the count at once: the next newcomer must not pick it again.
            del self._counted[making_room]
            self._waiting.pop(making_room, None)
            making_room.cancel()
        self._crowded.ended()
        self._counted[newcomer] = asyncio.get_running_loop().time()
        return True

    def _to_let_go(self) -> asyncio.Task[None] | None:
        """The client that makes room for a newcomer, so that a few clients cannot lock the
        owner's `ctl` out (the release of a press taken with it among them): the longest
        idle of those asking nothing (held open) or reading nothing; else the longest
        connected of those busy past LONGEST_HOLD_S (requests sent without end), between
        two of its requests. None when every client is being served as `ctl` is."""
        now = asyncio.get_running_loop().time()
        idle = {
            task: since
            for task, (since, asked) in self._waiting.items()
            if since <= now - IDLE_AFTER_S and task in self._counted and not asked()
        }
        if idle:
            return min(idle, key=idle.__getitem__)
        held_since = now - LONGEST_HOLD_S
        hogs = {
            task: since
            for task, since in self._counted.items()
            if since <= held_since and task not in self._answering
        }
        return min(hogs, key=hogs.__getitem__) if hogs else None

    def _gone(self, task: asyncio.Task[None]) -> None:
        self._clients.discard(task)
        self._counted.pop(task, None)
        self._waiting.pop(task, None)
        self._answering.discard(task)

    async def _serve(self, reader: _Reader, writer: asyncio.StreamWriter) -> None:
        """Answer requests until the client leaves, or stays silent (or unread) `idle_s`
        (FIRST_REQUEST_S before its first request)."""
        this = asyncio.current_task()
        assert this is not None
        wait_s = min(FIRST_REQUEST_S, self._idle_s)
        done = False  # the client finished: what it was sent goes out before the close
        try:
            # A turn of the loop first: a client whose request it has read by then is being
            # answered, no longer idle, and is not let go for this one.
            await asyncio.sleep(0)
            if not self._take_place(this):
                busy = _error(f"busy: {self._clients_limit} clients are connected; try again")
                busy["full"] = True  # `ctl` tries again: the request was not read
                writer.write(json.dumps(busy).encode() + b"\n")  # small: the socket takes it
                done = True
                return
            while True:
                with self._idle_while(this, _asker(reader, writer)):
                    async with asyncio.timeout(wait_s):
                        try:
                            line = await reader.readline()
                        except ValueError:  # over LINE_LIMIT: the rest is unframed
                            await self._deliver(this, writer, _error("request line too long"))
                            done = True
                            return
                wait_s = self._idle_s
                if not line:
                    done = True
                    return
                if line.strip():
                    self._answering.add(this)  # not let go half-way through a command
                    try:
                        reply = await self._answer(line)
                    finally:
                        self._answering.discard(this)
                    await self._deliver(this, writer, reply)
                # Lines already read are there without a wait: a burst of them was answered
                # in one go, the microphone's chunks and the reply's audio waiting behind it.
                await asyncio.sleep(0)
        except (ConnectionError, TimeoutError):
            pass  # the client went away, or kept the connection without using it
        except Exception:
            logger.exception("control client failed")
        finally:
            try:
                if done:
                    await self._close_when_read(this, writer)
            finally:
                # Gone, idle, unread or a stop: a graceful close would wait for it to read
                # what it was sent, holding the connection (and, from Python 3.12, the
                # server's wait_closed at shutdown) for as long as the client lives.
                writer.transport.abort()

    @contextlib.contextmanager
    def _idle_while(self, this: asyncio.Task[None], asked: Callable[[], bool]) -> Iterator[None]:
        """`this` counts as idle from now (a newcomer may take its place) unless `asked`
        says a request has come for it, until the block ends."""
        self._waiting[this] = (asyncio.get_running_loop().time(), asked)
        try:
            yield
        finally:
            self._waiting.pop(this, None)

    async def _deliver(
        self, this: asyncio.Task[None], writer: asyncio.StreamWriter, reply: dict[str, Any]
    ) -> None:
        """Until the client reads the answer (at once, unless its socket is full of them)
        it is idle too: a newcomer may take its place; `idle_s` unread, it is let go."""
        with self._idle_while(this, _unasked):
            async with asyncio.timeout(self._idle_s):
                await _send(writer, reply)

    async def _close_when_read(
        self, this: asyncio.Task[None], writer: asyncio.StreamWriter
    ) -> None:
        """A client that finished (its end closed, a line too long) reads what it was sent
        before the close, within `idle_s`: one that never read held its connection open
        past its task, outside the bound, until the daemon had no descriptor left."""
        writer.close()
        with self._idle_while(this, _unasked), contextlib.suppress(OSError):
            # OSError: not read in time (TimeoutError), or the client went away
            async with asyncio.timeout(self._idle_s):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as exc:  # not UTF-8, not JSON, a number past int's digit limit
            return _error(f"bad JSON: {exc}")
        except RecursionError:
            return _error("bad JSON: nested too deeply")
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return _error('a request is a JSON object with a string "cmd"')
        cmd = request["cmd"]
        try:
            reply = await self._handler(request)
        except Exception as exc:
            logger.exception("control command %r failed", cmd)
            return _error(f"{cmd} failed: {exc}")
        if not isinstance(reply, dict):
            logger.error("control handler answered %r with %r", cmd, reply)
            return _error(f"{cmd} gave no answer")
        return {"ok": True, **reply}


async def _send(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
    try:
        data = json.dumps(reply)
    except (TypeError, ValueError) as exc:
        logger.error("control reply is not JSON: %r", reply)
        data = json.dumps(_error(f"reply is not JSON: {exc}"))
    writer.write(data.encode() + b"\n")
    await writer.drain()


class _Reader(asyncio.StreamReader):
    """A client's stream, counting what came: its task may not have run since."""

    fed = 0

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        super().feed_data(data)
        self.fed += 1


def _asker(reader: _Reader, writer: asyncio.StreamWriter) -> Callable[[], bool]:
    """Whether the client has sent something since it began waiting for its request: read
    by the loop (its task not yet woken) or still in its socket. A client taken for idle
    as its request came was let go unanswered."""
    fed = reader.fed
    sock = writer.get_extra_info("socket")

    def asked() -> bool:
        if reader.fed != fed:
            return True
        unread = bytearray(4)
        with contextlib.suppress(OSError):
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, unread)
        return int.from_bytes(unread, "little") > 0

    return asked


def _unasked() -> bool:
    """A client waited on to read its answers: whatever it sends meanwhile waits too."""
    return False


def _peer(writer: asyncio.StreamWriter) -> str:
    """"process N", the one at the other end of a UNIX socket (the kernel says which)."""
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
    pid, _uid, _gid = PEERCRED.unpack(creds)
    return f"process {pid}"


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}
