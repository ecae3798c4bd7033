"""APA102 ("DotStar") pixels: the wire format, and SPI or bit-banged GPIO transport.

The voice HATs (ReSpeaker 2-Mic and 4-Mic, Adafruit Voice Bonnet) carry a short
chain of these pixels. One update is a start frame of 32 zero bits, one 32-bit
frame per pixel (0b111 and a 5-bit global brightness, then blue, green, red),
and trailing zero bits that clock the last pixels' data into place: every
pixel passes the data on half a clock late, so a chain of n pixels needs n/2
more clock edges (cpldcpu, "Understanding the APA102 superLED"). Those are
zeros, not the datasheet's ones: ones start a frame, so a chain longer than
configured would light its first surplus pixel white, and the SK9822 clones
sold as DotStars only latch a new colour after 32 zero bits, which we send first.

No gamma correction: every driver shows a level as a duty cycle (gpiozero's PWM
LEDs too), so a pattern looks the same on a GPIO LED and on a pixel; the shape
of a fade belongs to the pattern data. Brightness uses the 5-bit global field,
which keeps all 8 bits of each colour for the pattern's levels.

spidev and gpiozero are imported only when pixels are opened.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from typing import TYPE_CHECKING, Protocol

from device.errors import LedsUnavailable
from device.hw.led_patterns import Frame, dark
from device.hw.leds import RETRY_S

if TYPE_CHECKING:
    from gpiozero import DigitalOutputDevice

    from device.config import LedsConfig

logger = logging.getLogger(__name__)

#: Seeed's APA102 driver for its HATs runs the bus at 8 MHz (respeaker/pixel_ring apa102.py).
SPI_HZ = 8_000_000
#: APA102 clocks data in on the rising edge with the clock idling low: SPI mode 0.
SPI_MODE = 0
MAX_BRIGHTNESS = 31
START_FRAME = bytes(4)
#: 32 zero bits after the pixels: what an SK9822 needs to show the new colours.
LATCH_FRAME = bytes(4)
CONFIG_TXT = "/boot/firmware/config.txt"


def brightness_field(brightness: float) -> int:
    """The 5-bit global brightness for 0..1; any brightness above zero stays visible."""
    if not 0.0 <= brightness <= 1.0:
        raise ValueError(f"brightness must be within 0..1, got {brightness}")
    return 0 if brightness == 0.0 else max(1, round(brightness * MAX_BRIGHTNESS))


def encode(frame: Frame, brightness: int = MAX_BRIGHTNESS) -> bytes:
    """The bytes of one update of len(frame) pixels at a 5-bit global brightness."""
    if not 0 <= brightness <= MAX_BRIGHTNESS:
        raise ValueError(f"APA102 brightness is 0..{MAX_BRIGHTNESS}, got {brightness}")
    head = 0b1110_0000 | brightness
    pixels = bytearray(START_FRAME)
    for r, g, b in frame:
        pixels += bytes((head, _byte(b), _byte(g), _byte(r)))
    # n/2 extra clock edges, rounded up to whole bytes.
    return bytes(pixels + LATCH_FRAME + bytes(math.ceil(len(frame) / 16)))


def _byte(level: float) -> int:
    return round(min(max(level, 0.0), 1.0) * 255)


class Transport(Protocol):
    """Whatever carries the bytes to the chain."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class SpiTransport:
    """The pixels on a hardware SPI bus (MOSI to data in, SCLK to clock in)."""

    def __init__(self, bus: int, device: int, *, speed_hz: int = SPI_HZ) -> None:
        path = f"/dev/spidev{bus}.{device}"
        try:
            import spidev
        except ImportError:
            raise LedsUnavailable(
                "APA102 pixels on SPI need the spidev module: on Raspberry Pi OS "
                "'sudo apt install python3-spidev', elsewhere 'pip install spidev'"
            ) from None
        self._spi = spidev.SpiDev()
        try:
            self._spi.open(bus, device)
        except FileNotFoundError:
            raise LedsUnavailable(
                f"no SPI device {path} (SPI bus {bus}, chip select {device}): "
                f"add dtparam=spi=on to {CONFIG_TXT} and reboot"
            ) from None
        except PermissionError:
            raise LedsUnavailable(
                f"no permission to open {path}: run the service in the 'spi' group"
            ) from None
        try:
            self._spi.max_speed_hz = speed_hz
            self._spi.mode = SPI_MODE
        except BaseException:
            # py-spidev keeps a reference to each SpiDev it makes: one left open is
            # never collected, and its descriptor stays open for the process's life.
            self._spi.close()
            raise

    def write(self, data: bytes) -> None:
        # writebytes2 takes any buffer and splits it at the kernel's spidev bufsiz.
        self._spi.writebytes2(data)

    def close(self) -> None:
        self._spi.close()


class GpioTransport:
    """The pixels on two plain GPIO pins, clocked out bit by bit, most significant first.

    For boards that wire the pixels away from the SPI pins (the Voice Bonnet's
    DotStars are on GPIO 5 and 6). Slower than SPI: a few pixels take a few hundred
    pin writes per frame, 0.85 ms of Python here and several on a Pi, 25 frames a
    second while the box speaks. A thread of its own clocks them out, so that the
    event loop (the animator's caller) never waits for them; frames keep their
    order, and when more than FRAMES_WAITING wait (the pins slower than the
    animation) the oldest go: the newest is what the state shows.
    """

    FRAMES_WAITING = 4
    #: A close waits this long for the frame being clocked out and the last one (which
    #: turns the pixels off); a writer still busy then keeps the pins (to the process's
    #: exit) rather than writing to closed ones.
    CLOSE_WAIT_S = 2.0

    def __init__(self, data_pin: int, clock_pin: int) -> None:
        from gpiozero import DigitalOutputDevice

        self._data = DigitalOutputDevice(data_pin)
        try:
            self._clock = DigitalOutputDevice(clock_pin)
        except Exception:
            self._data.close()
            raise
        self._frames: collections.deque[bytes] = collections.deque(maxlen=self.FRAMES_WAITING)
        self._changed = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._clock_out_frames, name="pixels", daemon=True)
        self._writer.start()

    def write(self, data: bytes) -> None:
        """Hand one frame to the pins' thread; returns at once."""
        with self._changed:
            self._frames.append(data)
            self._changed.notify()

    def _clock_out_frames(self) -> None:
        """Clock out each frame handed on; one the pins failed is tried again RETRY_S later
        (unless a newer one came meanwhile), as the animator tries a driver that raised:
        the frame that failed may be the state the box is in now (idle, after listening),
        and no other comes while it lasts. Said once, and again once they work."""
        failing = False
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._frames or self._closing)
                if not self._frames:
                    return  # closing, and every frame is out
                data = self._frames.popleft()
            try:
                self._clock_out(data)
            except Exception as exc:
                if not failing:
                    logger.error(
                        "the pixels' pins failed: %s; tried again every %g s", exc, RETRY_S
                    )
                failing = True
                with self._changed:
                    if self._closing:
                        return  # the close's frame failed: the pins are let go as they are
                    if not self._frames:
                        self._frames.append(data)
                    self._changed.wait_for(lambda: self._closing, RETRY_S)
                continue
            if failing:
                failing = False
                logger.info("the pixels' pins work again")

    def _clock_out(self, data: bytes) -> None:
        level = self._data.value
        for byte in data:
            for shift in range(7, -1, -1):
                bit = (byte >> shift) & 1
                if bit != level:
                    self._data.value = level = bit
                self._clock.on()
                self._clock.off()

    def close(self) -> None:
        """Clock out the last frame only (it turns the pixels off), then release the pins."""
        with self._changed:
            while len(self._frames) > 1:
                self._frames.popleft()
            self._closing = True
            self._changed.notify()
        self._writer.join(self.CLOSE_WAIT_S)
        if self._writer.is_alive():
            wait_s = self.CLOSE_WAIT_S
            logger.warning("the pixels took over %g s to turn off; left as they are", wait_s)
            return
        self._data.close()
        self._clock.close()


class Apa102:
    """A chain of `count` APA102 pixels; `show()` sends one colour per pixel."""

    def __init__(
        self,
        count: int,
        transport: Transport,
        *,
        brightness: float = 1.0,
        power: DigitalOutputDevice | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"an APA102 chain has at least one pixel, got {count}")
        self.pixels = count
        self._transport = transport
        self._brightness = brightness_field(brightness)
        self._power = power
        # Unknown until the first frame: pixels may power up showing anything.
        self._lit = True

    def show(self, frame: Frame) -> None:
        if len(frame) != self.pixels:
            raise ValueError(f"a frame for {self.pixels} pixels, got {len(frame)} colours")
        self._transport.write(encode(frame, self._brightness))
        self._lit = any(any(colour) for colour in frame)

    def close(self) -> None:
        """Turn every pixel off (they keep their colour otherwise), cut power, release."""
        try:
            if self._lit:
                self.show(dark(self.pixels))
        finally:
            if self._power is not None:
                self._power.off()
                self._power.close()
            self._transport.close()


def open_apa102(cfg: LedsConfig) -> Apa102:
    """The pixels `[leds]` describes: GPIO pins when data_pin/clock_pin are set, else SPI."""
    transport: Transport
    if cfg.data_pin is not None and cfg.clock_pin is not None:
        transport = GpioTransport(cfg.data_pin, cfg.clock_pin)
    else:
        transport = SpiTransport(cfg.spi_bus, cfg.spi_device)
    power = None
    try:
        if cfg.power_pin is not None:
            from gpiozero import DigitalOutputDevice

            power = DigitalOutputDevice(cfg.power_pin, initial_value=True)
        return Apa102(cfg.count, transport, brightness=cfg.brightness, power=power)
    except Exception:
        if power is not None:
            power.close()
        transport.close()
        raise
