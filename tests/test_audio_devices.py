"""Device selection from the configuration, against the loopback's real devices."""

from __future__ import annotations

import pyaudio
import pytest

from device.audio.devices import AudioDeviceError, choose_device, list_devices, supports_rate


def test_none_is_the_default_device(pa: pyaudio.PyAudio) -> None:
    assert choose_device(pa, None, "input").index == pa.get_default_input_device_info()["index"]
    assert choose_device(pa, None, "output").index == pa.get_default_output_device_info()["index"]


def test_index_and_case_insensitive_name(pa: pyaudio.PyAudio) -> None:
    pulse = choose_device(pa, "PULSE", "output")
    assert pulse.name == "pulse"
    assert choose_device(pa, pulse.index, "input") == pulse


def test_exact_name_wins_over_substring_matches(pa: pyaudio.PyAudio) -> None:
    names = [d.name for d in list_devices(pa)]
    assert "default" in names
    assert choose_device(pa, "default", "output").name == "default"


@pytest.mark.parametrize("spec", ["no such device", 999])
def test_unknown_spec_lists_what_is_available(pa: pyaudio.PyAudio, spec: int | str) -> None:
    with pytest.raises(AudioDeviceError) as err:
        choose_device(pa, spec, "input")
    message = str(err.value)
    assert repr(spec) in message
    for device in list_devices(pa):
        assert device.name in message


def test_ambiguous_substring_is_an_error(pa: pyaudio.PyAudio) -> None:
    with pytest.raises(AudioDeviceError, match="several"):
        choose_device(pa, "", "output")  # every name contains ""


def test_rate_support(pa: pyaudio.PyAudio) -> None:
    pulse = choose_device(pa, "pulse", "input")
    assert supports_rate(pa, pulse, 16000, "input")
    assert not supports_rate(pa, pulse, 1, "input")
