"""The microphone's overflows are said in the journal at most once a minute (the speaker's
underruns are, in test_journal): the line a struggling box gives, not one a click."""

from __future__ import annotations

import logging

import pytest

from device.config import AudioConfig
from device.mic_feed import MicFeed
from device.outbox import Outbox


def test_microphone_overflows_are_one_journal_line_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = MicFeed(AudioConfig(), Outbox(5))
    with caplog.at_level(logging.WARNING):
        for count in range(1, 4):  # three drops in one reply: one line, the first count
            feed.overflowed(count)
    said = [r for r in caplog.records if "microphone overflow" in r.getMessage()]
    assert [r.__dict__["LIVE_MIC_OVERFLOWS"] for r in said] == [1]
