"""Device selection from the configuration, against the loopback's real devices."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyaudio
import pytest

from device.audio import devices as devices_mod
from device.audio.devices import (
    RATES,
    AudioDeviceError,
    DeviceInfo,
    StreamFormat,
    choose_device,
    list_devices,
    pick_format,
    print_devices,
    rate_support,
    select_devices,
    selected_rates,
    supports_rate,
)
from device.config import AudioConfig, Config
from device.doctor import audio as doctor_audio
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status


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


def test_error_summary_is_one_line_without_the_listing(pa: pyaudio.PyAudio) -> None:
    with pytest.raises(AudioDeviceError) as err:
        choose_device(pa, "no such device", "output")
    assert err.value.summary == "no output device matches 'no such device'"
    assert "\n" not in err.value.summary


def test_rate_support_names_the_directions(pa: pyaudio.PyAudio) -> None:
    pulse = choose_device(pa, "pulse", "input")
    assert rate_support(pa, pulse, 16000) == "in/out"
    assert rate_support(pa, pulse, 1) == "-"
    assert selected_rates(pa, pulse, "input") == list(RATES)


def test_select_devices_reports_each_direction_on_its_own(pa: pyaudio.PyAudio) -> None:
    chosen = select_devices(pa, AudioConfig(input_device="no such mic", output_device="pulse"))
    assert isinstance(chosen["input"], AudioDeviceError)
    assert chosen["output"] == choose_device(pa, "pulse", "output")


def device_rows(listing: str) -> dict[str, list[str]]:
    """The table's rows by device name: the cells before the name, then any mark."""
    rows = {}
    for line in listing.splitlines()[1:]:
        cells, _, mark = line.partition("  <- ")
        if cells.strip()[:1].isdigit():
            *numbers, name = cells.split(maxsplit=7)
            rows[name] = [*numbers, mark]
    return rows


def test_print_devices_marks_the_configured_ones(loopback: object) -> None:
    out = io.StringIO()
    assert print_devices(AudioConfig(input_device="pulse"), out) == 0
    listing = out.getvalue()
    assert listing.splitlines()[0].split() == [
        "index", "in", "out", "default", "16000", "24000", "48000", "name",
    ]  # fmt: skip
    rows = device_rows(listing)
    assert rows["pulse"][1:] == ["32", "32", "44100", "in/out", "in/out", "in/out", "input"]
    assert rows["default"][-1] == "output"
    assert f"input: #{rows['pulse'][0]} 'pulse' ([audio] 'pulse')" in listing
    assert f"output: #{rows['default'][0]} 'default' (the default device)" in listing


def test_print_devices_says_which_configured_device_is_missing(loopback: object) -> None:
    out = io.StringIO()
    assert print_devices(AudioConfig(output_device="USB speaker"), out) == 1
    assert (
        "output: no output device matches 'USB speaker': plug it in, or set [audio] "
        "output_device to a name or index above" in out.getvalue()
    )


class StereoOnly:
    """PortAudio as a WM8960's raw hw: device answers: stereo only, 48 kHz only."""

    def is_format_supported(self, rate: int, **kwargs: int) -> bool:
        channels = kwargs.get("input_channels") or kwargs.get("output_channels")
        if channels != 2 or rate != 48000:
            raise ValueError("Invalid number of channels")
        return True


def test_a_device_without_mono_is_opened_with_its_own_channels() -> None:
    hat = DeviceInfo(
        index=3,
        name="seeed-2mic-voicecard (hw:1,0)",
        max_input_channels=2,
        max_output_channels=2,
        default_rate=48000,
    )
    pa: pyaudio.PyAudio = StereoOnly()  # type: ignore[assignment]
    assert pick_format(pa, hat, 16000, "input") == StreamFormat(48000, 2)
    assert pick_format(pa, hat, 24000, "output") == StreamFormat(48000, 2)


def test_a_device_with_mono_stays_mono(pa: pyaudio.PyAudio) -> None:
    pulse = choose_device(pa, "pulse", "input")
    assert pick_format(pa, pulse, 16000, "input") == StreamFormat(16000, 1)


CHATTER = ("ALSA lib", "jack server", "Cannot connect to server", "JackShm")
OPEN_PORTAUDIO = """
import sys
if sys.argv[1] == "quiet":
    from device.audio.portaudio import open_portaudio as make
else:
    import pyaudio
    make = pyaudio.PyAudio
make().terminate()
"""


def test_opening_portaudio_puts_no_alsa_or_jack_chatter_in_the_journal() -> None:
    """Under systemd stderr is the journal: opening PortAudio must not fill it."""

    def stderr_of(how: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", OPEN_PORTAUDIO, how], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return run.stderr

    plain = stderr_of("plain")
    assert any(line in plain for line in CHATTER), "this machine's libraries are quiet anyway"
    quiet = stderr_of("quiet")
    assert [line for line in quiet.splitlines() if any(c in line for c in CHATTER)] == []


PLUGINS_KEPT = """
import json
import sys
if sys.argv[1] == "released":
    from device.audio.portaudio import open_portaudio as make
else:
    import pyaudio
    make = pyaudio.PyAudio
pa = make()
maps = open("/proc/self/maps").read()
print(json.dumps(sorted({line.split("/")[-1] for line in maps.splitlines()
                         if "libasound_module_" in line})))
"""


def test_opening_portaudio_lets_go_of_the_alsa_plugins_its_scan_loaded() -> None:
    """PortAudio's device scan loads every ALSA plugin the configuration names (and the
    codecs they link: megabytes of the daemon's memory); with no device open, none stays."""

    def plugins_after(how: str) -> list[str]:
        run = subprocess.run(
            [sys.executable, "-c", PLUGINS_KEPT, how], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        names: list[str] = json.loads(run.stdout)
        return names

    assert plugins_after("plain"), "this machine's ALSA has no plugins to load anyway"
    assert plugins_after("released") == []


class _NoSoundCard:
    """PortAudio on a box with no sound card plugged in: no devices, no defaults."""

    def get_device_count(self) -> int:
        return 0

    def get_default_input_device_info(self) -> dict[str, Any]:
        raise OSError("No Default Input Device Available")

    def get_default_output_device_info(self) -> dict[str, Any]:
        raise OSError("No Default Output Device Available")

    def terminate(self) -> None:
        return None


def test_devices_with_no_sound_card_says_to_plug_one_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices_mod, "open_portaudio", _NoSoundCard)
    out = io.StringIO()
    assert print_devices(AudioConfig(), out) == 1
    listing = out.getvalue()
    assert "(PortAudio sees no audio devices)" in listing
    assert "index above" not in listing  # there is none above to choose
    assert "input: no default input device: plug in a microphone" in listing
    assert "output: no default output device: plug in a speaker" in listing


@pytest.fixture
def sound_cards_not_ours(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Pi with its USB card in, run by an owner outside the audio group: the card's
    device files are there, and this user may open none of them (PortAudio lists none)."""
    nodes = tmp_path / "snd"
    nodes.mkdir()
    for name in ("controlC1", "pcmC1D0c", "pcmC1D0p"):
        (nodes / name).touch()
    monkeypatch.setattr(devices_mod, "SOUND_NODES", nodes)
    monkeypatch.setattr(devices_mod.os, "access", lambda *_: False)  # the tests run as root


@pytest.mark.usefixtures("sound_cards_not_ours")
def test_devices_run_by_a_user_outside_the_audio_group_says_so_not_plug_one_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """"plug in a microphone" sent the owner to a card plugged in all along."""
    monkeypatch.setattr(devices_mod, "open_portaudio", _NoSoundCard)
    out = io.StringIO()
    assert print_devices(AudioConfig(), out) == 1
    listing = out.getvalue()
    assert "plug in" not in listing
    assert "input: no default input device: this user may not open the sound cards" in listing
    assert "sudo usermod -a -G audio USER" in listing


@pytest.mark.usefixtures("sound_cards_not_ours")
async def test_the_doctor_run_by_a_user_outside_the_audio_group_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doctor_audio, "open_portaudio", _NoSoundCard)
    ctx = Context(Config(), Options(), Progress(spinner=False))
    result = await doctor_audio.check_devices(ctx)
    assert result.status is Status.FAIL
    assert result.fix.startswith("This user may not open the sound cards"), result.fix
    assert "Plug the device in" not in result.fix


def test_two_webcams_microphones_are_named_as_several_not_a_traceback() -> None:
    """Two USB webcams (microphones that only record) and `input_device = "USB"`: neither
    plays, so neither is preferred; the owner is told that "USB" matches several input
    devices, and which, to name one; not a crash of the service with an IndexError."""
    from fakes import ALSA_DEFAULT, HEADPHONES, WEBCAM, ListedPortAudio, card

    from device.audio.devices import AudioDeviceError, choose_device

    pa: Any = ListedPortAudio(HEADPHONES, card(WEBCAM, 2), card(WEBCAM, 3), ALSA_DEFAULT)
    with pytest.raises(AudioDeviceError, match="'USB' matches several input devices"):
        choose_device(pa, "USB", "input")
