"""Wires the adapters to the state machine and owns every task until shutdown.

Events from the button, the control socket, the Live link, the audio keepers,
the speaker and the timers go into one queue; one task feeds them to
`states.step` and performs the actions it returns. Microphone chunks, camera
frames and reply audio take fast paths that do not go through the queue: the
microphone and the camera append to the outbox, the receive task appends to
the speaker's buffer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from typing import Any

from device import logs
from device.audio.capture import Capture
from device.audio.earcons import earcon
from device.audio.keeper import AudioKeeper
from device.audio.playback import Playback
from device.config import Config
from device.control import ControlServer
from device.errors import LedsUnavailable
from device.hw.button import ButtonInput
from device.hw.camera import CameraFeed
from device.hw.leds import LedAnimator, LedDriver, NullLeds, open_leds
from device.live.session import LiveLink
from device.mic_feed import MicFeed
from device.outbox import Item, Outbox
from device.persist import StateFile, state_dir
from device.service import Notifier
from device.states import (
    Action,
    EndConversation,
    Event,
    LongPress,
    Machine,
    Mode,
    PlaybackDrained,
    Pressed,
    Released,
    State,
    TextTurn,
    Timeout,
    Timer,
    step,
)
from device.tasks import stop_task
from device.tools import ToolBox
from device.turns import TurnLog

log = logging.getLogger("device.appliance")

MIC_START_TIMEOUT_S = 5.0


class Appliance:
    """The running device: one instance per daemon process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.machine = Machine(mode=Mode(cfg.button.mode))
        self.outbox = Outbox(cfg.audio.hold_s)
        self.turns = TurnLog()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.state_file = StateFile(state_dir(cfg.service) / "state.json")
        self.mic_feed = MicFeed(cfg.audio, self.outbox)
        self.mic = Capture(
            self._on_mic_chunk,
            device=cfg.audio.input_device,
            chunk_ms=cfg.audio.chunk_ms,
            on_overflow=self.mic_feed.overflowed,
            preroll=self.mic_feed.preroll_chunks,
        )
        self.speaker = Playback(device=cfg.audio.output_device, period_ms=cfg.audio.period_ms)
        self.speaker.volume = _saved_volume(self.state_file, cfg.audio.volume)
        self.audio = AudioKeeper(
            {"speaker": self.speaker, "microphone": self.mic}, self.post, cfg.audio.reopen_s
        )
        self.camera = CameraFeed(cfg.camera, self._on_frame)
        tools = ToolBox(cfg.tools, self) if cfg.tools.enabled else None
        self.link = LiveLink(
            cfg, self.outbox, self.post, self._on_reply_audio, self._on_sent, tools=tools
        )
        self.leds = LedAnimator(_open_leds(cfg))
        self.button = ButtonInput(
            cfg.button.pin,
            self._on_button,
            bounce_time=cfg.button.bounce_ms / 1000 or None,
            hold_time=cfg.button.long_press_s or None,
        )
        self.control = ControlServer(cfg.control.socket, self._on_control, mode=cfg.control.mode)
        self.notifier = Notifier()
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.failed = False  # one of our tasks died: exit non-zero
        self._drain_watch: asyncio.Task[None] | None = None

    # -- inputs, all on the event loop -------------------------------------------------

    def post(self, event: Event) -> None:
        self._events.put_nowait(event)

    def _on_button(self, name: str, _t: float) -> None:
        event = {"pressed": Pressed(), "released": Released(), "long_press": LongPress()}[name]
        self.post(event)

    async def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        match request.get("cmd"):
            case "press":
                self.post(Pressed())
            case "release":
                self.post(Released())
            case "text":
                text = request.get("text")
                if not isinstance(text, str) or not text.strip():
                    return {"ok": False, "error": 'text needs a non-empty "text"'}
                self.post(TextTurn(text.strip()))
            case "status":
                return {"ok": True, **self.status()}
            case other:
                return {"ok": False, "error": f"unknown command {other!r}"}
        return {"ok": True}

    def _on_mic_chunk(self, pcm: bytes, t: float) -> None:
        hands_free_reply = self.machine.mode is Mode.TOGGLE and self.machine.state is State.SPEAKING
        self.mic_feed.chunk(pcm, t, speaker_busy=hands_free_reply)

    def _on_frame(self, jpeg: bytes, _t: float) -> None:
        self.outbox.put("video", jpeg)

    def _on_reply_audio(self, pcm: bytes) -> None:
        if self.machine.held or not self.machine.session_open:
            return  # a reply talked over, or the tail of one still arriving after a hang-up
        self.turns.reply_received(time.monotonic())
        self.speaker.feed(pcm)

    def _on_sent(self, item: Item, t: float) -> None:
        self.turns.sent(item.kind, t)

    # -- what the model's tools may do (device.tools.DeviceActions; from worker threads) --

    def volume(self) -> float:
        return self.speaker.volume

    def set_volume(self, level: float) -> None:
        self.speaker.volume = level
        self.state_file.save(volume=level)

    def end_conversation(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.post, EndConversation())

    # -- the state machine ----------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            event = await self._events.get()
            before = self.machine.state
            self.machine, actions = step(self.machine, event)
            if self.machine.state is not before:  # the LEDs change first, whatever follows
                await self._entered(before, event)
            for action in actions:
                await self._perform(action)
            if self.machine.reply_done and self._drain_watch is None:
                self.speaker.feed(b"", last=True)  # flush the resampler's tail
                self._drain_watch = asyncio.create_task(self._watch_drain(), name="drain-watch")

    def _stop_frames(self) -> None:
        self.camera.stop_frames()
        self.outbox.drop_frame()

    async def _entered(self, before: State, event: Event) -> None:
        """One journal line per transition; LEDs, systemd status and the turn log follow."""
        state = self.machine.state
        log.info(
            "%s -> %s (%s)",
            before,
            state,
            type(event).__name__,
            extra={"LIVE_STATE": str(state), "LIVE_SESSION": self.link.session_id or ""},
        )
        await self.leds.show(state)
        if state in (State.IDLE, State.ERROR):
            self.speaker.rest()  # nothing to play until the next press: save the CPU
        else:
            self.speaker.wake()
        self.notifier.status(self.status_line())
        if state is State.IDLE and before is not State.ERROR:
            self.turns.finish(time.monotonic(), self.link.session_id)

    async def _watch_drain(self) -> None:
        """Tell the machine when the speaker has played the whole reply."""
        try:
            await self.speaker.wait_drained()
            self.post(PlaybackDrained())
        finally:
            self._drain_watch = None

    async def _perform(self, action: Action) -> None:
        match action.name:
            case "open_session":
                self.link.open()
            case "close_session":
                await self.camera.aclose()  # the camera goes dark first: it is the privacy
                await self.link.close()
                # A closed connection sits in a reference cycle (asyncio's TaskGroup in
                # 3.11) with its TLS buffers until the cycle collector runs: run it now,
                # cheaply, since everything from start-up is frozen out of its way.
                gc.collect()
            case "start_capture":
                self.turns.start(time.monotonic())
                self.mic_feed.start(self.mic.forward())
                self.camera.start_frames()
            case "stop_capture":
                self._stop_frames()
                self.mic_feed.stop()
                self.mic.hold()
            case "finish_capture":
                released = time.monotonic()
                self.turns.released(released)
                self._stop_frames()
                await self.mic_feed.finish(released)
                self.mic.hold()
            case "send_activity_start":
                self.outbox.put("activity_start")
            case "send_activity_end":
                self.outbox.put("activity_end")
            case "send_text":
                self.outbox.put("text", str(action.arg))
            case "clear_playback":
                self.speaker.clear()
            case "drop_outbox":
                self.outbox.clear()
            case "earcon":
                if self.cfg.audio.earcons and "speaker" not in self.machine.faults:
                    self.speaker.feed(earcon(str(action.arg)))
            case "start_timer":
                self._start_timer(Timer(action.arg))
            case "cancel_timer":
                if handle := self._timers.pop(Timer(action.arg), None):
                    handle.cancel()
            case _:
                raise ValueError(f"unknown action {action}")

    def _start_timer(self, timer: Timer) -> None:
        seconds = {
            Timer.IDLE: self.cfg.conversation.idle_timeout_s,
            Timer.SILENCE: self.cfg.conversation.end_after_silence_s,
            Timer.ERROR: self.cfg.conversation.error_display_s,
            Timer.REPLY: self.cfg.conversation.reply_timeout_s,
        }[timer]
        if old := self._timers.pop(timer, None):
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[timer] = loop.call_later(seconds, self.post, Timeout(timer))

    def status_line(self) -> str:
        """The state in words, as `systemctl status` and `ctl status` show it."""
        m = self.machine
        return f"error: {m.error}" if m.state is State.ERROR and m.error else str(m.state)

    def status(self) -> dict[str, Any]:
        return {
            "state": str(self.machine.state),
            "status": self.status_line(),
            "mode": str(self.machine.mode),
            "session_open": self.machine.session_open,
            "connected": self.machine.connected,
            "session_id": self.link.session_id,
            "connections": self.link.connections,
            "faults": sorted(self.machine.faults),
            "outbox_ms": round(self.outbox.held_ms),
            "mic_overflows": self.mic.overflows,
            "volume": round(self.speaker.volume, 2),
            "camera": self.camera.running,
            "leds": [state for _, state in self.leds.history],
            "turns": self.turns.recent(),
        }

    # -- life -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Open the hardware, serve until SIGTERM/SIGINT, then close everything."""
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        self._start(self.notifier.feed_watchdog(), "watchdog")
        try:
            self.link.prepare()
            await self.audio.open()  # a device that fails is reported and retried, not fatal
            if "microphone" not in self.audio.failures:
                await self._wait_for_microphone()
            self._start(self.audio.keep(), "audio-keeper")
            self.button.start(loop)
            await self.leds.show(self.machine.state)
            await self.control.start()
            self._start(self._consume(), "state-machine")
            log.info(
                "ready: %s mode, model %s",
                self.machine.mode,
                self.cfg.live.model,
                extra={"LIVE_STATE": str(self.machine.state)},
            )
            self.speaker.rest()
            gc.freeze()  # what start-up built lives on: keep it out of every later collection
            self.notifier.ready(self.status_line())
            await self.stopping.wait()
        finally:
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _start(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """A task of ours that dies takes the daemon down with it, and systemd restarts
        it: better than a box that looks alive (the watchdog still fed) and answers nothing."""
        if task.cancelled() or task.exception() is None:
            return
        log.critical(
            "%s failed; stopping so that systemd restarts the service",
            task.get_name(),
            exc_info=task.exception(),
        )
        self.failed = True
        self.stopping.set()

    def _on_stop_signal(self) -> None:
        self.notifier.stopping()
        self.stopping.set()

    async def _wait_for_microphone(self) -> None:
        """Ready means the microphone delivers: some devices take a while to start."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(MIC_START_TIMEOUT_S):
                await self.mic.delivering.wait()
        except TimeoutError:
            log.warning("the microphone delivered nothing in %.0f s", MIC_START_TIMEOUT_S)
            return
        log.info("microphone delivering after %.0f ms", (time.monotonic() - started) * 1000)

    async def _shutdown(self) -> None:
        """Close in the reverse order of need; the LEDs go dark whatever fails before."""
        try:
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            for task in [*self._tasks, self._drain_watch]:
                if task is not None and not task.done():  # a dead one was reported already
                    await stop_task(task)
            await self.control.aclose()
            await self.link.close()
            await self.camera.aclose()
            self.button.stop()
            self.mic.stop()
            self.speaker.stop()
        finally:
            await self.leds.aclose()
        current = asyncio.current_task()
        left = sorted(t.get_name() for t in asyncio.all_tasks() if t is not current)
        if left:
            log.warning("tasks left behind at shutdown: %s", ", ".join(left))
        self.notifier.close()
        log.info("stopped")


def _open_leds(cfg: Config) -> LedDriver:
    """The configured LEDs, or none: a missing SPI overlay must not stop the box talking."""
    try:
        return open_leds(cfg.leds)
    except LedsUnavailable as exc:
        log.error("LEDs off: %s", exc, extra={"LIVE_ERROR": str(exc)})
        return NullLeds()


def _saved_volume(state: StateFile, default: float) -> float:
    """The volume the set_volume tool last chose, else the configured one."""
    saved = state.load().get("volume", default)
    valid = isinstance(saved, int | float) and not isinstance(saved, bool) and 0 <= saved <= 1
    return float(saved) if valid else default


def run_daemon(cfg: Config) -> int:
    logs.setup(secrets=[cfg.api_key.reveal()] if cfg.api_key else [])
    appliance = Appliance(cfg)
    asyncio.run(appliance.run())
    return 1 if appliance.failed else 0
