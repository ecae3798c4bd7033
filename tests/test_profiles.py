"""Hardware profiles: what a config file naming each board resolves to, and overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fakes import (
    ALSA_DEFAULT,
    HDMI,
    HEADPHONES,
    HEADSET,
    SPEAKERPHONE,
    WEBCAM,
    ListedPortAudio,
    card,
)

from device.audio.devices import AudioDeviceError, choose_device
from device.config import Config, load
from device.errors import ConfigError
from device.hw.profiles import PROFILES

# The settings the README's profile table documents, written out by hand.
DOCUMENTED: dict[str, dict[str, Any]] = {
    "breadboard": {
        "button.pin": 17,
        "leds.kind": "rgb",
        "leds.pins": (5, 6, 13),
        "audio.input_device": None,
        "audio.output_device": None,
    },
    "respeaker-2mic": {
        "button.pin": 17,
        "leds.kind": "apa102",
        "leds.count": 3,
        "leds.spi_bus": 0,
        "leds.spi_device": 1,
        "leds.data_pin": None,
        "leds.clock_pin": None,
        "leds.power_pin": None,
        "leds.brightness": 0.25,
        "audio.input_device": "wm8960",
        "audio.output_device": "wm8960",
    },
    "respeaker-4mic": {
        "button.pin": 17,
        "leds.kind": "apa102",
        "leds.count": 12,
        "leds.spi_bus": 0,
        "leds.spi_device": 1,
        "leds.data_pin": None,
        "leds.clock_pin": None,
        "leds.power_pin": 5,
        "leds.brightness": 0.25,
        "audio.input_device": "seeed-4mic-voicecard",
        "audio.output_device": None,
    },
    "voice-bonnet": {
        "button.pin": 17,
        "leds.kind": "apa102",
        "leds.count": 3,
        "leds.data_pin": 5,
        "leds.clock_pin": 6,
        "leds.power_pin": None,
        "leds.brightness": 0.25,
        "audio.input_device": "wm8960",
        "audio.output_device": "wm8960",
    },
    "usb-speakerphone": {
        "button.pin": 17,
        "leds.kind": "none",
        "audio.input_device": "USB",
        "audio.output_device": "USB",
    },
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LIVE_APPLIANCE_* settings from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("LIVE_APPLIANCE_"):
            monkeypatch.delenv(name)


def load_file(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load(path)


def setting(config: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


def test_every_profile_is_documented() -> None:
    assert set(PROFILES) == set(DOCUMENTED)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_a_profile_resolves_to_its_documented_settings(tmp_path: Path, name: str) -> None:
    config = load_file(tmp_path, f'[hardware]\nprofile = "{name}"\n')
    assert config.hardware.profile == name
    resolved = {dotted: setting(config, dotted) for dotted in DOCUMENTED[name]}
    assert resolved == DOCUMENTED[name]


def test_no_profile_is_the_breadboard(tmp_path: Path) -> None:
    config = load_file(tmp_path, "")
    assert config.hardware.profile == "breadboard"
    assert {d: setting(config, d) for d in DOCUMENTED["breadboard"]} == DOCUMENTED["breadboard"]


def test_the_file_overrides_a_preset_key_by_key(tmp_path: Path) -> None:
    config = load_file(
        tmp_path,
        '[hardware]\nprofile = "respeaker-4mic"\n'
        "[leds]\ncount = 6\nbrightness = 0.8\n"
        '[audio]\ninput_device = "USB Audio"\n'
        "[button]\npin = 27\n",
    )
    assert (config.leds.count, config.leds.brightness) == (6, 0.8)
    assert config.audio.input_device == "USB Audio"
    assert config.button.pin == 27
    # What the file leaves alone still comes from the preset.
    assert (config.leds.kind, config.leds.power_pin, config.leds.spi_device) == ("apa102", 5, 1)


def test_the_environment_overrides_a_preset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LIVE_APPLIANCE_LEDS_KIND", "none")
    monkeypatch.setenv("LIVE_APPLIANCE_AUDIO_OUTPUT_DEVICE", "Headphones")
    config = load_file(tmp_path, '[hardware]\nprofile = "voice-bonnet"\n')
    assert config.leds.kind == "none"
    assert config.audio.output_device == "Headphones"
    assert config.audio.input_device == "wm8960"


def test_an_unknown_profile_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_file(tmp_path, '[hardware]\nprofile = "respeaker-6mic"\n')
    message = str(caught.value)
    assert "[hardware] profile" in message and "respeaker-6mic" in message
    assert all(repr(name) in message for name in PROFILES)


#: A USB card's device as PortAudio names it: "<card>: <PCM> (hw:C,D)", where the kernel's
#: PCM name, "USB Audio" (snd-usb-audio), loses the words the card's name already has
#: (pa_linux_alsa.c, SkipCardDetailsInName; "-" when nothing is left).
USB_CARDS = [
    pytest.param(("Jabra SPEAK 410 USB: Audio (hw:2,0)", 1, 2, 48000), id="jabra-speak-410"),
    pytest.param(("USB PnP Sound Device: Audio (hw:2,0)", 1, 2, 48000), id="pnp-headset"),
    pytest.param(("USB Audio Device: - (hw:2,0)", 1, 2, 48000), id="c-media-dongle"),
    pytest.param(("Anker PowerConf: USB Audio (hw:2,0)", 1, 2, 48000), id="anker-powerconf"),
]


@pytest.mark.parametrize("usb_card", USB_CARDS)
def test_the_usb_speakerphone_profile_finds_the_speakerphone(
    tmp_path: Path, usb_card: tuple[str, int, int, int]
) -> None:
    """`[hardware] profile = "usb-speakerphone"` on a Pi 4 with a Jabra Speak 410: the box
    said "no input device matches 'USB Audio'" and never listened (PortAudio names it
    "Jabra SPEAK 410 USB: Audio")."""
    path = tmp_path / "config.toml"
    path.write_text('[hardware]\nprofile = "usb-speakerphone"\n', encoding="utf-8")
    audio = load(path).audio
    pa: Any = ListedPortAudio(HEADPHONES, HDMI, usb_card, ALSA_DEFAULT)
    assert choose_device(pa, audio.input_device, "input").name == usb_card[0]
    assert choose_device(pa, audio.output_device, "output").name == usb_card[0]


def test_the_usb_speakerphone_profile_passes_over_a_webcams_microphone(tmp_path: Path) -> None:
    """A Jabra Speak and a USB webcam on the same Pi: "USB" is in both names, and the box
    said "'USB' matches several input devices" and never listened. The speakerphone, which
    plays too, is the microphone; the webcam's records only."""
    path = tmp_path / "config.toml"
    path.write_text('[hardware]\nprofile = "usb-speakerphone"\n', encoding="utf-8")
    audio = load(path).audio
    pa: Any = ListedPortAudio(HEADPHONES, HDMI, card(WEBCAM, 2), card(SPEAKERPHONE, 3),
                              ALSA_DEFAULT)  # fmt: skip
    assert "Jabra" in choose_device(pa, audio.input_device, "input").name
    assert "Jabra" in choose_device(pa, audio.output_device, "output").name
    twins: Any = ListedPortAudio(HEADPHONES, card(HEADSET, 2), card(HEADSET, 3), ALSA_DEFAULT)
    with pytest.raises(AudioDeviceError, match="matches several input devices"):
        choose_device(twins, audio.input_device, "input")  # two alike: the owner names one
