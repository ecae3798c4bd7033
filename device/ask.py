"""`live-appliance ask "TEXT"`: text turns from the command line, the reply's words back.

One Live session with the daemon's own configuration and key; each TEXT is one
`client_content` turn. The reply's output transcription goes to stdout (one line
per turn, so it can be piped), timings and progress to stderr. `--audio` keeps all
reply audio as a 24 kHz mono WAV and `--play` plays it on the configured speaker
as it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from device import tasks
from device.doctor.progress import Progress
from device.errors import words_on_one_line
from device.live.client import Reply, open_session, run_turn
from device.live.wire import REPLY_RATE

if TYPE_CHECKING:

    from device.audio.playback import Playback
    from device.config import Config



class AskError(Exception):
    """The session could not be opened or a turn did not finish; the message says why.

    ``replies`` holds the turns that did finish, so their audio is not lost.
    """

    def __init__(self, message: str, replies: list[Reply] | None = None) -> None:
        super().__init__(message)
        self.replies = replies or []


class ReaderGone(AskError):
    """The reader of stdout went away (`ask ... | head -1`) as a reply was printed: no
    failure of the session's, and ``replies`` (their audio asked for) are kept still."""


def for_ask(cfg: Config) -> Config:
    """The owner's configuration with output transcription on (words are what ask prints)
    and no device tools: nothing here could answer the model's calls to them."""
    return dataclasses.replace(
        cfg,
        live=dataclasses.replace(cfg.live, transcripts=True),
        tools=dataclasses.replace(cfg.tools, enabled=()),
    )


async def ask(
    cfg: Config,
    texts: list[str],
    *,
    on_reply: Callable[[int, Reply], None],
    on_audio: Callable[[bytes], None] | None = None,
    progress: Progress | None = None,
    turn_timeout_s: float = 60.0,
    replies: list[Reply] | None = None,
) -> list[Reply]:
    """One session, one turn per text in order; `on_reply(n, reply)` as each completes.
    Each reply goes into `replies` as it completes: the caller's list keeps them when the
    run is stopped (Ctrl-C, SIGTERM) rather than failed."""
    from device.live.errors import describe_failure

    progress = progress or Progress()
    cfg = for_ask(cfg)
    replies = [] if replies is None else replies
    phase = "setup"
    try:
        async with contextlib.AsyncExitStack() as stack:
            async with progress.step(f"connecting to the Live API ({cfg.live.model})"):
                started = time.monotonic()
                session = await open_session(stack, cfg)  # within connect_timeout_s
            progress.note(f"session ready in {(time.monotonic() - started) * 1000:.0f} ms")
            for number, text in enumerate(texts, 1):
                phase = f"turn {number}"
                async with (
                    progress.step(f"turn {number}: waiting for the reply"),
                    asyncio.timeout(turn_timeout_s),
                ):
                    longest = cfg.conversation.longest_reply_s
                    reply = await run_turn(session, text, on_audio, longest)
                replies.append(reply)
                phase = "printing"
                on_reply(number, reply)
                phase = f"turn {number}"
    except Exception as exc:
        if phase == "printing":  # what on_reply raised is the caller's, not the session's
            if isinstance(exc, BrokenPipeError):
                raise ReaderGone("the reader of stdout went away", replies) from exc
            # A terminal gone otherwise (EIO: the SSH connection dropped): the turns done
            # are still the caller's to keep (--audio).
            raise AskError(f"printing the reply: {exc}", replies) from exc
        raise AskError(f"{phase}: {describe_failure(exc)}", replies) from exc
    return replies


def _report(number: int, reply: Reply) -> None:
    print(words_on_one_line(reply.text) or "(the reply had no transcript)", flush=True)
    first = f"{reply.first_audio_s * 1000:.0f} ms" if reply.first_audio_s is not None else "never"
    cut = ", interrupted" if reply.interrupted else ""
    if reply.end_reason:
        cut += f", ended by the service: {reply.end_reason}"
    print(
        f"turn {number}: first audio after {first}, {reply.audio_seconds:.1f} s of audio, "
        f"done in {reply.seconds:.1f} s{cut}",
        file=sys.stderr,
        flush=True,
    )


def _open_speaker(cfg: Config) -> Playback:
    from device.audio.devices import AudioDeviceError
    from device.audio.playback import Playback

    speaker = Playback(device=cfg.audio.output_device)
    try:
        speaker.start()
    except (AudioDeviceError, OSError) as exc:
        raise AskError(f"speaker: {_why_not_open(cfg, exc)}") from exc
    return speaker


def _why_not_open(cfg: Config, exc: Exception) -> str:
    """Why the speaker did not open. The running service holds it, most often (ALSA's hw
    devices take one process): said so, or the owner looked for another program (the
    card "held" by PipeWire, "Device unavailable"). Not a service that says its own
    speaker is failing (unplugged): it holds none, and the card's words are the answer."""
    from device.audio.devices import AudioDeviceError
    from device.doctor.daemon import in_use, running_status

    daemon = running_status(cfg.control.socket)
    if daemon is not None and "speaker" not in (daemon.get("faults") or []):
        return in_use(daemon, "play here, or leave out --play")
    if isinstance(exc, AudioDeviceError):
        return f"{exc.summary} (live-appliance devices lists them)"
    return f"cannot open it: {exc}"


async def _ask_and_play(
    cfg: Config, args: argparse.Namespace, replies: list[Reply]
) -> list[Reply]:
    speaker = _open_speaker(cfg) if args.play else None
    try:
        await ask(
            cfg,
            args.text,
            on_reply=_report,
            on_audio=speaker.feed if speaker else None,
            turn_timeout_s=args.timeout,
            replies=replies,
        )
        if speaker is not None:
            try:
                await speaker.play_out()
            except OSError as exc:  # a card pulled as it played
                raise AskError(str(exc), replies) from exc
        return replies
    finally:
        if speaker is not None:
            speaker.stop()


def _unwritable(path: str) -> str | None:
    """Why the reply's WAV could not be written there, found before the session: the
    owner would otherwise wait for every turn first. None when it can be; a file the
    probe made is removed again (a run that fails leaves no empty WAV behind)."""
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):
            pass
        # A full card still opens a file that is there (and makes one while it has an
        # inode left): its room is what decides. Root may use the blocks kept for it. A
        # pipe (`--audio >(aplay)`, /dev/fd/63 on /proc, no blocks) takes what it reads.
        full = stat.S_ISREG(os.stat(path).st_mode) and _no_room(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        if not existed:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return os.strerror(errno.ENOSPC) if full else None


def _no_room(path: str) -> bool:
    """Whether the file system holding the file `path` has no block left for this user."""
    room = os.statvfs(path)
    return room.f_blocks > 0 and (room.f_bfree if os.geteuid() == 0 else room.f_bavail) == 0


def _tell(line: str) -> None:
    """A line on stderr, if there is still a terminal to take it: the SSH connection that
    dropped as a reply was printed (EIO) is stderr's too, and its failure to print why ask
    stopped ended the command before the turns' audio was written to --audio."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr)


def run_ask(args: argparse.Namespace) -> int:
    """The `ask` command: 0 when every turn got a reply, 1 otherwise."""
    from device import config as config_mod

    cfg = config_mod.load(args.config)
    config_mod.require_credentials(cfg)
    if args.audio and (problem := _unwritable(args.audio)):
        print(f"live-appliance ask: --audio {args.audio}: {problem}", file=sys.stderr)
        return 1
    status = 0
    gone: ReaderGone | None = None
    replies: list[Reply] = []  # each turn's as it completes, whatever ends the run
    try:
        with _terminated_as_exit():
            replies = tasks.run(_ask_and_play(cfg, args, replies))
    except ReaderGone as exc:
        replies, gone = exc.replies, exc
    except AskError as exc:
        _tell(f"live-appliance ask: {exc}")
        replies, status = exc.replies, 1
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM (`timeout 30 ... ask`)
        if args.audio:  # the turns printed are kept, as when a later one fails
            _keep_audio(args.audio, replies)
        raise
    if args.audio and not _keep_audio(args.audio, replies):
        return 1
    if gone is not None:
        raise BrokenPipeError from gone  # ended quietly, as any command so ended
    return status


def _keep_audio(path: str, replies: list[Reply]) -> bool:
    """The finished turns' audio as a WAV at `path`; False if it could not be written.
    None finished: nothing is written, and a file there from an earlier run stays (a
    failure before any reply replaced it with an empty WAV)."""
    if not replies:
        _tell(f"no reply audio to keep: --audio {path} not written")
        return True
    from device.audio.pcm import write_wav  # numpy: not before a refusal, said at once

    audio = b"".join(reply.audio for reply in replies)
    try:
        write_wav(path, audio, REPLY_RATE, private=True)
    except OSError as exc:
        _tell(f"live-appliance ask: --audio {path}: {exc.strerror or exc}")
        return False
    _tell(f"wrote {len(audio) / 2 / REPLY_RATE:.1f} s of reply audio to {path}")
    return True


@contextlib.contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """SIGTERM (`timeout`, a hook's supervisor) ends the run as Ctrl-C does, through the
    loop's cleanup and the caller's `finally`, with its own exit status (143): by default
    it killed the process, the turns' audio unwritten."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():  # run from a thread
        yield  # Python lets only the main thread set handlers: its SIGTERM stays
        return
    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
