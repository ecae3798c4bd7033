"""The speaker's PortAudio stream at its open, with a stand-in libportaudio that records
its calls: what it opened is closed again when the open cannot finish."""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from device.audio import output_stream
from device.audio.output_stream import OutputStream, PortAudioError, _StreamInfo


class _PortAudio:
    """libportaudio's calls the stream makes; Pa_GetStreamInfo answers `info` (NULL: None)."""

    def __init__(self, info: _StreamInfo | None) -> None:
        self.info = info
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: object) -> object:
            self.calls.append(name)
            if name == "Pa_GetStreamInfo":
                pointer = ctypes.POINTER(_StreamInfo)
                return pointer(self.info) if self.info is not None else pointer()
            if name == "Pa_GetErrorText":
                return b"stand-in error"
            return 0

        return call


def test_a_stream_portaudio_gives_no_info_for_is_closed_and_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pa_GetStreamInfo answers NULL for a stream it no longer knows (a device gone
    between the open and the question): `.contents` raised ValueError ("NULL pointer
    access"), not the OSError the audio keeper retries on, and the stream stayed open,
    holding the card (every later open found it busy) and PortAudio's reference."""
    lib = _PortAudio(None)
    monkeypatch.setattr(output_stream, "_library", lambda: lib)
    with pytest.raises(PortAudioError):
        OutputStream(0, 48000, 2, 480, 0.05)
    assert lib.calls.count("Pa_CloseStream") == 1, lib.calls
    assert lib.calls.count("Pa_Terminate") == lib.calls.count("Pa_Initialize") == 1, lib.calls


def test_a_stream_with_its_info_keeps_its_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = _PortAudio(_StreamInfo(1, 0.0, 0.025, 48000.0))
    monkeypatch.setattr(output_stream, "_library", lambda: lib)
    stream = OutputStream(0, 48000, 2, 480, 0.05)
    assert stream.output_latency == 0.025 and "Pa_CloseStream" not in lib.calls
    stream.close()
    assert lib.calls[-2:] == ["Pa_CloseStream", "Pa_Terminate"]
