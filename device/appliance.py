"""Wires the parts to the state machine, performs its actions, owns every task until shutdown.

Events from the button, the control socket, the Live link, the audio keeper,
the speaker, the timers and the watchdog's heartbeat go into one queue; one task
feeds them to `states.step` and performs the actions it returns, each class of
action in one place (`_perform`, checked exhaustive by the type checker).
Microphone chunks and camera frames take a fast path to the outbox that does not
go through the queue; what happens to them is set by actions (capture on or off,
the microphone gated while the model speaks hands-free).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine
from dataclasses import replace
from typing import Any, TypeVar, assert_never

from device import logs, tasks, workers
from device.audio.capture import PRESS_LAG_S
from device.audio.earcons import earcon
from device.audio.keeper import REOPEN_MAX_S, AudioKeeper, DriverStuck
from device.config import Config
from device.control import single_instance
from device.control_client import ControlError, unsayable
from device.hw import gpio_failure, no_pin_driver
from device.hw.leds import LedAnimator, LedDriver, NullLeds, leds_failure
from device.mic_feed import OVERFLOW_LOG_EVERY_S, MicFeed
from device.outbox import Item, Outbox, TextsWaiting
from device.parts import Parts
from device.persist import StateFile, kept_volume
from device.states import (
    Action,
    AwaitDrain,
    CancelTimer,
    ClearPlayback,
    CloseSession,
    DropOutbox,
    DropWholeReply,
    EndConversation,
    Event,
    FeedWatchdog,
    FinishCapture,
    GateMicrophone,
    Heartbeat,
    Interrupted,
    LongPress,
    Machine,
    Mode,
    OpenSession,
    PlaybackDrained,
    PlayEarcon,
    PlayReply,
    Pressed,
    Released,
    ReplyAudio,
    SayQuestionLost,
    SendActivityEnd,
    SendActivityStart,
    SendText,
    SpeechHeard,
    StartCamera,
    StartCapture,
    StartTimer,
    State,
    StopCamera,
    StopCapture,
    SupersedeReply,
    TalkedOver,
    TextTurn,
    Timeout,
    Timer,
    TurnComplete,
    step,
)
from device.tasks import stop_task
from device.turns import TurnLog

#: systemd's stop, Ctrl-C, and the hang-up of an SSH session that ran `live-appliance run`
#: (by default it would kill the daemon with its LEDs lit and its socket file left).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Under systemd a SIGHUP is what a daemon takes for "read your configuration again":
#: the daemon stops with this status, which the unit counts a success and restarts
#: (SuccessExitStatus=, RestartForceExitStatus=). Stopping there would leave the box off.
RESTART_STATUS = 3

log = logging.getLogger("device.appliance")

MIC_START_TIMEOUT_S = 5.0
#: The longest a text turn waits for the machine to take what came before it (a press
#: queued, a session closing), to be judged on what it will find.
TEXT_WAIT_S = 2.0
#: An earcon is played only while less than this waits for the speaker: presses faster
#: than their sounds (a script hammering `ctl press`) cannot queue minutes of beeps.
EARCON_BACKLOG_MS = 1000.0
#: The most a failed device's close waits for the speaker to play the error earcon
#: (0.33 s) out first: the session's close before it may take a second or two on a Pi.
FAILURE_HEARD_S = 2.0
#: State changes kept for `ctl status` (with their times), for owners and the rig.
STATE_HISTORY = 64
#: Presses and releases waiting for the state machine, past which `ctl press` and `ctl
#: release` are refused (not the release of a press taken). Each is answered at once, and
#: a release waits for the microphone's last chunk, so a client sending them as fast as
#: it can grew the queue without end, with the watchdog's heartbeat stuck behind it.
PRESSES_WAITING = 16
#: A button or LEDs that cannot be opened (a line held by another process at boot, lgpio
#: not ready yet, an SPI device made after the service started) are tried again this long
#: after, twice as long after each try that fails, up to the audio keeper's longest wait:
#: a box nobody restarts answers its button, and shows its state, again.
BUTTON_RETRY_S = 2.0
#: A watchdog ping systemd could not take (PID 1 busy: a daemon-reload on a slow SD card,
#: apt re-executing it) is tried again this soon through the machine, not at the next
#: heartbeat: that one comes WatchdogSec/2 later, with the kill, and loses the race to it.
WATCHDOG_RETRY_S = 1.0
#: The speaker's actions, and the microphone and camera stopping, performed ahead of a
#: transition's journal line and LEDs: changing the LEDs yields to the loop, and a box that
#: shows idle must have stopped sending what it hears and sees.
AHEAD = (PlayReply, ClearPlayback, SupersedeReply, StopCapture)
#: The link's events of a reply, stale once a press or a text turn superseded it.
STALE = (ReplyAudio, TurnComplete, Interrupted)


class Appliance:
    """The running device: one instance per daemon process."""

    def __init__(self, cfg: Config, parts: Parts | None = None) -> None:
        parts = parts or Parts(cfg)
        self.cfg = cfg
        self._parts = parts
        self.machine = Machine(mode=Mode(cfg.button.mode))
        self.outbox = Outbox(cfg.audio.hold_s)
        self.texts = TextsWaiting(self.outbox)
        self.turns = TurnLog()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._posted = 0  # events posted so far
        self._taken = 0  # events taken by the machine so far
        #: Set while the machine has handled every event posted (it waits for the next).
        self._caught_up = asyncio.Event()
        #: Reply audio and the reply's end (turnComplete, interrupted) posted up to this count
        #: belong to a reply a press or a text turn superseded (handed on before the link
        #: knew): not to be heard, nor taken for the end of the turn that superseded it.
        self._stale_upto = 0
        self._presses_waiting = 0  # Pressed and Released posted, not yet taken
        self._presses_over = logs.Overflow(log, "control_presses")
        self._ctl_pressed = False  # the last ctl press taken has not been released yet
        self._button_dropped = False  # the button's last press was dropped: so is its release
        #: The edges of the last releases posted (button or ctl), oldest first: the first
        #: after the edge of a press the machine takes only now ends that turn's audio.
        self._releases: deque[float] = deque(maxlen=PRESSES_WAITING)
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        #: The Timeout each timer that ran out posted, until the machine takes it ...
        self._fired: dict[Timer, Timeout] = {}
        #: ... and those whose timer was started again or cancelled meanwhile: the machine
        #: would take them for the new run's end (words heard as the silence ran out).
        self._stale_timeouts: list[Timeout] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: (time.monotonic(), state, the event that led there), newest last.
        self.history: deque[tuple[float, str, str]] = deque(maxlen=STATE_HISTORY)
        self.state_file: StateFile = parts.state_file()
        #: How the box keeps its own voice out of the microphone, as it can here.
        self.mic_plan = parts.mic_plan
        in_force = replace(cfg.audio, mic_during_playback=self.mic_plan.mic_during_playback)
        self.mic_feed = MicFeed(
            in_force,
            self.outbox,
            on_speech=self._on_speech,
            on_talk_over=self._on_talk_over,
            silence_ms=cfg.conversation.silence_ms,
            on_soft_voice=self._on_soft_voice,
        )
        self.mic = parts.microphone(
            self.mic_feed.chunk,
            self.mic_feed.overflowed,
            self.mic_feed.preroll_chunks,
            self.mic_feed.paused,
        )
        self.mic.on_cleaner_failed = self._cleaner_failed
        self.speaker = parts.speaker()
        self.speaker.on_underflow = self._speaker_ran_out
        self._underflow_due = logs.AtMostEvery(OVERFLOW_LOG_EVERY_S)
        self.speaker.volume = _saved_volume(self.state_file, cfg.audio.volume)
        #: set_volume's calls run in threads of their own, two at once for a model that
        #: calls it twice in one message: the speaker plays the one the card keeps.
        self._volume_lock = threading.Lock()
        self.audio = AudioKeeper(
            {"speaker": self.speaker, "microphone": self.mic}, self.post, cfg.audio.reopen_s,
            heard_first=self._failure_heard,
        )
        self.camera = parts.camera(self._on_frame)
        self.link = parts.link(
            self.outbox, self.post, self._on_sent, parts.tools(self), self.speaker
        )
        self.notifier = parts.notifier()
        self.control = parts.control(self._on_control)
        self.button = parts.button(self._on_button)
        #: Why the button could not be opened, while it is tried again; None once open.
        self.button_failure: str | None = None
        self.leds: LedAnimator | None = None  # opened once this is the only daemon
        #: Why the LEDs could not be opened, and whether they are tried again; None once
        #: open: `ctl status` and the doctor say so (the box runs dark meanwhile).
        self.leds_off: dict[str, Any] | None = None
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.failed = False  # one of our tasks died: exit non-zero
        self.restart_asked = False  # a SIGHUP under systemd: exit RESTART_STATUS
        self.microphone_wait_ms: float | None = None  # start-up: until its first audio
        self.ready = False  # start-up is over: the devices are open, the machine runs
        self._drain_watch: asyncio.Task[None] | None = None
        self._watchdog_retry: asyncio.TimerHandle | None = None  # a lost ping's next try

    # -- inputs, all on the event loop -------------------------------------------------

    def post(self, event: Event) -> None:
        self._posted += 1
        self._caught_up.clear()
        self._events.put_nowait(event)

    def _on_button(self, name: str, t: float) -> None:
        """A button edge, seen at `t`. Past PRESSES_WAITING (a pin that chatters faster than
        the machine takes its edges) a press is dropped with its release, so the queue stays
        short and the edges the machine sees still alternate; the release of a press taken
        passes."""
        if name != "pressed" and self._button_dropped:  # the press dropped: all of it
            self._button_dropped = name != "released"
            return
        if name == "pressed" and self._presses_waiting >= PRESSES_WAITING:
            self._button_dropped = True
            self._presses_over.hit("button press ignored: %d presses are waiting",
                                   PRESSES_WAITING)  # fmt: skip
            return
        edges: dict[str, Pressed | Released | LongPress] = {
            "pressed": Pressed(at=t),  # the person may talk from then on
            "released": Released(at=t),
            "long_press": LongPress(),
        }
        self._post_press(edges[name])

    def _post_press(self, event: Pressed | Released | LongPress) -> None:
        if isinstance(event, Released) and event.at is not None:
            self._releases.append(event.at)
            if self._ends_the_capture_now():
                # What the loop hands on first is not the turn: no sound, and no picture (a
                # state change taken before the release yields to the sender meanwhile).
                self.mic_feed.released(event.at)
                self._stop_frames()
        if self._presses_waiting < PRESSES_WAITING:  # not a release let through at the bound
            self._presses_over.ended()
        self._presses_waiting += 1
        self.post(event)

    def _ends_the_capture_now(self) -> bool:
        """Whether a release posted now is the one of the press being captured: push-to-talk,
        the button held, and no other edge waiting (a turn taken late, its release and the
        next press's still to come, keeps its own end)."""
        ptt = self.machine.mode is Mode.PUSH_TO_TALK
        return ptt and self.machine.held and self._presses_waiting == 0

    def _on_speech(self, starts: bool) -> None:
        from_the_room = not self.speaker.busy
        if starts and from_the_room:
            self.link.hurry()  # hands-free, their words are the turn: a reconnect tries now
        self.post(SpeechHeard(from_the_room=from_the_room))

    def _on_soft_voice(self) -> None:
        self.post(SpeechHeard(from_the_room=not self.speaker.busy, soft=True))

    def _speaker_ran_out(self, count: int) -> None:
        """The speaker ran out of audio that was waiting for it (its writer late: a Pi
        throttled, or busy beside apt): a click or a gap in the reply. Said as the
        microphone's overflows are, at most every OVERFLOW_LOG_EVERY_S."""
        if self._underflow_due.due():
            log.warning(
                "speaker underrun: the sound card ran out of audio that was waiting "
                "(%d times so far; the box is short of CPU)",
                count,
                extra={"LIVE_SPEAKER_UNDERFLOWS": count},
            )

    def _on_talk_over(self) -> None:
        self.post(TalkedOver())

    async def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        match request.get("cmd"):
            case "press" | "release" as cmd:
                # A release of a press taken is never refused: that press must be able to end.
                ending = cmd == "release" and self._ctl_pressed
                if self._presses_waiting >= PRESSES_WAITING and not ending:
                    waiting = PRESSES_WAITING
                    self._presses_over.hit("ctl %s refused: %d presses are waiting", cmd, waiting)
                    return {"ok": False, "error": f"busy: {waiting} presses are waiting already"}
                self._ctl_pressed = cmd == "press"
                now = time.monotonic()
                self._post_press(Pressed(at=now) if cmd == "press" else Released(at=now))
            case "text":
                text = request.get("text")
                if not isinstance(text, str):
                    return {"ok": False, "error": 'text needs a "text" string'}
                if why := unsayable(text):
                    return {"ok": False, "error": f"text: {why}"}
                # Judged on what the machine will be when it takes the text: a press (or a
                # device's failure) still queued was not seen, the text was answered "ok"
                # and went into the person's question (or was dropped with an error beep).
                # Before the machine runs (start-up) it waits for it as before.
                try:
                    if self.ready:
                        async with asyncio.timeout(TEXT_WAIT_S):
                            await self._caught_up.wait()
                except TimeoutError:
                    return {"ok": False, "error": "busy: the box is still taking what came "
                            "before; send it again in a moment"}  # fmt: skip
                if refused := self._cannot_take_text():
                    return {"ok": False, "error": refused}
                if refused := self.texts.admit():
                    return {"ok": False, "error": refused}
                self.post(TextTurn(text.strip()))
            case "status":
                return {"ok": True, **self.status()}
            case other:
                return {"ok": False, "error": f"unknown command {other!r}"}
        return {"ok": True}

    def _cannot_take_text(self) -> str | None:
        """Why a text turn would not be said now, or None. A hook is told, not left to
        believe it was: words in the middle of someone's push-to-talk turn would land
        inside their question, and a box without its speaker cannot say the reply."""
        machine = self.machine
        if machine.faults:
            return f"the box cannot talk now: {machine.error or ', '.join(machine.faults)}"
        if machine.held:
            return "busy: someone is holding the button; send it after the release"
        if machine.ending:  # it would go into a session about to close, or the next one
            return "busy: the box is ending the conversation; send it again in a moment"
        return None

    def _on_frame(self, jpeg: bytes, _t: float) -> None:
        self.outbox.put("video", jpeg)

    def _on_sent(self, item: Item, t: float) -> None:
        self.turns.sent(item.kind, t)

    # -- what the model's tools may do (device.tools.DeviceActions; from worker threads) --

    def volume(self) -> float:
        return self.speaker.volume

    def set_volume(self, level: float) -> None:
        """Heard at once; kept as the speaker plays it when the card takes the save (a
        second call waits for a slow card's first save, then keeps its own)."""
        self.speaker.volume = level
        with self._volume_lock:
            # With the configured volume it was set over: an owner's later edit of it wins.
            self.state_file.save(
                volume=self.speaker.volume, volume_configured=self.cfg.audio.volume
            )

    def end_conversation(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._end_conversation)

    def _end_conversation(self) -> None:
        self.post(EndConversation(session=self.machine.session))

    async def _failure_heard(self, failed: Collection[str]) -> None:
        """Before the keeper closes both streams for a failed microphone: the machine takes
        the failure, and the error earcon it plays into the speaker, which works, sounds
        (within FAILURE_HEARD_S)."""
        if "speaker" in failed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FAILURE_HEARD_S):
                await self._caught_up.wait()
                await self.speaker.wait_drained()

    # -- the state machine ----------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            if self._events.empty():
                self._caught_up.set()
            event = await self._events.get()
            self._taken += 1
            if isinstance(event, STALE) and self._taken <= self._stale_upto:
                event = replace(event, talked_over=True)  # of the reply superseded
            elif isinstance(event, PlaybackDrained) and not self.speaker.drained.is_set():
                # Posted as the last reply played out, taken after the next one came in:
                # not the drain of what plays now; a watcher waits for that one.
                self._watch_drain_from_now()
                continue
            if isinstance(event, Timeout) and self._stale_timeout(event):
                continue
            if isinstance(event, TextTurn):
                self.texts.taken()
            elif isinstance(event, Pressed | Released | LongPress):
                self._presses_waiting -= 1
                if isinstance(event, Pressed) and (up := self._lost_whole(event.at)) is not None:
                    event = replace(event, lost_at_release=up)
            before, said = self.machine.state, self.status_line()
            self.machine, actions = step(self.machine, event)
            if event == Timeout(Timer.OPEN_MIC) and self.machine.overtime:
                # No state changes: the hang-up's own line will name only the drain.
                log.info("%s: the conversation ends once the answer has played",
                         self._cause(event))  # fmt: skip
            if self.machine.state is not before:
                # What the person hears goes first: a reply's first audio or a barge-in's
                # silence does not wait for the journal line and the LEDs, which change
                # next, before anything else follows. So does the end of the capture.
                for action in actions:
                    if isinstance(action, AHEAD):
                        await self._perform(action)
                await self._entered(before, event)
                actions = [action for action in actions if not isinstance(action, AHEAD)]
            elif (now_said := self.status_line()) != said:
                # Still in error, for other words (a second device gone, one of two back):
                # systemctl status showed the first reason while another held the box.
                log.info("%s (%s)", now_said, self._cause(event),
                         extra={"LIVE_STATE": self._led_state()})  # fmt: skip
                self.notifier.status(now_said)
            for action in actions:
                await self._perform(action)

    async def _entered(self, before: State, event: Event) -> None:
        """One journal line per transition; LEDs, systemd status and the turn log follow."""
        state = self.machine.state
        cause = self._cause(event)
        self.history.append((time.monotonic(), str(state), cause))
        log.info(
            "%s -> %s (%s)",
            before,
            state,
            cause,
            # What the LEDs show (error while idle with no button): the journal's
            # LIVE_STATE=error recipe is every time they showed error.
            extra={"LIVE_STATE": self._led_state(), "LIVE_SESSION": self.link.session_id or ""},
        )
        if self.leds is not None:
            await self.leds.show(self._led_state())
        self.notifier.status(self.status_line())
        if state is State.ERROR:  # a turn that failed ends here, not at the next press
            self.turns.finish(time.monotonic(), self.link.session_id, failed=True)
        elif state is State.IDLE and before is not State.ERROR:
            self.turns.finish(time.monotonic(), self.link.session_id)
        elif self.machine.mode is Mode.TOGGLE and before is State.SPEAKING and state in (
            State.LISTENING,
            State.CONNECTING,
        ):  # hands-free, the reply is over: so is the exchange
            self.turns.next_exchange(time.monotonic(), self.link.session_id)

    async def _perform(self, action: Action) -> None:
        match action:
            case OpenSession(session):
                self.link.open(session)
            case CloseSession():
                await self._camera_and_link_off(self.camera.aclose())
                # Nothing of this session is for the next one: what waited for a connection
                # (an idle close during a reconnect does not drop it first).
                self.outbox.clear()
                # A closed connection sits in a reference cycle (asyncio's TaskGroup in
                # 3.11) with its TLS buffers until the cycle collector runs: run it now,
                # cheaply, since everything from start-up is frozen out of its way.
                gc.collect()
            case StartCapture(camera, preroll, since):
                now = time.monotonic()
                self.turns.start(now, self.link.session_id)
                ptt = self.machine.mode is Mode.PUSH_TO_TALK
                gate = None if ptt else self.mic_feed.pause_gate()
                # Taken so late that the button is up again (its Released waits): the turn
                # ends at that edge, not with what the microphone heard after it.
                after = since if ptt and since is not None else float("inf")
                up = self._release_after(after)
                if since is not None and now - since > PRESS_LAG_S:
                    _press_taken_late(now - since, None if up is None else up - since)
                held = self.mic.forward(gate, since=since, preroll=preroll, until=up)
                self.mic_feed.start(held, until=up)
                if camera and up is None:  # a turn over already has nobody to look at
                    self.camera.start_frames()
            case StartCamera():
                self.camera.start_frames()
            case StopCapture():
                self._stop_frames()
                self.mic_feed.stop()
                self.mic.hold()
            case FinishCapture(edge):
                released = time.monotonic() if edge is None else min(edge, time.monotonic())
                self.turns.released(released)
                self._stop_frames()
                self.mic.finish(released)
                await self.mic_feed.finish(released)
                self.mic.hold()
            case StopCamera():
                await self.camera.aclose()
            case GateMicrophone(gated):
                self.mic_feed.gate(gated)
                if self.mic_plan.mic_during_playback == "gate":
                    self.mic.mute(gated)  # nothing it hears goes out: the capture keeps it
                else:
                    self.mic.listen_closely(gated)  # a person may talk over it
            case SendActivityStart():
                self.outbox.put("activity_start")
                self.link.hurry()
            case SendActivityEnd():
                self.outbox.put("activity_end")
            case SendText(text):
                # A turn of its own in the journal and `ctl status`, timed from the words
                # handed over as from a release (a failed one says so, LIVE_TURN_RESULT).
                handed = time.monotonic()
                self.turns.start(handed, self.link.session_id)
                self.turns.released(handed)
                self.outbox.put("text", text)
                self.link.hurry()
            case PlayReply(pcm):
                hands_free = self.machine.mode is Mode.TOGGLE
                last_word = self.mic_feed.last_speech if hands_free else None
                self.turns.reply_received(time.monotonic(), last_word)
                self.speaker.feed(pcm)
            case ClearPlayback():
                self.speaker.clear()
            case SupersedeReply():
                self._stale_upto = self._posted
                self.link.supersede_reply()
            case DropWholeReply():
                self.link.drop_whole_reply()
            case AwaitDrain():
                self.speaker.feed(b"", last=True)  # flush the resampler's tail
                self._watch_drain_from_now()
            case DropOutbox():
                self.outbox.clear()
                self.link.drop_turn()
            case PlayEarcon(name):
                if self.cfg.audio.earcons and self.speaker.buffered_ms < EARCON_BACKLOG_MS:
                    # Whole, to its fade: on a card at another rate the resampler would hold
                    # its end back until the next sound, seconds later.
                    self.speaker.feed(earcon(name), last=True)
            case SayQuestionLost(at, up):
                _press_taken_late(time.monotonic() - at, up - at)
            case StartTimer(timer):
                self._start_timer(timer)
            case CancelTimer(timer):
                self._cancel_timer(timer)
            case FeedWatchdog():
                self.notifier.watchdog()
                if self.notifier.lost and self._watchdog_retry is None:
                    loop = asyncio.get_running_loop()
                    self._watchdog_retry = loop.call_later(WATCHDOG_RETRY_S, self._retry_watchdog)
            case _:
                assert_never(action)

    def _release_after(self, edge: float) -> float | None:
        """The first release seen after the press edge `edge`, if the button is up again."""
        return next((up for up in self._releases if up > edge), None)

    def _lost_whole(self, since: float | None) -> float | None:
        """Push-to-talk, a press from `since` taken now: its release, if that came longer
        ago than the ring keeps, so nothing said between the two is left (the machine has
        it said, if it takes the press); None otherwise."""
        if self.machine.mode is not Mode.PUSH_TO_TALK or since is None:
            return None
        up = self._release_after(since)
        return up if up is not None and up <= time.monotonic() - PRESS_LAG_S else None

    async def _camera_and_link_off(self, camera_off: Coroutine[Any, Any, None]) -> None:
        """The camera dark first (it is the privacy), the link closed beside it, not after:
        the camera takes seconds to switch off on a Pi, and a reconnect under way set up a
        session meanwhile, after the person (or systemd) had ended the conversation."""
        link_closed = asyncio.create_task(self.link.close(), name="live-close")
        try:
            await camera_off
        finally:
            await link_closed

    def _stop_frames(self) -> None:
        self.camera.stop_frames()
        self.outbox.drop_frame()

    def _watch_drain_from_now(self) -> None:
        if self._drain_watch is None:
            self._drain_watch = asyncio.create_task(self._watch_drain(), name="drain")

    async def _watch_drain(self) -> None:
        """Tell the machine when the speaker has played the whole reply."""
        try:
            await self.speaker.wait_drained()
            self.post(PlaybackDrained())
        finally:
            self._drain_watch = None

    def _timer_setting(self, timer: Timer) -> tuple[str, float]:
        """How long `timer` runs, and the settings that say so (for the journal: an owner
        cut off at two minutes is told what to change)."""
        talk, tools = self.cfg.conversation, self.cfg.tools
        match timer:
            case Timer.IDLE:
                return "[conversation] idle_timeout_s", talk.idle_timeout_s
            case Timer.SILENCE:
                return "[conversation] end_after_silence_s", talk.end_after_silence_s
            case Timer.ERROR:
                return "[conversation] error_display_s", talk.error_display_s
            case Timer.REPLY:
                return "[conversation] reply_timeout_s", talk.reply_timeout_s
            case Timer.LONG_REPLY:
                return "[conversation] longest_reply_s", talk.longest_reply_s
            case Timer.TOOL:
                setting = "[tools] timeout_s + [conversation] reply_timeout_s"
                return setting, tools.timeout_s + talk.reply_timeout_s
            case Timer.OPEN_MIC if self.machine.mode is Mode.PUSH_TO_TALK:
                return "[conversation] longest_turn_s", talk.longest_turn_s
            case Timer.OPEN_MIC:
                return "[conversation] longest_conversation_s", talk.longest_conversation_s
            case _:
                assert_never(timer)

    def _cause(self, event: Event) -> str:
        """What led to a state, as the journal says it: a timer's name and setting with its
        Timeout (a turn ended by the silence, not by `longest_turn_s`)."""
        if isinstance(event, Timeout):
            setting, seconds = self._timer_setting(event.timer)
            return f"Timeout {event.timer}: {setting} {seconds:g} s"
        return type(event).__name__

    def _start_timer(self, timer: Timer) -> None:
        _, seconds = self._timer_setting(timer)
        self._cancel_timer(timer)
        loop = asyncio.get_running_loop()
        self._timers[timer] = loop.call_later(seconds, self._expired, timer)

    def _expired(self, timer: Timer) -> None:
        self._fired[timer] = timeout = Timeout(timer)
        self.post(timeout)

    def _cancel_timer(self, timer: Timer) -> None:
        """Stop `timer`; a Timeout it posted already, not yet taken, is to be dropped."""
        if handle := self._timers.pop(timer, None):
            handle.cancel()
        if (fired := self._fired.pop(timer, None)) is not None:
            self._stale_timeouts.append(fired)

    def _stale_timeout(self, event: Timeout) -> bool:
        """Whether `event` ends a run of its timer that was started again or cancelled
        after it was posted (taken: forgotten either way)."""
        if self._fired.get(event.timer) is event:
            del self._fired[event.timer]
        for index, stale in enumerate(self._stale_timeouts):
            if stale is event:
                del self._stale_timeouts[index]
                return True
        return False

    def _retry_watchdog(self) -> None:
        self._watchdog_retry = None
        self.post(Heartbeat())

    async def _heartbeat(self, interval: float) -> None:
        """A Heartbeat through the event queue every `interval`: the watchdog is fed only
        when the machine has handled it, so a machine stuck on an action is restarted too."""
        while True:
            self.post(Heartbeat())
            await asyncio.sleep(interval)

    def _led_state(self) -> str:
        """What the LEDs show: the machine's state, but error rather than idle while the
        button cannot be opened (a box that looks ready and ignores its button misleads)."""
        state = self.machine.state
        if state is State.IDLE and self.button_failure is not None:
            return str(State.ERROR)
        return str(state)

    def status_line(self) -> str:
        """The state in words, as `systemctl status` and `ctl status` show it."""
        m = self.machine
        if m.state is State.IDLE and self.button_failure is not None:
            return f"error: {self.button_failure}"
        return f"error: {m.error}" if m.state is State.ERROR and m.error else str(m.state)

    @property
    def mic_while_speaking(self) -> str | None:
        """What the microphone does while the box speaks, in force now; None on a
        push-to-talk box: its microphone is never open while it speaks, so the service
        neither needs the canceller nor looks whether it could run (the doctor looks)."""
        return self.mic_plan.mic_during_playback if self.machine.mode is Mode.TOGGLE else None

    def status(self) -> dict[str, Any]:
        """What `ctl status` shows: an owner's view of the box over SSH, and the rig's."""
        return {
            "ready": self.ready,
            # Started by systemd (the service), or by hand in a shell: the doctor says which
            # one holds the devices, and how to stop it.
            "systemd": self.notifier.enabled,
            "pid": os.getpid(),
            "state": str(self.machine.state),
            "status": self.status_line(),
            "mode": str(self.machine.mode),
            "session_open": self.machine.session_open,
            "connected": self.machine.connected,
            "live_client": self.link.prepared,
            "session_id": self.link.session_id,
            "connections": self.link.connections,
            "faults": sorted(self.machine.faults | ({"button"} if self.button_failure else set())),
            # Read pressed since it opened: ignored, and a box that looks ready does nothing.
            "button_held": self.button.held_since_open,
            "leds_off": self.leds_off or self._leds_failing(),
            "timers": sorted(self.machine.timers),
            "outbox_ms": round(self.outbox.held_ms),
            "mic_overflows": self.mic.overflows,
            "mic_silent": self.mic.silent,
            "speaker_underflows": self.speaker.underflows,
            "speaker_starved": self.speaker.starved,
            "output_latency_ms": round(self.speaker.output_latency * 1000, 1),
            "microphone_wait_ms": self.microphone_wait_ms,
            "volume": round(self.speaker.volume, 2),
            "settings_not_kept": self.state_file.problem(),
            # In force now: a canceller that failed mid-run leaves the gate in its place.
            "mic_during_playback": self.mic_while_speaking,
            "mic_missing": self.mic_plan.missing,
            "camera": self.camera.running,
            "camera_failure": self.camera.failure,
            "leds": [state for _, state in self.leds.history] if self.leds else [],
            "states": [
                {"t": t, "state": state, "event": event} for t, state, event in self.history
            ],
            "turns": self.turns.recent(),
            "tasks": len(asyncio.all_tasks()),  # a soak watches these for leaks
            "workers": len(workers.threads()),
        }

    # -- life -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Open the hardware, serve until a stop signal, then close everything.

        The control socket comes first: it is the single-instance check, and a second
        daemon must stop before it claims a pin or a sound device the first one holds.
        """
        loop = self._loop = asyncio.get_running_loop()
        # Every task started from here (the camera's, the keeper's, the state machine's) and
        # every thread (the microphone's, the speaker's, a tool's) logs under the session
        # open at the time, not only the link's own.
        logs.name_sessions(lambda: self.link.session_id)
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.set_default_executor(workers.Workers())
        try:
            # Refused, nothing was started: the journal says so alone, not "stopped" first.
            await self.control.start()
            try:
                if not await self._start_up_unless_stopped(loop):
                    return  # a stop came first: no READY after STOPPING
                gc.freeze()  # what start-up built lives on: out of every later collection
                self.ready = True
                self.notifier.ready(self.status_line())
                await self.stopping.wait()
            finally:
                await self._shutdown()
        finally:
            logs.name_sessions(None)
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    async def _start_up_unless_stopped(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start-up, given up when a stop comes first: it waits seconds for a microphone
        that takes its time, or for a driver stuck in an open, and a SIGTERM must not
        wait for that (systemd kills a box that outlasts TimeoutStopSec, LEDs lit).
        True when the box started; a start-up that fails raises as before."""
        start_up = asyncio.create_task(self._start_up(loop), name="start-up")
        stop = asyncio.create_task(self.stopping.wait(), name="stop-during-start-up")
        try:
            await asyncio.wait({start_up, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await stop_task(stop)
            if not start_up.done():
                await stop_task(start_up)
        if start_up.cancelled():
            return False
        start_up.result()
        return not self.stopping.is_set()

    async def _start_up(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the devices, start the tasks, show the idle state."""
        leds = self.leds = LedAnimator(self._open_leds())
        leds.blank()
        if self.notifier.watchdog_s is not None:
            self._start(self._heartbeat(self.notifier.watchdog_s / 2), "heartbeat")
        await self.audio.open()  # a device that fails is reported and retried, not fatal
        # The SDK after the devices: PortAudio's scan has let go of the ALSA plugins it
        # loaded by now, so the two never take memory at the same time (peak RSS).
        self._start(self._prepare_link(), "live-prepare")
        if not self.audio.failures:  # one failing, the keeper closed both: none to wait for
            await self._wait_for_microphone()
        self._start(self.audio.keep(), "audio-keeper")
        self._start_button(loop)
        await leds.show(self._led_state())
        self._start(self._consume(), "state-machine")
        if self.mic_plan.missing:
            self._say_what_is_missing()
        self._say_an_empty_configuration()
        log.info(
            "ready: %s mode, model %s, microphone while speaking: %s",
            self.machine.mode,
            self.cfg.live.model,
            self.mic_while_speaking or "open only while the button is held",
            extra={"LIVE_STATE": self._led_state()},
        )

    def _say_an_empty_configuration(self) -> None:
        """A configuration of zero bytes is a save a power cut cut short, not the defaults
        chosen (those are a file of comments): the box runs on the defaults, the owner's
        pins, voice and mode gone, and nothing else would say why."""
        path = self.cfg.path
        try:
            empty = path is not None and path.stat().st_size == 0
        except OSError:  # gone since it was read: it was read whole
            empty = False
        if empty:
            log.warning(
                "%s is empty (0 bytes): the box runs on the defaults, profile %s; write "
                "the settings in it again",
                path,
                self.cfg.hardware.profile,
            )

    def _say_what_is_missing(self) -> None:
        log.warning(
            "no echo cancellation or noise suppression here (%s); while the box "
            "speaks hands-free: %s",
            self.mic_plan.missing,
            self.mic_plan.mic_during_playback,
            extra={"LIVE_MIC_DURING_PLAYBACK": self.mic_plan.mic_during_playback},
        )

    def _cleaner_failed(self, reason: str) -> None:
        """The microphone's echo canceller (or noise suppressor) failed mid-run: the audio
        goes on as recorded, and the box gates itself as one without the module does, at
        once if it speaks now (with "cancel" its own voice would interrupt it)."""
        plan = self.mic_plan
        gate = "gate" if plan.echo else plan.mic_during_playback
        self.mic_plan = replace(
            plan, mic_during_playback=gate, echo=False, noise=False, missing=reason,
            fell_back=plan.echo,
        )
        if plan.echo:
            self.mic_feed.fall_back_to_gate()
            if self.mic_feed.gated:
                self.mic.listen_closely(False)
                self.mic.mute(True)
        self._say_what_is_missing()

    async def _prepare_link(self) -> None:
        """The Live client, built beside the rest of the start (READY does not wait for
        the SDK's import); a failure is one journal line, and each session tries again."""
        if self.cfg.api_key is None and self.cfg.live.backend == "gemini":
            return  # waiting for the key file (said at start): the first session builds it
        try:
            await asyncio.shield(self.link.prepare())
        except Exception as exc:
            from device.live.session import say_build_failure

            say_build_failure(exc, log, "cannot build the Live API client")
            return
        gc.freeze()  # the SDK's modules and models live on too, like the rest of start-up

    def _open_leds(self) -> LedDriver:
        """The LEDs, or none while they cannot be opened: never a box that stops for them.
        LEDs that fail as the service starts (pins another program holds at boot, an SPI
        device made a moment later) are tried again as the button is, and show the box's
        state once they open; with no pin driver at all, never."""
        try:
            return self._parts.leds()
        except Exception as exc:
            self._leds_off(exc)
        return NullLeds()

    def _leds_failing(self) -> dict[str, Any] | None:
        """LEDs that opened but whose driver's writes fail (the SPI device gone, an I/O
        error; a loose HAT fails no write), as `leds_off` says it."""
        if self.leds is None or self.leds.failure is None:
            return None
        # `opened`: no pins to correct or free, and no tries less and less often (each
        # frame is tried again until one shows).
        reason = f"failing to show: {self.leds.failure}"
        return {"reason": reason, "tried_again": True, "opened": True}

    def _leds_off(self, failed: Exception) -> None:
        """One journal line for LEDs that cannot be opened; their tries again started."""
        reason = leds_failure(failed)
        self.leds_off = {"reason": reason, "tried_again": not no_pin_driver(failed)}
        if no_pin_driver(failed):
            log.error("LEDs off: %s", reason, extra={"LIVE_ERROR": reason})
            return
        log.error(
            "LEDs off: %s (tried again in %.3g s, then less and less often)",
            reason,
            BUTTON_RETRY_S,
            extra={"LIVE_ERROR": reason},
        )
        self._start(self._retry_leds(), "leds-retry")

    async def _retry_leds(self) -> None:
        """Open the LEDs again until they open; then show the state on them."""
        driver = await _until_opened(self._parts.leds)
        self.leds_off = None
        log.info("LEDs are back")
        assert self.leds is not None  # made before this task starts
        await self.leds.use(driver)

    def _start_button(self, loop: asyncio.AbstractEventLoop) -> None:
        """The button, or a box driven through `ctl press` only while its pin cannot be
        opened: one journal line either way. A board with no pin driver at all (a VM, a
        box installed --no-gpio) is such a box by design. A pin that fails to open (a
        line another process holds at boot) shows error on the LEDs and in `ctl status`
        while idle, and is tried again as the audio keeper reopens its devices (a
        restart by systemd instead would take the audio and `ctl press` down with it,
        every few seconds while the line stays busy)."""
        if (failed := self._open_button(loop)) is None:
            return
        reason = f"button on GPIO {self.cfg.button.pin}: {gpio_failure(failed)}"
        if no_pin_driver(failed):
            log.error(
                "%s; the box answers only 'live-appliance ctl press'",
                reason,
                extra={"LIVE_ERROR": reason, "LIVE_DEVICE": "button"},
            )
            return
        self.button_failure = reason
        log.error(
            "%s; the box answers only 'live-appliance ctl press' until it opens "
            "(tried again in %.3g s, then less and less often)",
            reason,
            BUTTON_RETRY_S,
            extra={"LIVE_ERROR": reason, "LIVE_DEVICE": "button"},
        )
        self._start(self._retry_button(loop), "button-retry")

    def _open_button(self, loop: asyncio.AbstractEventLoop) -> Exception | None:
        """Open the button's pin; None when it opened, else what it failed with. A pin
        that reads pressed as it opens (something on the button, a short, the wrong pin)
        is not a press: nothing streams, and the button answers once it is let go. The
        box looks ready meanwhile, so the journal says why it does not answer."""
        try:
            self.button.start(loop)
        except Exception as exc:
            return exc
        if self.button.is_pressed:
            log.warning(
                "button on GPIO %d reads pressed as it opens (something on it, a short, or "
                "the wrong pin): not a press; the button answers once it is let go",
                self.cfg.button.pin,
                extra={"LIVE_DEVICE": "button"},
            )
        return None

    async def _retry_button(self, loop: asyncio.AbstractEventLoop) -> None:
        """Try the button's pin again until it opens; then say so and show the state again."""

        def open_button() -> None:
            if (failed := self._open_button(loop)) is not None:
                raise failed

        await _until_opened(open_button)
        self.button_failure = None
        log.info("button on GPIO %d is back", self.cfg.button.pin, extra={"LIVE_DEVICE": "button"})
        if self.leds is not None:
            await self.leds.show(self._led_state())
        self.notifier.status(self.status_line())

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """A task of ours that dies takes the daemon down with it, and systemd restarts
        it: better than a box that looks alive (the watchdog still fed) and answers nothing."""
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, DriverStuck):  # the hardware's state, not a bug: said in words
            why = str(exc)
            log.critical(
                "%s; stopping so that systemd restarts the service",
                exc,
                extra={"LIVE_ERROR": str(exc)},
            )
        else:
            why = f"{task.get_name()} failed: {exc!r}"
            log.critical(
                "%s failed; stopping so that systemd restarts the service",
                task.get_name(),
                exc_info=exc,
            )
        if not self.stopping.is_set():  # `systemctl status` shows why, past the restart too
            self.notifier.stopping(f"stopped: {why}; systemd starts it again")
        self.failed = True
        self.stopping.set()

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if sig is signal.SIGHUP and self.notifier.enabled and not self.stopping.is_set():
            log.info("SIGHUP: stopping, for systemd to start the service again")
            self.restart_asked = True
        self.notifier.stopping()
        self.stopping.set()

    async def _wait_for_microphone(self) -> None:
        """Ready means the microphone delivers: some devices take a while to start."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(MIC_START_TIMEOUT_S):
                await self.mic.delivering.wait()
        except TimeoutError:
            log.warning(
                "the microphone delivered nothing in %.0f s",
                MIC_START_TIMEOUT_S,
                extra={"LIVE_DEVICE": "microphone", "LIVE_ERROR": "delivered nothing"},
            )
            return
        self.microphone_wait_ms = round((time.monotonic() - started) * 1000, 1)
        log.info("microphone delivering after %.0f ms", self.microphone_wait_ms)

    async def _shutdown(self) -> None:
        """Close in the reverse order of need; the LEDs go dark whatever fails before."""
        try:
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            if self._watchdog_retry is not None:
                self._watchdog_retry.cancel()
            for task in [*self._tasks, self._drain_watch]:
                if task is not None and not task.done():  # a dead one was reported already
                    await stop_task(task)
            # Nothing more from the microphone or the camera, at once, as at a hang-up: the
            # connection lives on while the camera switches off (seconds on a Pi), and what
            # waits to be sent would be sent meanwhile, for a session that is over.
            self._stop_frames()
            self.mic_feed.stop()
            self.outbox.clear()
            await self.control.aclose()
            await self._camera_and_link_off(self.camera.shutdown())
            self.button.stop()
            await self.audio.close(workers.STOP_WAIT_S)
        finally:
            if self.leds is not None:
                await self.leds.aclose()
        current = asyncio.current_task()
        left = sorted(t.get_name() for t in asyncio.all_tasks() if t is not current)
        if left:
            log.warning("tasks left behind at shutdown: %s", ", ".join(left))
        self.notifier.stopped()
        self.notifier.close()
        log.info("stopped")


T = TypeVar("T")


async def _until_opened(open_it: Callable[[], T]) -> T:
    """What `open_it` opens, tried BUTTON_RETRY_S from now and again, each wait twice the
    last (up to REOPEN_MAX_S), until it no longer raises."""
    wait_s = BUTTON_RETRY_S
    while True:
        await asyncio.sleep(wait_s)
        try:
            return open_it()
        except Exception:
            wait_s = min(wait_s * 2, REOPEN_MAX_S)


def _press_taken_late(late_s: float, turn_s: float | None) -> None:
    """The journal's line for a press taken `late_s` after its edge, beyond what the ring
    keeps: its first words lost, or all of a question `turn_s` long released before them."""
    lost_s = late_s - PRESS_LAG_S
    if turn_s is not None and turn_s <= lost_s:
        log.warning(
            "the press was taken %.1f s after the button went down: the whole question "
            "(%.1f s) is lost",
            late_s,
            turn_s,
        )
        return
    log.warning(
        "the press was taken %.1f s after the button went down: its first %.1f s are lost",
        late_s,
        lost_s,
    )


def _saved_volume(state: StateFile, default: float) -> float:
    """The volume the set_volume tool last chose, else the configured one: also once the
    owner has changed `[audio] volume` since the tool chose (their edit is meant). Their
    edit forgets the tool's volume (an edit back must not bring it back), and a volume kept
    alone (an older version's file) is tied to the configured one of this start."""
    kept = state.load()
    if "volume" in kept and "volume_configured" not in kept:
        state.save(volume_configured=default)
    elif kept.get("volume_configured", default) != default:
        state.save(volume=default, volume_configured=default)
    return kept_volume(kept, default)


def exit_status(appliance: Appliance) -> int:
    """1 when one of its tasks died (systemd restarts it, counting a failure),
    RESTART_STATUS when a SIGHUP under systemd asked for a new start, else 0."""
    if appliance.failed:
        return 1
    return RESTART_STATUS if appliance.restart_asked else 0


def run_daemon(cfg: Config) -> int:
    logs.setup(secrets=[cfg.api_key.reveal()] if cfg.api_key else [])
    # systemd's watchdog aborts a loop that is stuck (SIGABRT), and a C library may crash
    # the process: each thread's stack goes to the journal first (function names and
    # lines, no values), or a hang that comes once a month is never found. One set already
    # (pytest's, PYTHONFAULTHANDLER's) stays: sys.stderr may be a capture nobody reads.
    if not faulthandler.is_enabled():
        faulthandler.enable()
    try:
        with single_instance(cfg.control.socket):
            appliance = Appliance(cfg)
            tasks.run(appliance.run())
            # Still locked: a call stuck in a driver holds its device until the process ends.
            return workers.exit_past_stuck(exit_status(appliance))
    except ControlError as exc:  # another daemon runs, or is still stopping
        log.error("%s", exc, extra={"LIVE_ERROR": str(exc)})
        return 1
