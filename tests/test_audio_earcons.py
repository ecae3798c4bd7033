"""Earcons: short, soft, distinct sounds in the playback format."""

from __future__ import annotations

import numpy as np
import pytest

from device.audio import pcm
from device.audio.earcons import RATE, earcon, names


@pytest.mark.parametrize("name", ["listen_start", "listen_end", "error"])
def test_earcon_is_short_soft_and_faded(name: str) -> None:
    data = earcon(name)
    assert name in names()
    assert RATE == 24000
    assert 100 < pcm.duration_ms(data, RATE) < 500
    assert -20 < pcm.peak_dbfs(data) < -6
    samples = pcm.to_float(data)
    assert np.abs(samples[:5]).max() < 0.01 and np.abs(samples[-5:]).max() < 0.01


def test_start_and_end_differ() -> None:
    assert earcon("listen_start") != earcon("listen_end")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="listen_start"):
        earcon("fanfare")
