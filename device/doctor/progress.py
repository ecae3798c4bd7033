"""Progress for commands that take more than a second: a spinner, or one line per step.

On a terminal a spinner with the step's text turns on stderr and is wiped when the
step ends, so the result printed next takes its place. Anywhere else (a pipe, the
journal, a test) each step is one plain line on stderr, written as it starts.
Results belong on stdout; progress never mixes into them. A step inside a step
only changes the text, until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import TextIO

FRAMES = "|/-\\"
FRAME_S = 0.1


class Progress:
    """Shows what is running now."""

    def __init__(self, stream: TextIO | None = None, *, spinner: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.spinner = self.stream.isatty() if spinner is None else spinner
        self._text: str | None = None
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def step(self, text: str) -> AsyncIterator[Callable[[str], None]]:
        """Show `text` while the block runs; the block may change it with the yielded call."""
        outer, self._text = self._text, text
        if not self.spinner:
            self._write(f"... {text}\n")
        elif self._task is None:
            self._task = asyncio.create_task(self._spin(), name="progress-spinner")
        try:
            yield self._set_text
        finally:
            self._text = outer
            if outer is None and self._task is not None:
                task, self._task = self._task, None
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._write("\r\x1b[K")

    def note(self, text: str) -> None:
        """One line of progress between steps (e.g. a time measured on the way)."""
        self._write(f"{text}\n")

    def _set_text(self, text: str) -> None:
        self._text = text

    async def _spin(self) -> None:
        for i in itertools.count():
            line = f"{FRAMES[i % len(FRAMES)]} {self._text}"
            self._write(f"\r\x1b[K{line[: self._columns() - 1]}")
            await asyncio.sleep(FRAME_S)

    def _columns(self) -> int:
        """The terminal's width now (a window resized too): a frame wider than it wraps,
        and the next frame's carriage return goes back to the wrapped part only, a new
        line each frame (an SSH client on a phone)."""
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):  # no terminal under it after all
            return 80

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
