"""Wires the adapters to the state machine and owns every task until shutdown.

Events from the button, the control socket, the Live link, the speaker and the
timers go into one queue; one task feeds them to `states.step` and performs the
actions it returns. Microphone chunks and reply audio take a fast path that
does not go through the queue: the microphone callback appends to the outbox,
the receive task appends to the speaker's buffer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from typing import Any

from device import logs
from device.audio import pcm as pcm_tools
from device.audio.capture import Capture
from device.audio.earcons import earcon
from device.audio.playback import Playback
from device.config import Config
from device.control import ControlServer
from device.hw.button import ButtonInput
from device.hw.leds import LedAnimator, open_leds
from device.live import LiveLink
from device.outbox import Item, Outbox
from device.service import Notifier
from device.states import (
    Action,
    Event,
    LongPress,
    Machine,
    Mode,
    PlaybackDrained,
    Pressed,
    Released,
    State,
    Timeout,
    Timer,
    step,
)
from device.tasks import stop_task
from device.turns import TurnLog

log = logging.getLogger("device.appliance")

#: In a hands-free conversation, a microphone gated this long tells the server the stream paused.
STREAM_PAUSE_S = 1.0
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
        self._capturing = False
        # The last moments before a press: people start talking as they press.
        self._preroll: deque[bytes] = deque(
            maxlen=max(1, cfg.audio.preroll_ms // cfg.audio.chunk_ms)
        )
        self._mic_flowing = asyncio.Event()
        self._gated_since: float | None = None
        self._stream_end_sent = False
        self._overflowing = False
        self._error: str | None = None
        self.link = LiveLink(cfg, self.outbox, self.post, self._on_reply_audio, self._on_sent)
        self.mic = Capture(
            self._on_mic_chunk, device=cfg.audio.input_device, chunk_ms=cfg.audio.chunk_ms
        )
        self.speaker = Playback(device=cfg.audio.output_device)
        self._drain_watch: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.leds = LedAnimator(open_leds(cfg.leds))
        self.button = ButtonInput(
            cfg.button.pin,
            self._on_button,
            bounce_time=cfg.button.bounce_ms / 1000 or None,
            hold_time=cfg.button.long_press_s or None,
        )
        self.control = ControlServer(cfg.control.socket, self._on_control, mode=cfg.control.mode)
        self.notifier = Notifier()
        self.stopping = asyncio.Event()

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
            case "status":
                return {"ok": True, **self.status()}
            case other:
                return {"ok": False, "error": f"unknown command {other!r}"}
        return {"ok": True}

    def _on_mic_chunk(self, pcm: bytes, t: float) -> None:
        self._mic_flowing.set()
        if not self._capturing:
            self._preroll.append(pcm)
            return
        if self.machine.mode is Mode.TOGGLE and self.machine.state is State.SPEAKING:
            pcm = self._gate(pcm, t)
            if not pcm:
                return
        else:
            self._gated_since = None
        dropped = self.outbox.put("audio", pcm)
        if dropped and not self._overflowing:
            log.warning(
                "microphone audio held too long: dropping the oldest (bound %.0f s)",
                self.cfg.audio.hold_s,
            )
        self._overflowing = bool(dropped)

    def _gate(self, pcm: bytes, t: float) -> bytes:
        """Keep the speaker out of the microphone while the model talks (toggle mode)."""
        if self.cfg.audio.mic_during_playback == "open":
            return pcm
        if self.cfg.audio.mic_during_playback == "attenuate":
            gain = pcm_tools.db_to_amplitude(-self.cfg.audio.attenuation_db)
            return pcm_tools.from_float(pcm_tools.to_float(pcm) * gain)
        if self._gated_since is None:
            self._gated_since, self._stream_end_sent = t, False
        elif not self._stream_end_sent and t - self._gated_since >= STREAM_PAUSE_S:
            self.outbox.put("audio_stream_end")
            self._stream_end_sent = True
        return b""

    def _on_reply_audio(self, pcm: bytes) -> None:
        if self.machine.held:
            return  # the rest of a reply the person has just talked over
        self.turns.reply_received(time.monotonic())
        self.speaker.feed(pcm)

    def _on_sent(self, item: Item, t: float) -> None:
        self.turns.sent(item.kind, t)

    # -- the state machine ----------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            event = await self._events.get()
            before = self.machine.state
            self.machine, actions = step(self.machine, event)
            for action in actions:
                await self._perform(action)
            if self.machine.reply_done and self._drain_watch is None:
                self.speaker.feed(b"", last=True)  # flush the resampler's tail
                self._drain_watch = asyncio.create_task(self._watch_drain(), name="drain-watch")
            if self.machine.state is not before:
                log.info(
                    "%s -> %s (%s)",
                    before,
                    self.machine.state,
                    type(event).__name__,
                    extra={
                        "LIVE_STATE": str(self.machine.state),
                        "LIVE_SESSION": self.link.session_id or "",
                    },
                )
                await self.leds.show(self.machine.state)
                self.notifier.status(self.status_line())
                if self.machine.state is State.IDLE and before is not State.ERROR:
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
                self._error = None
                self.link.open()
            case "close_session":
                await self.link.close()
            case "start_capture":
                self._capturing = True
                self.turns.start(time.monotonic())
                while self._preroll:
                    self.outbox.put("audio", self._preroll.popleft())
            case "stop_capture":
                self._capturing = False
            case "send_activity_start":
                self.outbox.put("activity_start")
            case "send_activity_end":
                self.outbox.put("activity_end")
                self.turns.released(time.monotonic())
            case "clear_playback":
                self.speaker.clear()
            case "drop_outbox":
                self.outbox.clear()
            case "earcon":
                if self.cfg.audio.earcons:
                    self.speaker.feed(earcon(str(action.arg)))
            case "start_timer":
                self._start_timer(Timer(action.arg))
            case "cancel_timer":
                if handle := self._timers.pop(Timer(action.arg), None):
                    handle.cancel()
            case "report_error":
                self._error = str(action.arg)
            case _:
                raise ValueError(f"unknown action {action}")

    def _start_timer(self, timer: Timer) -> None:
        seconds = {
            Timer.IDLE: self.cfg.conversation.idle_timeout_s,
            Timer.SILENCE: self.cfg.conversation.end_after_silence_s,
            Timer.ERROR: self.cfg.conversation.error_display_s,
        }[timer]
        if old := self._timers.pop(timer, None):
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[timer] = loop.call_later(seconds, self.post, Timeout(timer))

    def status_line(self) -> str:
        """The state in words, as `systemctl status` and `ctl status` show it."""
        state = str(self.machine.state)
        return f"error: {self._error}" if self._error and state == "error" else state

    def status(self) -> dict[str, Any]:
        return {
            "state": str(self.machine.state),
            "status": self.status_line(),
            "mode": str(self.machine.mode),
            "session_open": self.machine.session_open,
            "session_id": self.link.session_id,
            "outbox_ms": round(self.outbox.held_ms),
            "mic_overflows": self.mic.overflows,
            "leds": [state for _, state in self.leds.history],
            "turns": self.turns.recent(),
        }

    # -- life -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Open the hardware, serve until SIGTERM/SIGINT, then close everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        self._watchdog = asyncio.create_task(self.notifier.feed_watchdog(), name="watchdog")
        try:
            # PortAudio opens in tens of milliseconds; nothing else is running yet.
            self.speaker.start()
            self.mic.start()
            self.link.prepare()
            await self._wait_for_microphone()
            self.button.start(loop)
            await self.leds.show(self.machine.state)
            await self.control.start()
            log.info(
                "ready: %s mode, model %s",
                self.machine.mode,
                self.cfg.live.model,
                extra={"LIVE_STATE": str(self.machine.state)},
            )
            self.notifier.ready(self.status_line())
            consumer = asyncio.create_task(self._consume(), name="state-machine")
            try:
                await self.stopping.wait()
            finally:
                await stop_task(consumer)
        finally:
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_stop_signal(self) -> None:
        self.notifier.stopping()
        self.stopping.set()

    async def _wait_for_microphone(self) -> None:
        """Ready means the microphone delivers: some devices take a while to start."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(MIC_START_TIMEOUT_S):
                await self._mic_flowing.wait()
        except TimeoutError:
            log.warning("the microphone delivered nothing in %.0f s", MIC_START_TIMEOUT_S)
            return
        log.info("microphone delivering after %.0f ms", (time.monotonic() - started) * 1000)

    async def _shutdown(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await stop_task(self._drain_watch)
        await stop_task(self._watchdog)
        await self.control.aclose()
        await self.link.close()
        self.button.stop()
        self.mic.stop()
        self.speaker.stop()
        await self.leds.aclose()
        current = asyncio.current_task()
        left = sorted(t.get_name() for t in asyncio.all_tasks() if t is not current)
        if left:
            log.warning("tasks left behind at shutdown: %s", ", ".join(left))
        self.notifier.close()
        log.info("stopped")


def run_daemon(cfg: Config) -> int:
    logs.setup(secrets=[cfg.api_key.reveal()] if cfg.api_key else [])
    asyncio.run(Appliance(cfg).run())
    return 0
