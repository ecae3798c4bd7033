"""A newcomer's first minutes: how `scripts/demo` ends.

The demo is the README's first command. It succeeds only when the reply was heard at
the loopback speaker; a Ctrl-C or a failure ends in one line that says what happened,
not a traceback, and leaves no scratch directory in /tmp.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from rig import demo
from rig.server.log import Entry

#: What the daemon's status says once the turn is over.
STATUS: dict[str, Any] = {
    "state": "idle",
    "turns": [{"turn_ms": 3700.0}],
    "states": [],
    "leds": ["idle", "connecting", "listening", "thinking", "speaking", "idle"],
}


class _Recorder:
    """The loopback speaker's recording: `heard` is when the reply was first loud."""

    def __init__(self, heard: float | None) -> None:
        self.heard = heard

    def wait_started(self) -> None:
        return None

    def stop(self) -> bytes:
        return b"\0\0" * 240

    def first_sound(self, after: float = 0.0) -> float | None:
        return self.heard


class _Player:
    def wait(self) -> None:
        return None


class _Sim:
    """The local server's log: one reply chunk sent."""

    def entries(self) -> list[Entry]:
        return [Entry("out", 1.0, 0, "audio", b"\0\0" * 2400)]

    def audio_in(self) -> bytes:
        return b"\0\0" * 1600


class _Rig:
    """The loopback, or the server thread: entered and left without work."""

    def __init__(self, heard: float | None) -> None:
        self.heard = heard
        self.server = _Sim()

    def __enter__(self) -> _Rig:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def record(self, rate: int) -> _Recorder:
        return _Recorder(self.heard)

    def play(self, pcm: bytes, rate: int) -> _Player:
        return _Player()


class _Daemon:
    """A daemon that answers the turn, unless its wait for readiness `raises` (a Ctrl-C,
    a timeout)."""

    started = 0.0

    def __init__(self, raises: BaseException | None) -> None:
        self.raises = raises
        self.terminated = False

    def wait_ready(self, **_: Any) -> float:
        if self.raises is not None:
            raise self.raises
        return 0.5

    def ctl(self, cmd: str) -> dict[str, Any]:
        return {"ok": True}

    def wait_until(self, *_: Any) -> dict[str, Any]:
        return STATUS

    def terminate(self) -> float:
        self.terminated = True
        return 0.0


def _run(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    raises: BaseException | None = None,
    heard: float | None = 1.01,
) -> tuple[int, Path, _Daemon]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    daemon = _Daemon(raises)
    monkeypatch.setattr(demo, "speak", lambda text: b"\0\0" * 1600)
    monkeypatch.setattr(demo, "scratch_dir", lambda prefix: workdir)
    monkeypatch.setattr(demo, "PulseLoopback", lambda: _Rig(heard))
    monkeypatch.setattr(demo, "ServerThread", lambda pace: _Rig(heard))
    monkeypatch.setattr(demo, "start_daemon", lambda *args, **kwargs: daemon)
    monkeypatch.setattr(demo.time, "sleep", lambda s: None)
    try:
        status = demo.main(["--out", str(tmp_path / "out")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left the demo as a traceback")
    return status, workdir, daemon


def test_the_demo_succeeds_when_the_reply_is_heard(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, workdir, _ = _run(monkeypatch, tmp_path)
    out, err = capsys.readouterr()
    assert status == 0
    assert "the reply is audible at the loopback speaker" in out
    assert err == ""
    assert not workdir.exists()


def test_a_reply_never_heard_is_a_failed_demo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, _ = _run(monkeypatch, tmp_path, heard=None)
    out, err = capsys.readouterr()
    assert status == 1
    assert "audible" not in out
    assert err == "demo: failed: no reply was heard at the loopback speaker\n"


def test_ctrl_c_in_the_demo_says_so_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, workdir, daemon = _run(monkeypatch, tmp_path, KeyboardInterrupt())
    err = capsys.readouterr().err
    assert status == 130
    assert "demo: interrupted" in err
    assert daemon.terminated
    assert not workdir.exists()


def test_a_demo_that_cannot_finish_says_why_in_a_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    why = AssertionError("timed out waiting for the daemon to be ready:\n(the daemon's log)")
    status, workdir, daemon = _run(monkeypatch, tmp_path, why)
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("demo: failed: timed out waiting for the daemon to be ready")
    assert "(the daemon's log)" in err
    assert daemon.terminated
    assert not workdir.exists()


def test_a_demo_out_it_cannot_write_is_said_before_the_rig_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sudo scripts/demo` once (setup wanted packages), then `scripts/demo` as oneself:
    demo-out's WAVs are root's. The whole demo ran (server, sound server, daemon, a turn),
    and only then ended in a traceback (PermissionError) with no timeline printed. A WAV
    it cannot write (here a directory in its place: root may write any file) is now said
    in one line before anything starts."""
    from rig import demo

    out = tmp_path / "demo-out"
    (out / "question.wav").mkdir(parents=True)
    started: list[str] = []

    def nothing_may_start(*args: object, **kwargs: object) -> None:
        started.append("rig")
        raise AssertionError("the rig started")

    monkeypatch.setattr(demo, "speak", lambda text: b"\0\0" * 1600)
    monkeypatch.setattr(demo, "PulseLoopback", nothing_may_start)
    monkeypatch.setattr(demo, "ServerThread", nothing_may_start)
    status = demo.main(["--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and not started
    assert err.startswith("demo: failed: cannot write ") and "question.wav" in err
    assert err.count("\n") == 1
