"""Presets for the boards people build this box from: pins, LED driver, audio devices.

Pure data, read by the configuration loader under the owner's own settings: a
file that says `[hardware] profile = "respeaker-2mic"` gets these values, and
any key it sets itself wins. Nothing here opens hardware.
"""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Button from GPIO 17 to ground, an RGB LED on 5/6/13: the defaults as they are.
    "breadboard": {},
    # Seeed ReSpeaker 2-Mics Pi HAT: WM8960 codec, 3 APA102 pixels on SPI0 CE1, button on 17.
    "respeaker-2mic": {
        "button": {"pin": 17},
        "leds": {"kind": "apa102", "count": 3, "spi_bus": 0, "spi_device": 1},
        "audio": {"input_device": "seeed-2mic", "output_device": "seeed-2mic"},
    },
    # Seeed ReSpeaker 4-Mic Array: 12 APA102 pixels on SPI0 CE1, powered through GPIO 5.
    "respeaker-4mic": {
        "leds": {"kind": "apa102", "count": 12, "spi_bus": 0, "spi_device": 1, "power_pin": 5},
        "audio": {"input_device": "seeed-4mic"},
    },
    # Adafruit Voice Bonnet: WM8960 codec, 3 DotStar pixels on GPIO 5 (data) / 6 (clock).
    "voice-bonnet": {
        "button": {"pin": 17},
        "leds": {"kind": "apa102", "count": 3, "data_pin": 5, "clock_pin": 6},
        "audio": {"input_device": "seeed2micvoicec", "output_device": "seeed2micvoicec"},
    },
    # A USB speakerphone (echo cancelling) and a button: no LEDs, earcons show the states.
    "usb-speakerphone": {
        "leds": {"kind": "none"},
        "audio": {"input_device": "USB", "output_device": "USB"},
    },
}
