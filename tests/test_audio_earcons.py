"""Earcons: short, soft, distinct sounds in the playback format."""

from __future__ import annotations

import numpy as np
import pytest

from device.audio import pcm
from device.audio.earcons import RATE, earcon
from device.states import Earcon


@pytest.mark.parametrize("name", list(Earcon))
def test_every_earcon_is_short_soft_and_faded(name: Earcon) -> None:
    data = earcon(name)
    assert RATE == 24000
    assert 100 < pcm.duration_ms(data, RATE) < 500
    assert -20 < pcm.peak_dbfs(data) < -6
    samples = pcm.to_float(data)
    assert np.abs(samples[:5]).max() < 0.01 and np.abs(samples[-5:]).max() < 0.01


def test_every_earcon_sounds_different() -> None:
    assert len({earcon(name) for name in Earcon}) == len(Earcon)
