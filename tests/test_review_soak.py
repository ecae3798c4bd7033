"""A box left alone for weeks: what a failure, a press or a reopen leaves behind must not
pile up, nor hold a device that the next try then finds busy."""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any, ClassVar

import pytest
from fakes import SPEAKERPHONE, IdlePcm, ListedPortAudio, card

from device.audio import capture as capture_module
from device.audio.alsa import AlsaError
from device.audio.capture import Capture


class HwPcm(IdlePcm):
    """A card's capture device opened by its hw: name: one handle at a time (ALSA says
    EBUSY to the next open until the handle is closed)."""

    held: ClassVar[int] = 0

    def __init__(self, *args: Any) -> None:
        if HwPcm.held:
            raise AlsaError(errno.EBUSY, "cannot open: Device or resource busy")
        super().__init__(*args)
        HwPcm.held += 1
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            HwPcm.held -= 1


async def test_a_microphone_start_that_fails_after_its_device_opened_lets_the_device_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the unit's descriptor limit (LimitNOFILE) the device's open took the last
    descriptor and the reader's wake-up (an eventfd) found none: the start failed with
    the device left open by a handle nobody held. Every reopen the keeper tried after,
    descriptors free again, found the card busy: the microphone never came back."""
    monkeypatch.setattr(capture_module, "open_portaudio",
                        lambda: ListedPortAudio(card(SPEAKERPHONE, 2)))  # fmt: skip
    monkeypatch.setattr(capture_module, "CapturePcm", HwPcm)
    monkeypatch.setattr(HwPcm, "held", 0)
    loop = asyncio.get_running_loop()
    mic = Capture(lambda chunk, t: None, preroll=5)
    eventfd = os.eventfd

    def no_descriptor_left(*args: Any) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "eventfd", no_descriptor_left)
    with pytest.raises(OSError, match="Too many open files"):
        mic.start(loop)
    monkeypatch.setattr(os, "eventfd", eventfd)  # descriptors free again
    try:
        mic.start(loop)  # the keeper's next try
        assert mic.running
    finally:
        mic.close_stream()
    assert HwPcm.held == 0, "the device is held by nobody's handle"
