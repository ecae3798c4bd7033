"""Fake parts for driving the real Appliance in-process, in milliseconds.

`FakeParts` overrides `device.parts.Parts` (the pattern wyoming-satellite's tests use):
the state machine, the outbox, the microphone feed, the audio keeper, the timers
and the appliance's glue all run for real; only the edges are fakes that record
what reached them (the outbox's items as the link would send them, the sound the
speaker was given, the LED states, the messages to systemd) and let a test make
the outside world happen (a chunk from the microphone, the service's reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import select
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from helpers import until

from device import workers
from device.appliance import Appliance
from device.audio.alsa import AlsaError
from device.audio.capture import Capture
from device.config import Config, LiveConfig, Secret
from device.hw.led_patterns import Frame
from device.live.session import LiveLink
from device.outbox import Item, Outbox
from device.parts import Parts
from device.persist import StateFile
from device.service import Notifier
from device.states import ConnectFailed, Event, Heartbeat, LinkEvent, ReplyDropped
from device.tools import Device, Registry

CHUNK = b"\x10\x27" * 640  # 40 ms at 16 kHz, loud enough (-10 dBFS) to be speech
QUIET = bytes(1280)  # 40 ms of silence


class FakeMicrophone:
    """Capture's interface; the test says what the microphone records (`record`)."""

    def __init__(self, on_chunk: Callable[[bytes, float], None], preroll: int) -> None:
        self.on_chunk = on_chunk
        self.delivering = asyncio.Event()
        self.overflows = 0
        self.silent = False  # Capture's: a turn of digital silence (muted)
        self.opened = False
        self.alive = True  # False: the device vanished (see vanish())
        self.on_change: Callable[[], None] | None = None  # the audio keeper's
        self.busy = False
        self.forwarding = False
        self.finished_at: float | None = None  # finish(): the release's time
        self.closely = False  # listen_closely(): the box speaks hands-free
        self.muted = False  # mute(): the box speaks with its microphone gated
        self.since: float | None = None  # forward(): the press's edge
        self._ring: deque[tuple[bytes, float]] = deque(maxlen=preroll)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self.alive:
            raise OSError("no such device")
        self.opened, self._loop = True, loop
        if loop is not None:
            loop.call_soon_threadsafe(self.delivering.set)

    def close_stream(self) -> None:
        self.opened = False

    def stop(self) -> None:
        self.opened = False

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        return None if self.opened and self.alive else "the fake went"

    def vanish(self) -> None:
        """The device is unplugged: reads fail, and the reader tells the keeper."""
        self.alive = False
        if self.on_change is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_change)

    def mute(self, muted: bool) -> None:
        self.muted = muted

    def forward(
        self,
        gate: object = None,
        *,
        since: float | None = None,
        preroll: bool = True,
        until: float | None = None,  # a turn over already: the real Capture's concern
    ) -> list[tuple[bytes, float]]:
        self.forwarding, self.since = True, since
        held, self._ring = list(self._ring), deque(maxlen=self._ring.maxlen)
        return held if preroll else []

    def listen_closely(self, closely: bool) -> None:
        self.closely = closely

    def finish(self, until: float) -> None:
        self.finished_at = until

    def hold(self) -> None:
        self.forwarding = False

    def record(self, pcm: bytes = CHUNK, t: float | None = None) -> None:
        """One chunk recorded (by `t`, default now), handed over as PortAudio's callback does."""
        t = asyncio.get_running_loop().time() if t is None else t
        if self.forwarding:
            self.on_chunk(pcm, t)
        else:
            self._ring.append((pcm, t))


class DeviceFreeCapture(Capture):
    """The real Capture (its ring, its pre-roll, its routing) without a device: the test
    says what the card recorded and when (`record`), read at once as its reader would."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._call(self.delivering.set)

    def close_stream(self) -> None:
        self._loop = None

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        return None

    def record(self, pcm: bytes = CHUNK, t: float | None = None) -> None:
        """One chunk whose last sample was recorded at `t` (default now)."""
        self._deliver(pcm, time.monotonic() if t is None else t)


class FakeSpeaker:
    """Playback's interface; `heard` is what reached the speaker, `play()` plays it out."""

    def __init__(self) -> None:
        self.volume = 1.0
        self.underflows = 0
        self.starved = 0
        self.output_latency = 0.02
        self.buffered = bytearray()
        self.heard = bytearray()
        self.cleared = 0
        self.opened = False
        self.alive = True
        self.on_change: Callable[[], None] | None = None  # the audio keeper's
        self.busy = False
        self._drained = asyncio.Event()
        self._drained.set()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self.alive:
            raise OSError("no such device")
        self.opened = True

    def close_stream(self) -> None:
        self.opened = False

    def stop(self) -> None:
        self.opened = False
        self.clear()

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        return None if self.opened and self.alive else "the fake went"

    def feed(self, pcm: bytes, last: bool = False) -> None:
        if pcm and self.opened:  # as the real one: a closed speaker drops it
            self.buffered += pcm
            self._drained.clear()

    def clear(self) -> int:
        dropped = len(self.buffered)
        self.buffered.clear()
        self.cleared += 1
        self._drained.set()
        return dropped

    def play(self) -> bytes:
        """Everything buffered reaches the speaker now."""
        played = bytes(self.buffered)
        self.heard += played
        self.buffered.clear()
        self._drained.set()
        return played

    @property
    def drained(self) -> asyncio.Event:
        return self._drained

    async def wait_drained(self) -> None:
        while True:  # as the real one: a clear() that new audio followed at once is no drain
            await self._drained.wait()
            if self._drained.is_set():
                return

    def has_room(self) -> bool:
        return True

    @property
    def buffered_ms(self) -> float:
        return len(self.buffered) / 48  # 24 kHz mono s16le: 48 bytes a millisecond

    async def wait_for_room(self) -> None:
        """The fake link reads nothing: it never waits for room."""


class FakeCamera:
    """CameraFeed's interface; `hang` makes switching it off never finish."""

    def __init__(self, on_frame: Callable[[bytes, float], None]) -> None:
        self.on_frame = on_frame
        self.running = False
        self.framing = False
        self.failure: str | None = None
        self.hang: asyncio.Event | None = None

    def start_frames(self) -> None:
        self.running = self.framing = True

    def stop_frames(self) -> None:
        self.framing = False

    async def aclose(self) -> None:
        if self.hang is not None:
            await self.hang.wait()
        self.running = self.framing = False

    async def shutdown(self) -> None:
        await self.aclose()


class FakeLink:
    """LiveLink's interface; `deliver` plays the service's side of the session."""

    def __init__(self, outbox: Outbox, on_event: Callable[[Event], None]) -> None:
        self.outbox = outbox
        self.on_event = on_event
        self.opened: list[int] = []  # the session numbers it was asked to open
        self.session: int | None = None
        self.session_id: str | None = None
        self.connections = 0
        self.closed = 0
        self.turns_dropped = 0  # drop_turn() calls: what waited of a turn was dropped
        self.reply_whole = True  # what drop_whole_reply finds: the service sent all of it

    @property
    def is_open(self) -> bool:
        return self.session is not None

    prepared = True

    async def prepare(self) -> None:
        pass

    def open(self, session: int) -> None:
        if self.session is None:
            self.session = session
            self.opened.append(session)
            self.session_id = f"session-{session}"

    async def close(self) -> None:
        if self.session is not None:
            self.closed += 1
        self.session = self.session_id = None

    def supersede_reply(self) -> None:
        """The wire's own bookkeeping (what still comes of a reply is stale): none here."""

    def drop_turn(self) -> None:
        self.turns_dropped += 1

    def hurry(self) -> None:
        """A reconnect waiting out its backoff would try now: there is none here."""

    def drop_whole_reply(self) -> None:
        """As the link does when the service had sent all of the reply (`reply_whole`)."""
        if self.reply_whole and self.session is not None:
            self.deliver(ReplyDropped)

    def sent(self) -> list[Item]:
        """Everything waiting in the outbox, in the order the sender would send it."""
        return list(iter(self.outbox.get_nowait, None))

    def deliver(self, kind: type[LinkEvent], session: int | None = None, **fields: Any) -> None:
        """An event of the session open now (or of `session`, for a stale one)."""
        number = self.session if session is None else session
        assert number is not None, "no session is open"
        self.on_event(kind(session=number, **fields))


class FakeActions:
    """The appliance's side of the tools, recording what the tools asked of it."""

    def __init__(self, level: float = 0.7) -> None:
        self.level = level
        self.levels: list[float] = []
        self.hangups = 0

    def volume(self) -> float:
        return self.level

    def set_volume(self, level: float) -> None:
        self.levels.append(level)
        self.level = level

    def end_conversation(self) -> None:
        self.hangups += 1


#: How long a gated tool, or a test waiting on one, waits at the most.
GATE_WAIT_S = 5.0


class Gate:
    """A tool body that blocks until the test opens it, telling the test where it is."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()
        self.finished = threading.Event()
        self._entered = threading.Semaphore(0)  # one release per call begun

    def run(self) -> dict[str, Any]:
        self.started.set()
        self._entered.release()
        self.opened.wait(GATE_WAIT_S)
        self.finished.set()
        return {"done": True}

    async def entered(self, count: int = 1) -> None:
        """Wait until `count` more calls are in the body (in a thread: the loop runs on)."""
        for _ in range(count):
            assert await asyncio.to_thread(self._entered.acquire, True, GATE_WAIT_S)


def gated_tools(gate: Gate) -> Registry:
    """A registry with a slow tool, a quick one and a broken one, as an owner might add."""
    registry = Registry()

    @registry.tool
    def slow(device: Device) -> dict[str, Any]:
        """Waits for the test."""
        return gate.run()

    @registry.tool
    def quick(device: Device) -> dict[str, Any]:
        """Answers at once."""
        return {"done": True}

    @registry.tool
    def broken(device: Device) -> dict[str, Any]:
        """Always fails."""
        raise RuntimeError("sensor unplugged")

    return registry


class RecordingLeds:
    """A one-pixel LED driver that keeps every frame shown."""

    pixels = 1

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed = False

    def show(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.closed = True


class FakeButton:
    """ButtonInput's interface; `fails` makes opening the pin raise, as with no GPIO."""

    def __init__(self, on_edge: Callable[[str, float], None]) -> None:
        self.on_edge = on_edge
        self.fails: Exception | None = None
        self.started = False
        self.is_pressed = False
        self.held_since_open = False

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.fails is not None:
            raise self.fails
        self.started = True

    def stop(self) -> None:
        self.started = False


class FakeControl:
    """ControlServer's interface: `ask` is what `live-appliance ctl` would send."""

    def __init__(self, handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        self.handler = handler
        self.fails: Exception | None = None
        self.serving = False

    async def start(self) -> None:
        if self.fails is not None:
            raise self.fails
        self.serving = True

    async def aclose(self) -> None:
        self.serving = False

    async def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        return await self.handler({"cmd": cmd, **fields})


class RecordingNotifier(Notifier):
    """The systemd notifier, keeping what it would send instead of sending it."""

    def __init__(self, watchdog_s: float) -> None:
        super().__init__(environ={})
        self.watchdog_s = watchdog_s
        self.address = "recorded"
        self.messages: list[str] = []
        self.sent = asyncio.Event()

    def send(self, *fields: str) -> None:
        self.messages.extend(fields)
        self.sent.set()

    def count(self, message: str) -> int:
        return self.messages.count(message)


@dataclass
class FakeParts(Parts):
    """The appliance's parts as fakes; each one is kept for the test to drive and inspect."""

    cfg: Config
    workdir: Path
    #: systemd's WatchdogSec; long by default: tests post their own heartbeats (`settle`).
    watchdog_s: float = 3600.0
    made: dict[str, Any] = field(default_factory=dict)

    def microphone(self, on_chunk, on_overflow, preroll, on_pause):  # type: ignore[no-untyped-def]
        return self._keep("mic", FakeMicrophone(on_chunk, preroll))

    def speaker(self):  # type: ignore[no-untyped-def]
        return self._keep("speaker", FakeSpeaker())

    def camera(self, on_frame):  # type: ignore[no-untyped-def]
        return self._keep("camera", FakeCamera(on_frame))

    def leds(self):  # type: ignore[no-untyped-def]
        return self._keep("leds", RecordingLeds())

    def button(self, on_edge):  # type: ignore[no-untyped-def]
        return self._keep("button", FakeButton(on_edge))

    def link(self, outbox, on_event, on_sent, tools, speaker):  # type: ignore[no-untyped-def]
        return self._keep("link", FakeLink(outbox, on_event))

    def control(self, handler):  # type: ignore[no-untyped-def]
        return self._keep("control", FakeControl(handler))

    def notifier(self):  # type: ignore[no-untyped-def]
        return self._keep("notifier", RecordingNotifier(self.watchdog_s))

    def state_file(self) -> StateFile:
        return StateFile(self.workdir / "state.json")

    def _keep(self, name: str, part: Any) -> Any:
        self.made[name] = part
        return part


def config(**sections: dict[str, Any]) -> Config:
    """The default configuration with some settings changed, e.g. button={"mode": "toggle"}."""
    cfg = Config()
    for name, values in sections.items():
        cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **values)})
    return cfg


@dataclass
class Box:
    """A running appliance and its fake parts."""

    appliance: Appliance
    parts: FakeParts

    @property
    def mic(self) -> FakeMicrophone:
        return self.parts.made["mic"]

    @property
    def speaker(self) -> FakeSpeaker:
        return self.parts.made["speaker"]

    @property
    def camera(self) -> FakeCamera:
        return self.parts.made["camera"]

    @property
    def link(self) -> FakeLink:
        return self.parts.made["link"]

    @property
    def control(self) -> FakeControl:
        return self.parts.made["control"]

    @property
    def notifier(self) -> RecordingNotifier:
        return self.parts.made["notifier"]

    @property
    def button(self) -> FakeButton:
        return self.parts.made["button"]

    @property
    def state(self) -> str:
        return str(self.appliance.machine.state)

    def states(self) -> list[str]:
        """The states the box went through, in order, as `ctl status` reports them."""
        return [entry["state"] for entry in self.appliance.status()["states"]]

    async def settle(self) -> None:
        """Wait until every event posted so far has been handled, its actions performed:
        a heartbeat goes through the same queue, and is answered after them."""
        fed = self.notifier.count("WATCHDOG=1")
        self.appliance.post(Heartbeat())
        async with asyncio.timeout(5):
            while self.notifier.count("WATCHDOG=1") == fed:
                self.notifier.sent.clear()
                await self.notifier.sent.wait()

    async def ctl(self, cmd: str, **fields: Any) -> dict[str, Any]:
        reply = await self.control.ask(cmd, **fields)
        await self.settle()
        return reply


@dataclass
class RealCaptureParts(FakeParts):
    """Fake parts but the microphone: the real Capture, fed by the test (`DeviceFreeCapture`)."""

    def microphone(self, on_chunk, on_overflow, preroll, on_pause):  # type: ignore[no-untyped-def]
        capture = DeviceFreeCapture(
            on_chunk, chunk_ms=self.cfg.audio.chunk_ms, preroll=preroll, on_pause=on_pause
        )
        return self._keep("mic", capture)


@contextlib.asynccontextmanager
async def running(
    workdir: Path, cfg: Config | None = None, *, watchdog_s: float = 3600.0,
    prepare: Callable[[FakeParts], None] | None = None,
    parts_class: type[FakeParts] = FakeParts,
) -> AsyncIterator[Box]:
    """The real Appliance on fake parts, from start-up (READY) to a clean stop."""
    parts = parts_class(cfg or config(), workdir, watchdog_s=watchdog_s)
    appliance = Appliance(parts.cfg, parts)
    if prepare is not None:
        prepare(parts)
    task = asyncio.create_task(appliance.run(), name="appliance")
    box = Box(appliance, parts)
    try:
        async with asyncio.timeout(5):
            while "READY=1" not in box.notifier.messages:
                if task.done():
                    await task  # its exception, if it failed at start
                    break
                await asyncio.sleep(0.001)
        yield box
    finally:
        appliance.stopping.set()
        async with asyncio.timeout(5):
            await task
        gc.unfreeze()  # the appliance froze the test process's objects at start-up


# The sound cards a Raspberry Pi lists, for the real Capture and Playback.
#
# PortAudio's ALSA names: "<card>: <device> (hw:C,D)" for each card's device, in card
# order, then the configuration's own devices (sysdefault, dmix, default...).
HEADPHONES = ("bcm2835 Headphones: - (hw:0,0)", 0, 8, 44100)
HDMI = ("vc4-hdmi-0: MAI PCM i2s-hifi-0 (hw:1,0)", 0, 2, 48000)
HEADSET = ("USB PnP Sound Device: Audio (hw:{card},0)", 1, 2, 48000)
SPEAKERPHONE = ("Jabra SPEAK 410 USB: Audio (hw:{card},0)", 1, 2, 48000)
WEBCAM = ("HD Webcam C270: USB Audio (hw:{card},0)", 1, 0, 48000)
RESPEAKER = ("seeed-2mic-voicecard: bcm2835-i2s-wm8960-hifi wm8960-hifi-0 (hw:{card},0)", 2, 2,
             48000)  # fmt: skip
#: ALSA's "default" on Raspberry Pi OS Lite: card 0 (the jack, or HDMI on a Pi 5), which
#: opens for playback only. On the Desktop it is PipeWire's, which the service's own user
#: cannot reach: it does not open, and PortAudio leaves it out.
ALSA_DEFAULT = ("default", 0, 128, 44100)


class ListedPortAudio:
    """PortAudio as it answers after listing `devices`: every format supported; the
    default device in each direction as PortAudio picks it (ALSA's "default" when it
    opens in that direction, else the first card's device that does)."""

    def __init__(self, *devices: tuple[str, int, int, int]) -> None:
        self.devices = devices
        self.terminated = False

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, index: int) -> dict[str, Any]:
        name, inputs, outputs, rate = self.devices[index]
        return {"index": index, "name": name, "maxInputChannels": inputs,
                "maxOutputChannels": outputs, "defaultSampleRate": float(rate)}  # fmt: skip

    def _default(self, key: str) -> dict[str, Any]:
        found = [self.get_device_info_by_index(i) for i in range(len(self.devices))]
        found = [d for d in found if d[key] > 0]
        named = [d for d in found if d["name"] == "default"]
        if not found:
            raise OSError("No Default Device Available")
        return (named or found)[0]

    def get_default_input_device_info(self) -> dict[str, Any]:
        return self._default("maxInputChannels")

    def get_default_output_device_info(self) -> dict[str, Any]:
        return self._default("maxOutputChannels")

    def is_format_supported(self, rate: int, **kwargs: int) -> bool:
        return True

    def terminate(self) -> None:
        self.terminated = True


def card(device: tuple[str, int, int, int], number: int) -> tuple[str, int, int, int]:
    name, inputs, outputs, rate = device
    return name.format(card=number), inputs, outputs, rate


class IdlePcm:
    """An ALSA capture device that opens, and has nothing to read."""

    opened: ClassVar[list[str]] = []

    def __init__(
        self, name: str, rate: int, channels: int, period_frames: int, buffer_frames: int
    ) -> None:
        IdlePcm.opened.append(name)
        self.name, self.rate, self.channels = name, rate, channels
        self.period_frames, self.buffer_frames = period_frames, buffer_frames

    def register(self, poller: select.poll) -> None:
        """Nothing to wait for: the reader wakes on its own timer."""

    def acknowledge(self, events: list[tuple[int, int]]) -> None:
        """Never called: nothing registered."""

    def start(self) -> None:
        """Nothing to start."""

    def read(self) -> tuple[bytes, int]:
        return b"", 0

    def close(self) -> None:
        """Nothing to close."""


class SilentOutput:
    """A PortAudio output stream that opens and is never written to; says which device."""

    opened: ClassVar[list[int]] = []

    def __init__(
        self, device: int, rate: int, channels: int, period_frames: int, latency_s: float
    ) -> None:
        SilentOutput.opened.append(device)
        self.frame_bytes, self.output_latency = 2 * channels, 0.01

    def close(self) -> None:
        """Nothing to close."""


class Cable:
    """A USB speakerphone on a loose cable: in or out, and what PortAudio, ALSA and the
    kernel then list."""

    def __init__(self) -> None:
        self.plugged = True
        self.plugs = 0  # how often it went in again: the kernel's card list changes

    def listing(self) -> ListedPortAudio:
        cards = [card(SPEAKERPHONE, 2)] if self.plugged else []
        return ListedPortAudio(HEADPHONES, HDMI, *cards, ALSA_DEFAULT)

    def hardware(self) -> object:
        return self.plugged, self.plugs


class CablePcm(IdlePcm):
    """The speakerphone's microphone: opens only while plugged in; reads fail once out."""

    cable = Cable()

    def __init__(self, *args: Any) -> None:
        if not self.cable.plugged:
            raise AlsaError(errno.ENODEV, "cannot open: No such device")
        super().__init__(*args)

    def read(self) -> tuple[bytes, int]:
        if not self.cable.plugged:
            raise AlsaError(errno.ENODEV, "read: No such device")
        return bytes(2 * self.period_frames), 0


# An internet outage behind a working Wi-Fi: the router's resolver does not answer, glibc
# asks again and again (5 s a try, 2 tries, each nameserver: 15-25 s) and the thread
# asking keeps waiting after the connect's timeout gave up.

#: The name whose lookups the silent resolver never answers.
DEAD = "live.dns-silent.test"


class SilentResolver:
    """socket.getaddrinfo with the resolver silent for DEAD: its lookups wait until
    `answer()`, then fail as glibc's do when it gives up; `waiting` holds one entry per
    lookup waiting now."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.waiting: list[str] = []
        self._answered = threading.Event()

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == DEAD:
            self.waiting.append(host)
            self._answered.wait()
            self.waiting.remove(host)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self.real(host, *args, **kwargs)

    def answer(self) -> None:
        """Every lookup waiting, and every later one, fails at once."""
        self._answered.set()


async def press_until_failed(link: LiveLink, events: list[Event], session: int) -> float:
    """A press with the internet down: how long until its error (the beep, the red LEDs)."""
    pressed = time.monotonic()
    link.open(session)
    try:
        await until(lambda: any(isinstance(e, ConnectFailed) for e in events), within=6)
    finally:
        await link.close()
    events.clear()
    return time.monotonic() - pressed


async def presses_in_an_outage(silent_resolver: list[str]) -> tuple[LiveLink, list[Event]]:
    """The box's own pool as the daemon runs it, and three presses with the internet down:
    each leaves four lookups waiting (a connect and its DNS check, tried twice)."""
    asyncio.get_running_loop().set_default_executor(workers.Workers())
    cfg = Config(
        live=LiveConfig(base_url=f"https://{DEAD}", connect_timeout_s=0.5),
        api_key=Secret("a-key"),
    )
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(5), events.append, lambda *_: None)
    for session in range(1, 4):
        await press_until_failed(link, events, session)
    assert silent_resolver, "no lookup waits: the outage is not one"
    return link, events
