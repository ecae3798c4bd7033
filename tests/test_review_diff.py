"""Review (today's diff): what the fixes of 2b48469..HEAD still get wrong."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from device import workers
from device.cli import build_parser


async def test_a_lookup_whose_thread_cannot_start_gives_its_place_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that cannot start (TasksMax=64 reached: hung tools, a wedged driver) fails
    that lookup; its place must come back. It stayed taken: after LOOKUPS such failures
    every later name lookup waited for a place that never came, and each press showed
    "connecting" to its timeout until the daemon was restarted."""
    loop = asyncio.get_running_loop()
    workers.lookups_apart(loop)
    start = threading.Thread.start
    failing = workers.LOOKUPS

    def start_or_not(self: threading.Thread) -> None:
        nonlocal failing
        if self.name == "lookup" and failing > 0:
            failing -= 1
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", start_or_not)
    for _ in range(workers.LOOKUPS):
        with pytest.raises(RuntimeError):
            await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    async with asyncio.timeout(5):
        found: list[Any] = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert found


def test_ctl_text_with_an_empty_word_among_its_words_is_sent() -> None:
    """`ctl text "$QUESTION" "$DETAIL"` with DETAIL empty: the words are one turn, and it
    has words. Each word was judged alone, and the turn refused as "no words in it"
    (before today the daemon took it)."""
    args = build_parser().parse_args(["ctl", "text", "What time is it?", ""])
    assert args.words.strip() == "What time is it?"
