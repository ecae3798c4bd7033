"""A newcomer's first minutes: `scripts/demo` when it is stopped or cannot finish.

The demo is the README's first command; a Ctrl-C or a failure there must end in one
line that says what happened, not a traceback, and leave no scratch directory in /tmp.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from rig import demo


class _Rig:
    """The loopback or the server thread as a context manager, entered and left without
    work (`server`: the thread's server, which the fake daemon never talks to)."""

    server = object()

    def __enter__(self) -> _Rig:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class _Daemon:
    """A daemon whose wait for readiness ends as `raises` says (Ctrl-C, or a timeout)."""

    started = 0.0

    def __init__(self, raises: BaseException) -> None:
        self.raises = raises
        self.terminated = False

    def wait_ready(self, **_: Any) -> float:
        raise self.raises

    def terminate(self) -> float:
        self.terminated = True
        return 0.0


def _run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raises: BaseException
) -> tuple[int, Path, _Daemon]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    daemon = _Daemon(raises)
    monkeypatch.setattr(demo, "speak", lambda text: b"\0\0" * 1600)
    monkeypatch.setattr(demo, "scratch_dir", lambda prefix: workdir)
    monkeypatch.setattr(demo, "PulseLoopback", lambda: _Rig())
    monkeypatch.setattr(demo, "ServerThread", lambda pace: _Rig())
    monkeypatch.setattr(demo, "start_daemon", lambda *args, **kwargs: daemon)
    try:
        status = demo.main(["--out", str(tmp_path / "out")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left the demo as a traceback")
    return status, workdir, daemon


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
