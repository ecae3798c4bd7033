"""Presets for the boards people build this box from: pins, LED driver, audio devices.

Pure data, read by the configuration loader under the owner's own settings: a
file that says `[hardware] profile = "respeaker-2mic"` gets these values, and
any key it sets itself wins. Nothing here opens hardware.

Audio devices are substrings of PortAudio's names, which for ALSA hardware read
"<card name>: <pcm name> (hw:N,M)" (PortAudio's pa_linux_alsa.c). Every driver
for a WM8960 codec names its PCM "...wm8960-hifi wm8960-hifi-0" (the codec's
DAI), so "wm8960" finds the ReSpeaker 2-Mic v1 and the Voice Bonnet whichever of
Seeed's overlay, the in-kernel wm8960-soundcard overlay or the seeed-voicecard
DKMS driver is installed, and however the cards are numbered. USB sound cards
name their PCM "USB Audio" (the kernel's snd-usb-audio), but PortAudio leaves out the
words of it that the card's name already has (SkipCardDetailsInName): a Jabra Speak
410 is "Jabra SPEAK 410 USB: Audio (hw:1,0)", a C-Media dongle "USB Audio Device: -
(hw:1,0)". "USB" stays in every one, in the card's name or the PCM's.
"""

from __future__ import annotations

from typing import Any

#: Pixels a hand's length from a face glare at full power; the vendors' own demos
#: run them at about a fifth (Adafruit's DotStar examples: brightness=0.2).
HAT_PIXEL_BRIGHTNESS = 0.25

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Button from GPIO 17 to ground, an RGB LED on 5/6/13: the defaults as they are.
    "breadboard": {},
    # Seeed ReSpeaker 2-Mics Pi HAT v1 (WM8960). Seeed wiki: the user button is on
    # GPIO 17; 3 APA102 pixels on SPI0, which Seeed's own driver opens as bus 0,
    # chip select 1 (respeaker/mic_hat, respeaker/pixel_ring apa102.py: bus=0,
    # device=1). No power-enable pin. The v2.0 board (TLV320AIC3104 codec,
    # overlay respeaker-2mic-v2_0) names its card "seeed2micvoicec": set
    # [audio] input_device/output_device to that.
    "respeaker-2mic": {
        "button": {"pin": 17},
        "leds": {
            "kind": "apa102",
            "count": 3,
            "spi_bus": 0,
            "spi_device": 1,
            "brightness": HAT_PIXEL_BRIGHTNESS,
        },
        "audio": {"input_device": "wm8960", "output_device": "wm8960"},
    },
    # Seeed ReSpeaker 4-Mic Array for Raspberry Pi (AC108, capture only): 12 APA102
    # pixels on SPI0 CE1, powered only while GPIO 5 is high (respeaker/4mics_hat
    # pixels.py: APA102(num_led=12) and LED(5).on()). No on-board button (wire one
    # to GPIO 17) and no speaker output (the Pi's jack, HDMI or USB plays). Its
    # driver is HinTak/seeed-voicecard, card "seeed-4mic-voicecard".
    "respeaker-4mic": {
        "leds": {
            "kind": "apa102",
            "count": 12,
            "spi_bus": 0,
            "spi_device": 1,
            "power_pin": 5,
            "brightness": HAT_PIXEL_BRIGHTNESS,
        },
        "audio": {"input_device": "seeed-4mic-voicecard"},
    },
    # Adafruit Voice Bonnet (WM8960): 3 DotStar pixels on plain GPIO, data 5 and
    # clock 6, and the button on GPIO 17 (Adafruit's guide: DotStar(board.D6,
    # board.D5, 3), DigitalInOut(board.D17)). Not on the SPI pins: bit-banged.
    "voice-bonnet": {
        "button": {"pin": 17},
        "leds": {
            "kind": "apa102",
            "count": 3,
            "data_pin": 5,
            "clock_pin": 6,
            "brightness": HAT_PIXEL_BRIGHTNESS,
        },
        "audio": {"input_device": "wm8960", "output_device": "wm8960"},
    },
    # A USB speakerphone (echo cancelling) and a button on GPIO 17: no LEDs, the
    # earcons tell the states apart.
    "usb-speakerphone": {
        "leds": {"kind": "none"},
        "audio": {"input_device": "USB", "output_device": "USB"},
    },
}

#: The pins a board's sound takes (its codec's I2S lines, and the I2C bus it is set up
#: over): nothing else may claim them, or the sound stops. USB sound takes none.
I2S_SOUND = {2: "I2C SDA", 3: "I2C SCL", 18: "I2S BCLK", 19: "I2S LRCLK", 20: "I2S DIN",
             21: "I2S DOUT"}  # fmt: skip
SOUND_PINS: dict[str, dict[int, str]] = {
    "respeaker-2mic": I2S_SOUND,
    "respeaker-4mic": I2S_SOUND,
    "voice-bonnet": I2S_SOUND,
}
#: The pins of APA102 pixels on SPI, by bus: MOSI (data), SCLK (clock) and the chip
#: selects by device number. Buses 2-6 (Pi 4 overlays) are left to the owner.
SPI_PINS: dict[int, tuple[int, int, tuple[int, ...]]] = {
    0: (10, 11, (8, 7)),
    1: (20, 21, (18, 17, 16)),
}
