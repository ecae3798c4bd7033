"""The appliance's states, the events that move it, and what it does on each.

Pure code: `step(machine, event)` returns the next machine and a list of actions;
the appliance performs the actions (adapters, timers, the Live link). The same
state names are shown by the LEDs, written to the journal and returned by
`ctl status`, so one word means one thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class State(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ERROR = "error"


class Mode(StrEnum):
    PUSH_TO_TALK = "push_to_talk"
    TOGGLE = "toggle"


class Timer(StrEnum):
    IDLE = "idle"  # closes an open session nobody uses
    SILENCE = "silence"  # ends a hands-free conversation nobody speaks in
    ERROR = "error"  # how long the error pattern shows
    REPLY = "reply"  # push-to-talk: how long a turn may wait for its reply


# --- events: what happened -------------------------------------------------


@dataclass(frozen=True)
class Pressed:
    """The button went down (or `ctl press`)."""


@dataclass(frozen=True)
class Released:
    """The button came up (or `ctl release`)."""


@dataclass(frozen=True)
class LongPress:
    """The button has been held for `long_press_s`: hang up."""


@dataclass(frozen=True)
class SetupComplete:
    """The Live connection is ready; the outbox starts draining."""


@dataclass(frozen=True)
class ConnectFailed:
    reason: str


@dataclass(frozen=True)
class ConnectionLost:
    reason: str


@dataclass(frozen=True)
class Reconnecting:
    """The connection ended; the link is connecting again and the session lives on."""

    reason: str


@dataclass(frozen=True)
class Reconnected:
    """A new connection carries the session on; `history_lost` if it had to start afresh."""

    history_lost: bool = False


@dataclass(frozen=True)
class TextTurn:
    """Words to say into the session (`ctl text`, a home automation hook)."""

    text: str


@dataclass(frozen=True)
class EndConversation:
    """The model hangs up (the end_conversation tool): after its goodbye has played."""


@dataclass(frozen=True)
class DeviceFailed:
    """The microphone or the speaker failed or vanished; the appliance keeps reopening it."""

    device: str
    reason: str


@dataclass(frozen=True)
class DeviceRecovered:
    device: str


@dataclass(frozen=True)
class ReplyAudio:
    """The first audio of a reply arrived (later chunks are not events)."""


@dataclass(frozen=True)
class TurnComplete:
    """The server has finished the turn; what is buffered still plays."""


@dataclass(frozen=True)
class Interrupted:
    """The server stopped its reply because it heard new speech."""


@dataclass(frozen=True)
class PlaybackDrained:
    """The speaker has played everything it was given."""


@dataclass(frozen=True)
class Timeout:
    """A timer the machine asked for ran out."""

    timer: Timer


Event = (
    Pressed
    | Released
    | LongPress
    | SetupComplete
    | ConnectFailed
    | ConnectionLost
    | Reconnecting
    | Reconnected
    | TextTurn
    | EndConversation
    | DeviceFailed
    | DeviceRecovered
    | ReplyAudio
    | TurnComplete
    | Interrupted
    | PlaybackDrained
    | Timeout
)

# --- actions: what the appliance must do -------------------------------------


@dataclass(frozen=True)
class Action:
    """Something for the appliance to do; `arg` names the timer, earcon or reason."""

    name: str
    arg: str | float | None = None


OPEN_SESSION = Action("open_session")
CLOSE_SESSION = Action("close_session")
START_CAPTURE = Action("start_capture")
STOP_CAPTURE = Action("stop_capture")
FINISH_CAPTURE = Action("finish_capture")  # stop once the sound of the release is in
SEND_ACTIVITY_START = Action("send_activity_start")
SEND_ACTIVITY_END = Action("send_activity_end")
CLEAR_PLAYBACK = Action("clear_playback")
DROP_OUTBOX = Action("drop_outbox")


def earcon(name: str) -> Action:
    return Action("earcon", name)


def send_text(text: str) -> Action:
    return Action("send_text", text)


def start_timer(name: Timer) -> Action:
    return Action("start_timer", name)


def cancel_timer(name: Timer) -> Action:
    return Action("cancel_timer", name)


@dataclass(frozen=True)
class Machine:
    """The state plus the few facts the transitions depend on."""

    mode: Mode = Mode.PUSH_TO_TALK
    state: State = State.IDLE
    session_open: bool = False
    connected: bool = False
    held: bool = False  # push-to-talk: the button is down, the microphone streams
    reply_done: bool = False  # turnComplete seen, the speaker may still be playing
    faults: frozenset[str] = frozenset()  # audio devices that are missing or failing
    ending: bool = False  # hang up once the reply in progress is over
    error: str = ""  # what the error state is about, in words

    def to(self, state: State, **changes: bool) -> Machine:
        return replace(self, state=state, **changes)

    def reset(self, state: State = State.IDLE, error: str = "") -> Machine:
        """No session and nothing in progress; only the mode and the faults remain."""
        return Machine(mode=self.mode, state=state, faults=self.faults, error=error)


Step = tuple[Machine, list[Action]]


def step(m: Machine, event: Event) -> Step:
    """The transition table: one case per (event, situation), read top to bottom."""
    ptt = m.mode is Mode.PUSH_TO_TALK
    match event:
        case DeviceFailed(device, reason):
            return _device_failed(m, device, reason)
        case DeviceRecovered(device):
            faults = m.faults - {device}
            if not faults and m.state is State.ERROR:
                return replace(m, faults=faults).reset(), []
            return replace(m, faults=faults), []
        case Pressed() | TextTurn() if m.faults:
            return m, [earcon("error")]

        case Pressed() if ptt:
            return _start_talking(m)
        case Pressed() if m.session_open:  # toggle: a second press ends the conversation
            return _hang_up(m)
        case Pressed():
            return _start_conversation(m)

        case Released() if ptt and m.held:
            return _stop_talking(m)
        case Released():
            return m, []

        case LongPress() if ptt and m.session_open:
            return _hang_up(m)
        case LongPress():
            return m, []

        case TextTurn(text) if not ptt and not m.session_open:
            conversation, actions = _start_conversation(m)
            return conversation, [*actions, send_text(text)]
        case TextTurn(text) if ptt and not m.held:
            actions = [cancel_timer(Timer.IDLE), cancel_timer(Timer.ERROR)]
            if not m.session_open:
                actions.append(OPEN_SESSION)
            state = State.THINKING if m.connected else State.CONNECTING
            actions += [send_text(text), start_timer(Timer.REPLY)]
            return m.to(state, session_open=True, reply_done=False), actions
        case TextTurn(text):
            return m, [send_text(text)]

        case EndConversation() if m.session_open and (
            m.state in (State.THINKING, State.SPEAKING)
            or (not ptt and m.state is State.LISTENING)  # hands-free: its goodbye comes next
        ):
            return m.to(m.state, ending=True), []
        case EndConversation() if m.session_open:
            return _hang_up(m)
        case EndConversation():
            return m, []

        case SetupComplete() if m.session_open:
            return _connected(m)
        case Reconnected(history_lost) if m.session_open:
            ready, actions = _connected(m)
            return ready, [*actions, earcon("restart")] if history_lost else actions
        case SetupComplete() | Reconnected():
            return m, []

        case Reconnecting() if m.session_open:
            waiting = m.to(m.state, connected=False)
            if m.state is State.THINKING:  # the reply went with the connection: ask again
                return _turn_over(waiting, [earcon("error")])
            if m.state is State.SPEAKING:  # play what arrived, then the turn is over
                return waiting.to(State.SPEAKING, reply_done=True), []
            return waiting, []
        case Reconnecting():
            return m, []

        case ConnectFailed(reason) | ConnectionLost(reason):
            if not m.session_open:
                return m, []
            return _fail(m, reason)

        case ReplyAudio() if m.session_open and m.state is not State.ERROR:
            if m.held:  # push-to-talk: the person is talking; the press cleared playback
                return m, []
            actions = [cancel_timer(Timer.SILENCE), cancel_timer(Timer.REPLY)]
            return m.to(State.SPEAKING, reply_done=False), actions
        case ReplyAudio():
            return m, []

        case TurnComplete() if m.state is State.SPEAKING:
            return m.to(State.SPEAKING, reply_done=True), []
        case TurnComplete() if m.state is State.THINKING:
            return _turn_over(m)
        case TurnComplete():
            return m, []

        case PlaybackDrained() if m.state is State.SPEAKING and m.reply_done:
            return _turn_over(m)
        case PlaybackDrained():
            return m, []

        case Interrupted() if m.state in (State.SPEAKING, State.THINKING):
            if ptt:
                return _turn_over(m, [CLEAR_PLAYBACK])
            return m.to(State.LISTENING, reply_done=False), [CLEAR_PLAYBACK]
        case Interrupted():
            return m, [CLEAR_PLAYBACK]

        case Timeout(Timer.IDLE) if m.session_open and m.state is State.IDLE:
            return m.to(State.IDLE, session_open=False, connected=False), [CLOSE_SESSION]
        case Timeout(Timer.REPLY) if m.state is State.THINKING:  # never left hanging
            return _turn_over(m, [earcon("error")])
        case Timeout(Timer.SILENCE) if not ptt and m.state is State.LISTENING:
            return _hang_up(m)
        case Timeout(Timer.ERROR) if m.state is State.ERROR and not m.faults:
            return replace(m, state=State.IDLE, error=""), []
        case Timeout():
            return m, []
    raise TypeError(f"not an event: {event!r}")


def _connected(m: Machine) -> Step:
    """A connection is ready: a press or a text turn waiting for it goes ahead."""
    ready = m.to(m.state, connected=True)
    if m.state is not State.CONNECTING:
        return ready, []
    if m.held or m.mode is Mode.TOGGLE:
        return ready.to(State.LISTENING), []
    # The turn was handed over while connecting; its reply is awaited from now on.
    return ready.to(State.THINKING), [start_timer(Timer.REPLY)]


def _start_talking(m: Machine) -> Step:
    """Push-to-talk press: capture at once; the outbox holds it until the session is ready."""
    barge_in = [CLEAR_PLAYBACK] if m.state in (State.SPEAKING, State.THINKING) else []
    actions = [*barge_in, cancel_timer(Timer.IDLE), cancel_timer(Timer.ERROR)]
    actions.append(cancel_timer(Timer.REPLY))
    if not m.session_open:
        actions.append(OPEN_SESSION)
    actions += [SEND_ACTIVITY_START, START_CAPTURE, earcon("listen_start")]
    state = State.LISTENING if m.connected else State.CONNECTING
    return m.to(state, session_open=True, held=True, reply_done=False), actions


def _stop_talking(m: Machine) -> Step:
    actions = [FINISH_CAPTURE, SEND_ACTIVITY_END, earcon("listen_end"), start_timer(Timer.REPLY)]
    state = State.THINKING if m.connected else State.CONNECTING
    return m.to(state, held=False), actions


def _start_conversation(m: Machine) -> Step:
    """Wake button: a hands-free conversation with the server's activity detection."""
    actions = [cancel_timer(Timer.ERROR), OPEN_SESSION, START_CAPTURE, earcon("listen_start")]
    actions.append(start_timer(Timer.SILENCE))
    return m.to(State.CONNECTING, session_open=True, connected=False, reply_done=False), actions


def _turn_over(m: Machine, first: list[Action] | None = None) -> Step:
    """The reply has been heard (or cut): wait for the next press or speech."""
    actions = [*(first or []), cancel_timer(Timer.REPLY)]
    if m.ending:
        hung_up, hang_up_actions = _hang_up(m)
        return hung_up, [*actions, *hang_up_actions]
    if m.mode is Mode.TOGGLE:
        return m.to(State.LISTENING, reply_done=False), [*actions, start_timer(Timer.SILENCE)]
    return m.to(State.IDLE, reply_done=False), [*actions, start_timer(Timer.IDLE)]


def _hang_up(m: Machine) -> Step:
    return m.reset(), [*_END_SESSION, earcon("listen_end")]


def _fail(m: Machine, reason: str) -> Step:
    """The session failed: end it, show the error a while, then idle (the next press retries)."""
    actions = [*_END_SESSION, earcon("error"), start_timer(Timer.ERROR)]
    return m.reset(State.ERROR, error=reason), actions


def _device_failed(m: Machine, device: str, reason: str) -> Step:
    """An audio device is gone: no conversation is possible until it is back."""
    actions = [*_END_SESSION, earcon("error")] if m.session_open else [earcon("error")]
    failed = replace(m, faults=m.faults | {device}).reset(State.ERROR, f"{device}: {reason}")
    return failed, [*actions, cancel_timer(Timer.ERROR)]


_END_SESSION = (
    STOP_CAPTURE,
    CLEAR_PLAYBACK,
    DROP_OUTBOX,
    CLOSE_SESSION,
    cancel_timer(Timer.IDLE),
    cancel_timer(Timer.SILENCE),
    cancel_timer(Timer.REPLY),
)
