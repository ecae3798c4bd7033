"""A push-to-talk press held to `longest_turn_s` goes again whole on a new connection."""

from __future__ import annotations

import logging

import pytest

from device.audio.capture import PRESS_LAG_S
from device.config import Config
from device.live.session import _wire_turn
from device.live.wire import MIC_RATE

TENTH = b"\x01\x00" * (MIC_RATE // 10)


def test_a_press_held_to_the_longest_turn_goes_again_whole_after_a_switch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The longest turn runs `longest_turn_s` from when the box takes the press, and its
    audio reaches back before that: to the button's edge (up to PRESS_LAG_S earlier, the
    box busy switching the camera off) and the pre-roll before it. What is kept to send
    again was `longest_turn_s` alone, so a goAway near the end of a long reading lost its
    first words, and the journal said "its first 0 s are lost"."""
    cfg = Config()
    turn = _wire_turn(cfg)
    turn.sent("activity_start")
    held_s = cfg.conversation.longest_turn_s + PRESS_LAG_S + cfg.audio.preroll_ms / 1000
    tenths = round(held_s * 10)
    for _ in range(tenths):
        turn.spoke(TENTH)
    with caplog.at_level(logging.WARNING):
        again = turn.words_to_repeat()
    assert sum(map(len, again)) == len(TENTH) * tenths, "the whole press again"
    assert "lost" not in caplog.text
