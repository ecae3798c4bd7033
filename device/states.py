"""The appliance's states, the events that move it, and what it does on each.

Pure code: `step(machine, event)` returns the next machine and a list of actions;
the appliance performs the actions (adapters, timers, the Live link). Events and
actions are closed sets of frozen dataclasses, so a type checker proves that the
appliance performs every action there is. The same state names are shown by the
LEDs, written to the journal and returned by `ctl status`, so one word means one
thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


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
    """The machine's timers: each bounds a wait that would otherwise have no end."""

    IDLE = "idle"  # closes an open session nobody uses
    SILENCE = "silence"  # ends what the microphone streams when nobody speaks
    ERROR = "error"  # how long the error pattern shows
    REPLY = "reply"  # how long a reply may take to start, or to go on
    LONG_REPLY = "long_reply"  # how long one reply may play: a service streaming without end
    #: How long the model's tool calls may go unanswered (their [tools] timeout_s, and time
    #: for the answer to go out): while one works, the model waits, and REPLY with it (or,
    #: hands-free before the reply's first word, SILENCE).
    TOOL = "tool"
    #: How long the microphone may stream at one go, whatever the room's sound (a TV keeps
    #: SILENCE from running out): a held press, or a hands-free conversation.
    OPEN_MIC = "open_mic"


class Earcon(StrEnum):
    LISTEN_START = "listen_start"  # rising: "go ahead"
    LISTEN_END = "listen_end"  # falling: "got it"
    ERROR = "error"  # low and falling: "something is wrong"
    RESTART = "restart"  # "we had to start afresh"


# --- events: what happened -------------------------------------------------


@dataclass(frozen=True)
class Pressed:
    """The button went down (or `ctl press`)."""

    #: When (time.monotonic()), as the edge was seen: the person may be talking from then
    #: on, however long the machine takes to get to the press. None: when it is taken.
    at: float | None = None
    #: Push-to-talk: the release (time.monotonic()) of a press taken so late that all that
    #: was said between its edge and that release is gone from the ring (`appliance`): a
    #: turn would be empty. None for a press whose words are there, or not all gone.
    lost_at_release: float | None = None


@dataclass(frozen=True)
class Released:
    """The button came up (or `ctl release`)."""

    #: When (time.monotonic()), as the edge was seen: the turn ends there, however long
    #: the machine takes to get to the release. None: when it is taken.
    at: float | None = None


@dataclass(frozen=True)
class LongPress:
    """The button has been held for `long_press_s`: hang up (not while someone talks)."""


@dataclass(frozen=True)
class TextTurn:
    """Words to say into the session (`ctl text`, a home automation hook)."""

    text: str


@dataclass(frozen=True)
class SpeechHeard:
    """The person is talking: the microphone's level, or the service's transcription of it
    (which a text turn may bring too: nobody need be there). `from_the_room`: the
    microphone heard it while the box's own speaker was silent (its beep, or the reply's
    echo, cannot have been the one talking). `soft`: a voice under `speech_dbfs` (a child,
    a HAT with a low gain): it keeps no silence open, but a press it is heard in is a
    question, not the silence a long press hangs up in."""

    from_the_room: bool = False
    soft: bool = False


@dataclass(frozen=True)
class TalkedOver:
    """Hands-free, the person has been talking over the box a moment (the echo canceller
    keeps its own voice out of what the microphone hears)."""


@dataclass(frozen=True)
class DeviceFailed:
    """The microphone or the speaker failed or vanished; the appliance keeps reopening it."""

    device: str
    reason: str


@dataclass(frozen=True)
class DeviceRecovered:
    device: str


@dataclass(frozen=True)
class PlaybackDrained:
    """The speaker has played everything it was given."""


@dataclass(frozen=True)
class Timeout:
    """A timer the machine asked for ran out."""

    timer: Timer


@dataclass(frozen=True)
class Heartbeat:
    """The watchdog's tick, sent through the same queue as a press: answered only while
    the machine is handling events."""


@dataclass(frozen=True, kw_only=True)
class LinkEvent:
    """Something from the Live link, about the session it belongs to (`OpenSession.session`).

    An event of a session that has been closed changes nothing.
    """

    session: int


@dataclass(frozen=True, kw_only=True)
class SetupComplete(LinkEvent):
    """The Live connection is ready; the outbox starts draining."""


@dataclass(frozen=True, kw_only=True)
class ConnectFailed(LinkEvent):
    reason: str


@dataclass(frozen=True, kw_only=True)
class ConnectionLost(LinkEvent):
    reason: str


@dataclass(frozen=True, kw_only=True)
class Reconnecting(LinkEvent):
    """The connection ended; the link is connecting again and the session lives on.
    `reply_lost`: a reply was awaited or arriving on it (a turn still in the outbox is
    sent on the next connection and answered there)."""

    reason: str
    reply_lost: bool = True


@dataclass(frozen=True, kw_only=True)
class Reconnected(LinkEvent):
    """A new connection carries the session on; `history_lost` if it had to start afresh."""

    history_lost: bool = False


@dataclass(frozen=True, kw_only=True)
class ReplyAudio(LinkEvent):
    """A chunk of the model's reply (24 kHz mono s16le).

    `talked_over`: it belongs to a reply the person spoke over on the wire (the
    service has not yet said it stopped); the same flag on `TurnComplete` and
    `Interrupted` marks that reply's end. `replaces`: the first audio of a reply to
    something the person said after the last reply ended (not the model going on
    after a tool's answer).
    """

    pcm: bytes = b""
    talked_over: bool = False
    replaces: bool = False


@dataclass(frozen=True, kw_only=True)
class TurnComplete(LinkEvent):
    """The server has finished the turn; what is buffered still plays."""

    talked_over: bool = False
    #: The model works on (its interaction is IN_PROGRESS): more of the reply may follow.
    more_to_come: bool = False
    #: The turn came whole and played on from the next connection ("let me look that up"),
    #: but the tool's answer, or the reply to it, went with the connection before.
    answer_lost: bool = False


@dataclass(frozen=True, kw_only=True)
class Interrupted(LinkEvent):
    """The server stopped its reply because it heard new speech."""

    talked_over: bool = False


@dataclass(frozen=True, kw_only=True)
class ReplyDropped(LinkEvent):
    """The reply the person talked over had come whole: the service has nothing left to
    interrupt (it answers them instead), so the box dropped the rest of it itself."""


@dataclass(frozen=True, kw_only=True)
class ToolsAtWork(LinkEvent):
    """A tool call of the model's started, or its answer went out (or it was withdrawn):
    `calls` are still unanswered."""

    calls: int


@dataclass(frozen=True, kw_only=True)
class EndConversation(LinkEvent):
    """The model hangs up (the end_conversation tool): after its goodbye has played."""


Event = (
    Pressed
    | Released
    | LongPress
    | TextTurn
    | SpeechHeard
    | TalkedOver
    | DeviceFailed
    | DeviceRecovered
    | PlaybackDrained
    | Timeout
    | Heartbeat
    | SetupComplete
    | ConnectFailed
    | ConnectionLost
    | Reconnecting
    | Reconnected
    | ReplyAudio
    | TurnComplete
    | Interrupted
    | ReplyDropped
    | ToolsAtWork
    | EndConversation
)

# --- actions: what the appliance must do -------------------------------------


@dataclass(frozen=True)
class OpenSession:
    """Start Live session number `session`; its events carry the number."""

    session: int


@dataclass(frozen=True)
class CloseSession:
    """End the session: the camera goes dark first, then the connection closes."""


@dataclass(frozen=True)
class StartCapture:
    """The microphone (after its pre-roll, with `preroll`) and, with `camera`, the camera go
    to the service from now on."""

    camera: bool = True
    #: A press over the box's own voice: the moments before it are that voice (push-to-talk
    #: has no echo canceller), not the person's first syllable.
    preroll: bool = True
    #: The press's edge (`Pressed.at`): what was said from then on goes too, however late
    #: the press was taken. None: from when the capture starts.
    since: float | None = None


@dataclass(frozen=True)
class StopCapture:
    """Nothing more from the microphone or the camera, at once."""


@dataclass(frozen=True)
class FinishCapture:
    """Stop once the sound of the release is in (the chunk holding its instant has gone)."""

    #: The release's edge (`Released.at`); None: now (a turn ended by a timer).
    released: float | None = None


@dataclass(frozen=True)
class StopCamera:
    """The camera off now, not after its linger: nobody is talking to the box."""


@dataclass(frozen=True)
class StartCamera:
    """Frames from now on (a person spoke into a conversation a text turn opened); nothing
    changes if they already go."""


@dataclass(frozen=True)
class GateMicrophone:
    """Hands-free, while the model speaks: keep the speaker out of what is sent."""

    gated: bool


@dataclass(frozen=True)
class SendActivityStart:
    pass


@dataclass(frozen=True)
class SendActivityEnd:
    pass


@dataclass(frozen=True)
class SendText:
    text: str


@dataclass(frozen=True)
class PlayReply:
    """Queue a chunk of the reply for the speaker."""

    pcm: bytes


@dataclass(frozen=True)
class ClearPlayback:
    """Silence now: drop everything the speaker has not played (a barge-in)."""


@dataclass(frozen=True)
class SupersedeReply:
    """A press or a text turn over the reply: what still comes of it is stale (marked so
    with the speaker's clearing, before the rest read ahead can refill it)."""


@dataclass(frozen=True)
class DropWholeReply:
    """The person talks over the reply: if the service sent all of it, drop its rest here
    (`ReplyDropped` follows); if it still streams, the service interrupts it."""


@dataclass(frozen=True)
class AwaitDrain:
    """The reply is all in: tell the machine (`PlaybackDrained`) once it has played."""


@dataclass(frozen=True)
class DropOutbox:
    """Forget what waits to be sent: the session it was for is over."""


@dataclass(frozen=True)
class PlayEarcon:
    earcon: Earcon


@dataclass(frozen=True)
class SayQuestionLost:
    """The journal's line for a press taken so late (from its edge `at`) that all of its
    question, released at `up`, is gone: only for a press the machine took as such."""

    at: float
    up: float


@dataclass(frozen=True)
class StartTimer:
    """(Re)start a timer; `Timeout(timer)` comes when it runs out."""

    timer: Timer


@dataclass(frozen=True)
class CancelTimer:
    timer: Timer


@dataclass(frozen=True)
class FeedWatchdog:
    """Tell systemd the appliance answers (the heartbeat went through the machine)."""


Action = (
    OpenSession
    | CloseSession
    | StartCapture
    | StopCapture
    | FinishCapture
    | StopCamera
    | StartCamera
    | GateMicrophone
    | SendActivityStart
    | SendActivityEnd
    | SendText
    | PlayReply
    | ClearPlayback
    | SupersedeReply
    | DropWholeReply
    | AwaitDrain
    | DropOutbox
    | PlayEarcon
    | SayQuestionLost
    | StartTimer
    | CancelTimer
    | FeedWatchdog
)

#: States of a turn whose reply is awaited or playing.
_REPLYING = (State.THINKING, State.SPEAKING)


@dataclass(frozen=True)
class Machine:
    """The state plus the few facts the transitions depend on."""

    mode: Mode = Mode.PUSH_TO_TALK
    state: State = State.IDLE
    session_open: bool = False
    session: int = 0  # the number of the session open now, or of the last one
    connected: bool = False
    held: bool = False  # push-to-talk: the button is down, the microphone streams
    #: Push-to-talk: the room's speech was heard during this press (a long press is then
    #: someone asking a long question, not a hang-up).
    spoke: bool = False
    reply_done: bool = False  # turnComplete seen, the speaker may still be playing
    more_to_come: bool = False  # ...but the model works on: think once it has played
    #: The audio devices missing or failing, each with why, in the order they failed.
    device_faults: tuple[tuple[str, str], ...] = ()
    ending: bool = False  # hang up once the reply in progress is over
    #: Hands-free, `longest_conversation_s` ran out during a reply: the conversation ends
    #: with it (`ending`), whatever is said over it (OPEN_MIC bounds it no more).
    overtime: bool = False
    #: The reply playing came whole, and what was to follow it (the reply to a tool's
    #: answer, more the model worked on) went with the connection: the error earcon once
    #: it has played. Only while it plays (`step`).
    answer_lost: bool = False
    #: Push-to-talk: the session started afresh while the button was held; the restart
    #: earcon waits for the release, not to be sent to the service in the question.
    afresh: bool = False
    error: str = ""  # what the error state is about, in words
    timers: frozenset[Timer] = frozenset()  # armed: each will come back as a Timeout

    def to(self, state: State, **changes: Any) -> Machine:
        return replace(self, state=state, **changes)

    def reset(self, state: State = State.IDLE, error: str = "") -> Machine:
        """No session and nothing in progress; the mode, faults, timers and count remain."""
        return Machine(
            mode=self.mode,
            state=state,
            session=self.session,
            device_faults=self.device_faults,
            error=error,
            timers=self.timers,
        )

    @property
    def faults(self) -> frozenset[str]:
        """The audio devices missing or failing: no conversation until they are back."""
        return frozenset(device for device, _ in self.device_faults)

    @property
    def reply_over(self) -> bool:
        """All of the reply came and nothing more of it follows; it may still be playing."""
        return self.reply_done and not self.more_to_come

    @property
    def gated(self) -> bool:
        """Hands-free while the model speaks: the microphone must not carry the speaker."""
        return self.mode is Mode.TOGGLE and self.state is State.SPEAKING


Step = tuple[Machine, list[Action]]


def step(m: Machine, event: Event) -> Step:
    """One event: the transition, then what follows from the change itself (the
    microphone's gate, waiting for the drain) and the timers it leaves armed."""
    if isinstance(event, Timeout):
        if event.timer not in m.timers:
            return m, []  # cancelled while its Timeout was already on its way
        m = replace(m, timers=m.timers - {event.timer})
    if isinstance(event, LinkEvent) and not (m.session_open and event.session == m.session):
        return m, []  # from a session that is over: it cannot touch the one open now
    after, actions = _transition(m, event)
    if after.answer_lost and not (after.state is State.SPEAKING and after.reply_done):
        after = replace(after, answer_lost=False)  # it ended otherwise (a press, new words)
    if after.state is State.LISTENING and not after.connected:
        # Between connections (a reconnect) the LEDs say so, not listening: what the
        # microphone hears is held for the next connection, as while first connecting.
        after = after.to(State.CONNECTING)
    if after.gated != m.gated:
        # Ungated before a session ends: its close awaits the camera and the connection,
        # and a microphone muted through it would drop what the next press reaches back
        # to (from its button's edge, with the pre-roll).
        ends = next((i for i, a in enumerate(actions) if isinstance(a, StopCapture)), None)
        actions.insert(len(actions) if ends is None else ends, GateMicrophone(after.gated))
    if after.reply_done and not m.reply_done:
        actions.append(AwaitDrain())
    if "speaker" in after.faults:  # no earcon into a speaker that is not there
        actions = [a for a in actions if not isinstance(a, PlayEarcon)]
    return replace(after, timers=_armed(after.timers, actions)), actions


def _armed(timers: frozenset[Timer], actions: list[Action]) -> frozenset[Timer]:
    for action in actions:
        match action:
            case StartTimer(timer):
                timers = timers | {timer}
            case CancelTimer(timer):
                timers = timers - {timer}
    return timers


def _transition(m: Machine, event: Event) -> Step:
    """The transition table: one case per (event, situation), read top to bottom."""
    ptt = m.mode is Mode.PUSH_TO_TALK
    working = Timer.TOOL in m.timers  # a tool call of this reply's is unanswered
    # Hands-free, thinking before the reply has begun: only a tool called while the box
    # listened gets it there (a reply's first part, or the model saying it works on,
    # starts LONG_REPLY).
    tool_first = not ptt and m.state is State.THINKING and Timer.LONG_REPLY not in m.timers
    match event:
        case Heartbeat():
            return m, [FeedWatchdog()]
        case DeviceFailed(device, reason):
            return _device_failed(m, device, reason)
        case DeviceRecovered(device):
            left = tuple(fault for fault in m.device_faults if fault[0] != device)
            if m.state is not State.ERROR:
                return replace(m, device_faults=left), []
            if not left:
                return replace(m, device_faults=left).reset(), []
            # Still in error for the devices left: the words say those, not the one back.
            return replace(m, device_faults=left, error=_fault_words(left)), []
        case Pressed() | TextTurn() if m.faults:
            return m, [PlayEarcon(Earcon.ERROR)]

        case Pressed() if ptt and m.held:
            return m, []  # pressed already (`ctl press` twice): one turn, one earcon
        case Pressed(float() as at, float() as up) if ptt and m.state is not State.SPEAKING:
            # An empty turn would be answered all the same, a question nobody asked: the
            # person is told theirs was not heard.
            return m, [PlayEarcon(Earcon.ERROR), SayQuestionLost(at, up)]
        case Pressed(float() as at, float() as up) if ptt:
            # Over the reply a press is taken from when it silences the box, whatever was
            # said before: what was said before is still lost.
            talking, actions = _start_talking(m, at)
            return talking, [*actions, SayQuestionLost(at, up)]
        case Pressed(at) if ptt:
            return _start_talking(m, at)
        case Pressed() if m.session_open:  # toggle: a second press ends the conversation
            return _hang_up(m)
        case Pressed(at):
            return _start_conversation(m, since=at)

        case Released(at) if ptt and m.held:
            return _stop_talking(m, at)
        case Released():
            return m, []

        case LongPress() if ptt and m.held and m.spoke:
            return m, []  # someone talking while they hold the button: the release ends it
        case LongPress() if ptt and m.session_open:
            return _hang_up(m)
        case LongPress():
            return m, []

        case SpeechHeard(from_the_room, soft=True):
            return replace(m, spoke=m.spoke or (ptt and m.held and from_the_room)), []
        case SpeechHeard(from_the_room) if Timer.SILENCE in m.timers:  # from the last word
            camera = [StartCamera()] if from_the_room and not ptt else []
            spoke = m.spoke or (ptt and m.held and from_the_room)
            return replace(m, spoke=spoke), [StartTimer(Timer.SILENCE), *camera]
        case SpeechHeard(from_the_room=True) if tool_first:
            return m, [StartCamera()]  # the silence waits for the tool, not the camera
        case SpeechHeard():
            return m, []
        case TalkedOver() if not ptt and m.state is State.SPEAKING:
            return m, [DropWholeReply()]
        case TalkedOver():
            return m, []

        case TextTurn(text) if not ptt and not m.session_open:
            # A hook's words may come to an empty room: the camera waits for a person.
            conversation, actions = _start_conversation(m, pressed=False)
            return conversation, [*actions, SendText(text)]
        case TextTurn(text) if ptt and not m.held:
            # A new reply: its longest_reply_s counts from its own first part.
            asking: list[Action] = [
                CancelTimer(Timer.IDLE),
                CancelTimer(Timer.ERROR),
                CancelTimer(Timer.LONG_REPLY),
                CancelTimer(Timer.TOOL),
            ]
            if m.state in _REPLYING:  # a new question, as a press is: the old reply stops
                asking[:0] = _SILENCE_REPLY
            opened = m
            if not m.session_open:
                opened, opening = _open(m)
                asking.append(opening)
            state = State.THINKING if m.connected else State.CONNECTING
            asking += [SendText(text), StartTimer(Timer.REPLY)]
            return opened.to(state, reply_done=False), asking
        case TextTurn(text) if m.state is State.SPEAKING and not m.ending:  # stops the reply
            listening, actions = _turn_over(m, list(_SILENCE_REPLY))
            return listening, [*actions, SendText(text)]
        case TextTurn(text) if not ptt and Timer.SILENCE in m.timers:
            # Hands-free, words said into the conversation as the person's are: the
            # silence that hangs up counts from them, or it ran out as they were answered.
            return m, [SendText(text), StartTimer(Timer.SILENCE)]
        case TextTurn(text):
            return m, [SendText(text)]

        case EndConversation() if ptt and m.held:
            return m, []  # the goodbye's call, behind a press over it: they go on talking
        case EndConversation() if m.state in _REPLYING:
            return m.to(m.state, ending=True), []
        case EndConversation() if not ptt and m.state is State.LISTENING:
            # Hands-free, the call comes before the goodbye's audio: wait for it, a while.
            return m.to(m.state, ending=True), [StartTimer(Timer.REPLY)]
        case EndConversation():
            return _hang_up(m)

        case SetupComplete():
            return _connected(m)
        case Reconnected(history_lost=history_lost):
            ready, actions = _connected(m)
            told = history_lost and m.state is not State.IDLE  # not to an empty room
            if told and ptt and m.held:
                return replace(ready, afresh=True), actions
            return ready, [*actions, PlayEarcon(Earcon.RESTART)] if told else actions

        case Reconnecting(reply_lost=reply_lost):
            waiting = m.to(m.state, connected=False)
            if m.state is State.THINKING and reply_lost:  # it went with the connection
                return _turn_over(waiting, [PlayEarcon(Earcon.ERROR)])
            if not ptt and m.state is State.LISTENING and reply_lost and not m.ending:
                # Hands-free, a reply owed to a tool's answer (the call ended with the
                # connection and said so first) or to a text turn: the person is told, as
                # push-to-talk is, not left waiting for it until the silence hangs up.
                return _turn_over(waiting, [PlayEarcon(Earcon.ERROR)])
            if m.state is State.SPEAKING and (reply_lost or working):
                # Play what arrived, then the turn is over. A reply that came whole has its
                # end in already, or plays on from the next connection, its end with it.
                # Words that came whole ("let me look that up") sound like a whole answer:
                # what was to follow them is lost, and the error earcon says so after them.
                lost = m.reply_done and not m.ending
                over = waiting.to(
                    State.SPEAKING, reply_done=True, more_to_come=False, answer_lost=lost
                )
                # Its tools went with the connection: the reply timer watches the playing.
                gone: list[Action] = [CancelTimer(Timer.TOOL), StartTimer(Timer.REPLY)]
                return over, gone if working else []
            if m.state is State.SPEAKING and not m.reply_done:
                # The reply came whole; its rest plays on from the next connection. Once
                # what arrived has played, the box thinks (as when the model works on): not
                # "speaking" in silence for the whole reconnect, the microphone gated.
                return waiting.to(State.SPEAKING, reply_done=True, more_to_come=True), []
            return waiting, []

        case ConnectionLost() if m.state is State.IDLE:
            # A push-to-talk session nobody was using: it ends quietly (the journal says
            # why); no beep and no red in an empty room. The next press connects afresh.
            return m.reset(), list(_END_SESSION)
        case ConnectFailed(reason=reason) | ConnectionLost(reason=reason):
            return _fail(m, reason)

        case ReplyAudio(talked_over=True) | TurnComplete(talked_over=True):
            return m, []  # the reply the person spoke over: not theirs to hear any more
        case Interrupted(talked_over=True):
            return m, []
        case ReplyAudio() if m.held:
            return m, []  # push-to-talk: the person is talking; the press cleared playback
        case ReplyAudio(pcm=pcm, replaces=True) if m.state is State.SPEAKING and m.reply_over:
            # A reply to words said over the last one after the service had sent all of it
            # (it then interrupts nothing; it answers), or to a text turn: the rest of the
            # last one, still playing, is stale. Its longest_reply_s is its own, but not
            # once the conversation ends (past its longest, a goodbye, idle) nor where no
            # press asked for it: each chained to the next before the speaker drained (a
            # TV's words transcribed) would keep the box speaking and listening for good.
            going_on = (ptt or m.ending) and Timer.LONG_REPLY in m.timers
            starts = [StartTimer(Timer.REPLY)] if going_on else list(_REPLY_STARTS)
            playing = m.to(State.SPEAKING, reply_done=False)
            return playing, [ClearPlayback(), PlayReply(pcm), *starts]
        case ReplyAudio(pcm=pcm) if m.state is State.SPEAKING:
            return m.to(State.SPEAKING, reply_done=False), [PlayReply(pcm), StartTimer(Timer.REPLY)]
        case ReplyAudio(pcm=pcm):
            # The model went on after a part of its reply (more to come): the same reply,
            # its longest_reply_s counted from its first part, not again from this one.
            going_on = Timer.LONG_REPLY in m.timers
            starts = [StartTimer(Timer.REPLY)] if going_on else list(_REPLY_STARTS)
            actions = [CancelTimer(Timer.SILENCE), PlayReply(pcm), *starts]
            return m.to(State.SPEAKING, reply_done=False), actions

        case TurnComplete(more_to_come=more, answer_lost=lost) if m.state is State.SPEAKING:
            lost = lost and not m.ending
            return m.to(State.SPEAKING, reply_done=True, more_to_come=more, answer_lost=lost), []
        case TurnComplete(more_to_come=True) if m.state is State.THINKING or (
            not ptt and m.state is State.LISTENING
        ):
            # Still working: the reply timer starts again; the reply has begun, without a
            # word yet, and its longest_reply_s counts from here if nothing came before.
            # Hands-free a reply is owed from then on: the box thinks, and the silence
            # waits for it (the person waits for it too, saying nothing).
            longest = [] if Timer.LONG_REPLY in m.timers else [StartTimer(Timer.LONG_REPLY)]
            owed: list[Action] = [] if ptt else [CancelTimer(Timer.SILENCE)]
            return m.to(State.THINKING), [*owed, StartTimer(Timer.REPLY), *longest]
        case TurnComplete() if m.state is State.THINKING and working:
            return m, []  # the model goes on with the tool's answer
        case TurnComplete() if m.state is State.THINKING:
            return _turn_over(m)
        case TurnComplete() if m.ending:  # the goodbye turn ended without a word
            return _hang_up(m)
        case TurnComplete():
            return m, []

        case PlaybackDrained() if m.state is State.SPEAKING and m.reply_done and m.answer_lost:
            return _turn_over(m, [PlayEarcon(Earcon.ERROR)])
        case PlaybackDrained() if m.state is State.SPEAKING and m.reply_done and m.more_to_come:
            return m.to(State.THINKING, reply_done=False), [StartTimer(Timer.REPLY)]
        case PlaybackDrained() if m.state is State.SPEAKING and m.reply_done and working:
            return m.to(State.THINKING, reply_done=False), []  # a tool's answer awaited
        case PlaybackDrained() if m.state is State.SPEAKING and m.reply_done:
            return _turn_over(m)
        case PlaybackDrained():
            return m, []

        case Interrupted() if ptt and m.held:
            return m, []  # the press silenced the reply: what plays is its "go ahead" beep
        case Interrupted() if m.state in _REPLYING or (not ptt and m.ending):
            # Hands-free, the person talked over it: over the goodbye too ("wait, one more
            # thing"), the conversation goes on, as after a press over it; so it does when
            # they went on before its first word, the goodbye stopped for them.
            return _turn_over(m if ptt else m.to(m.state, ending=m.overtime), [ClearPlayback()])
        case Interrupted():
            return m, [ClearPlayback()]
        case ReplyDropped() if m.state is State.SPEAKING:
            return _turn_over(m if ptt else m.to(m.state, ending=m.overtime), [ClearPlayback()])
        case ReplyDropped():
            return m, []

        case ToolsAtWork(calls=calls) if calls > 0 and (
            tool_first or (not ptt and m.state is State.LISTENING)
        ):
            # Hands-free, the model calls a tool before a word ("what time is it?"): the
            # box works, and the silence waits for it (TOOL bounds the wait). The person is
            # still heard, the microphone open, as whenever it thinks.
            held: list[Action] = [CancelTimer(Timer.SILENCE), CancelTimer(Timer.REPLY)]
            return m.to(State.THINKING), [*held, StartTimer(Timer.TOOL)]
        case ToolsAtWork(calls=calls) if calls <= 0 and working and not ptt and (
            m.state is State.THINKING
        ):
            # Hands-free, nothing playing: the answer went out (or the call was withdrawn,
            # the person speaking again). The reply is awaited as after a question, the
            # silence whole and fed by their words (and a goodbye the end_conversation call
            # promised, a while).
            # Past the longest conversation, LONG_REPLY bounds the answer, tools or not.
            bounded = CancelTimer(Timer.LONG_REPLY) if m.overtime else None
            ends = [a for a in _REPLY_ENDS if a != bounded]
            answered: list[Action] = [*ends, StartTimer(Timer.SILENCE)]
            goodbye = [StartTimer(Timer.REPLY)] if m.ending else []
            return m.to(State.LISTENING, reply_done=False), [*answered, *goodbye]
        case ToolsAtWork(calls=calls) if calls > 0 and m.state in _REPLYING:
            # The model waits for the tool: so does the reply timer. The reply has begun,
            # and its longest_reply_s counts from here if nothing came before.
            longest = [] if Timer.LONG_REPLY in m.timers else [StartTimer(Timer.LONG_REPLY)]
            return m, [CancelTimer(Timer.REPLY), StartTimer(Timer.TOOL), *longest]
        case ToolsAtWork(calls=calls) if calls <= 0 and working:
            # The answers went out: the model has a whole reply_timeout_s from here, not
            # what the tool's time (up to its timeout_s) left of it. Words before the call
            # ended already ("let me check", still playing): the reply to the answer is to
            # come, thought over once they have played (not after a goodbye: it hangs up).
            reply_owed = m.state is State.SPEAKING and m.reply_done and not m.ending
            after_answer = m.to(m.state, more_to_come=True) if reply_owed else m
            return after_answer, [CancelTimer(Timer.TOOL), StartTimer(Timer.REPLY)]
        case ToolsAtWork():
            return m, []

        case Timeout(Timer.REPLY) if working and m.state in _REPLYING:
            return m, []  # reply audio while a tool works restarted it: TOOL bounds the wait
        case Timeout(Timer.TOOL) if m.state in _REPLYING:  # the answer never went out
            return _turn_over(m, [ClearPlayback(), PlayEarcon(Earcon.ERROR)])
        case Timeout(Timer.IDLE) if m.session_open and m.state is State.IDLE:
            return m.to(State.IDLE, session_open=False, connected=False), [CloseSession()]
        case Timeout(Timer.IDLE) if m.session_open and not m.held:
            # Unused that long, but for a reply nobody asked for: it ends the session.
            return replace(m, ending=True), []
        case Timeout(Timer.REPLY) if m.state is State.THINKING or (
            m.state is State.CONNECTING and not m.ending  # a goodbye's wait: below
        ):
            # Between connections the question may still wait in the outbox: given up on
            # (the error beep), it must not go out once the link is back, its answer
            # playing out of the blue. Hands-free, what waits is the conversation going on.
            # The rest of a reply carried to the next connection is stale too.
            stale: list[Action] = []
            if not m.connected:
                stale = [SupersedeReply(), DropOutbox()] if ptt else [SupersedeReply()]
            return _turn_over(m, [*stale, PlayEarcon(Earcon.ERROR)])  # never left hanging
        case Timeout(Timer.REPLY) if m.state is State.SPEAKING and m.reply_done:
            # All of it came and it is still playing (a reply sent faster than it plays):
            # the drain ends the turn; a speaker that stopped is the audio keeper's to find.
            return m, [StartTimer(Timer.REPLY)]
        case Timeout(Timer.REPLY) if m.state is State.SPEAKING:  # the reply stopped coming
            return _turn_over(m, [ClearPlayback(), PlayEarcon(Earcon.ERROR)])
        case Timeout(Timer.LONG_REPLY) if m.state in _REPLYING:  # it would never end
            # Thinking too: the model says it works on, again and again, with no end.
            return _turn_over(m, [*_SILENCE_REPLY, PlayEarcon(Earcon.ERROR)])
        case Timeout(Timer.REPLY) if m.ending:  # no goodbye came
            return _hang_up(m)
        case Timeout(Timer.LONG_REPLY) if m.overtime:  # listening between a tool's calls
            return _hang_up(m)
        case Timeout(Timer.SILENCE | Timer.OPEN_MIC) if ptt and m.held:  # nobody, or too long
            stopped, actions = _stop_talking(m)
            return stopped, [*actions, StopCamera()]
        case Timeout(Timer.OPEN_MIC) if not ptt and m.session_open and m.state in _REPLYING:
            # The longest conversation ran out as the model answers: its answer is heard to
            # its end, not cut mid-word; then the box hangs up. Its own timers bound it, and
            # longest_reply_s from here at most: a model calling tool after tool, never a
            # word, cancels the others at every call.
            armed = Timer.LONG_REPLY in m.timers
            bound: list[Action] = [] if armed else [StartTimer(Timer.LONG_REPLY)]
            return m.to(m.state, ending=True, overtime=True), bound
        case Timeout(Timer.SILENCE | Timer.OPEN_MIC) if not ptt and m.session_open:
            return _hang_up(m)
        case Timeout(Timer.ERROR) if m.state is State.ERROR and not m.faults:
            return replace(m, state=State.IDLE, error=""), []
        case Timeout():
            return m, []
    raise TypeError(f"not an event: {event!r}")


def _open(m: Machine) -> tuple[Machine, OpenSession]:
    """A new session, with a number of its own: events of the last one cannot touch it."""
    number = m.session + 1
    return replace(m, session=number, session_open=True, connected=False), OpenSession(number)


def _connected(m: Machine) -> Step:
    """A connection is ready: a press or a text turn waiting for it goes ahead."""
    ready = m.to(m.state, connected=True)
    if m.state is not State.CONNECTING:
        return ready, []
    if m.held or m.mode is Mode.TOGGLE:
        return ready.to(State.LISTENING), []
    # The turn was handed over while connecting; its reply is awaited from now on.
    return ready.to(State.THINKING), [StartTimer(Timer.REPLY)]


def _start_talking(m: Machine, at: float | None) -> Step:
    """Push-to-talk press: capture at once, from the button's edge `at`; the outbox holds
    it until the session is ready. Over the box's own voice, from when its reply is
    silenced (it played on from the edge until the machine got to the press).

    A button held while nobody talks ends the turn after `end_after_silence_s`, as a
    release would: a stuck button must not keep the microphone open."""
    actions: list[Action] = list(_SILENCE_REPLY) if m.state in _REPLYING else []
    actions += [CancelTimer(Timer.IDLE), CancelTimer(Timer.ERROR), *_REPLY_ENDS]
    talking = m
    if not m.session_open:
        talking, opening = _open(m)
        actions.append(opening)
    over_the_box = m.state is State.SPEAKING
    since = None if over_the_box else at
    actions += [SendActivityStart(), StartCapture(preroll=not over_the_box, since=since)]
    actions.append(PlayEarcon(Earcon.LISTEN_START))
    actions += [StartTimer(Timer.SILENCE), StartTimer(Timer.OPEN_MIC)]
    state = State.LISTENING if talking.connected else State.CONNECTING
    # A press over the model's goodbye is a new question: the hang-up waits no more.
    return talking.to(state, held=True, spoke=False, reply_done=False, ending=False), actions


def _stop_talking(m: Machine, released: float | None = None) -> Step:
    """The turn ends at the release's edge `released` (None: now)."""
    actions: list[Action] = [
        CancelTimer(Timer.SILENCE),
        CancelTimer(Timer.OPEN_MIC),
        FinishCapture(released),
        SendActivityEnd(),
        PlayEarcon(Earcon.LISTEN_END),
        *([PlayEarcon(Earcon.RESTART)] if m.afresh else []),
        StartTimer(Timer.REPLY),
    ]
    state = State.THINKING if m.connected else State.CONNECTING
    return m.to(state, held=False, afresh=False), actions


def _start_conversation(m: Machine, since: float | None = None, pressed: bool = True) -> Step:
    """Wake button: a hands-free conversation with the server's activity detection, heard
    from the button's edge `since`. Not `pressed` (a hook's words): no camera, and nothing
    from before the words, with no button's edge for a pre-roll to reach back from."""
    conversation, opening = _open(m)
    capture = StartCapture(camera=pressed, preroll=pressed, since=since)
    actions: list[Action] = [CancelTimer(Timer.ERROR), opening, capture]
    actions += [PlayEarcon(Earcon.LISTEN_START), StartTimer(Timer.SILENCE)]
    actions.append(StartTimer(Timer.OPEN_MIC))
    return conversation.to(State.CONNECTING, reply_done=False), actions


def _turn_over(m: Machine, first: list[Action] | None = None) -> Step:
    """The reply has been heard (or cut): wait for the next press or speech."""
    actions: list[Action] = [*(first or []), *_REPLY_ENDS]
    if m.ending:
        hung_up, hang_up_actions = _hang_up(m)
        return hung_up, [*actions, *hang_up_actions]
    if m.mode is Mode.TOGGLE:
        return m.to(State.LISTENING, reply_done=False), [*actions, StartTimer(Timer.SILENCE)]
    # Still running, the reply was one nobody asked for: the session's idle time counts
    # from the person's last turn, or a service speaking of its own accord kept it for good.
    idle = [] if Timer.IDLE in m.timers else [StartTimer(Timer.IDLE)]
    return m.to(State.IDLE, reply_done=False), [*actions, *idle]


def _hang_up(m: Machine) -> Step:
    return m.reset(), _end_session(Earcon.LISTEN_END)


def _fail(m: Machine, reason: str) -> Step:
    """The session failed: end it, show the error a while, then idle (the next press retries)."""
    actions: list[Action] = [*_end_session(Earcon.ERROR), StartTimer(Timer.ERROR)]
    return m.reset(State.ERROR, error=reason), actions


def _device_failed(m: Machine, device: str, reason: str) -> Step:
    """An audio device is gone: no conversation is possible until it is back."""
    told = _end_session(Earcon.ERROR) if m.session_open else [PlayEarcon(Earcon.ERROR)]
    faults = (*(fault for fault in m.device_faults if fault[0] != device), (device, reason))
    failed = replace(m, device_faults=faults).reset(State.ERROR, _fault_words(faults))
    return failed, [*told, CancelTimer(Timer.ERROR)]


def _fault_words(faults: tuple[tuple[str, str], ...]) -> str:
    """Every device still failing and why: with two gone, the words named the last to
    fail, and still named one after it came back while the other was away."""
    return "; ".join(f"{device}: {reason}" for device, reason in faults)


def _end_session(earcon: Earcon) -> list[Action]:
    """End the session, `earcon` heard before the close: that waits for the camera to switch
    off and the connection to close (seconds on a Pi), and the silence came at once, the
    beep that says why only after them."""
    closing = _END_SESSION.index(CloseSession())
    return [*_END_SESSION[:closing], PlayEarcon(earcon), *_END_SESSION[closing:]]


#: A reply starts: it must go on coming (REPLY), and end some time (LONG_REPLY).
_REPLY_STARTS: tuple[Action, ...] = (StartTimer(Timer.REPLY), StartTimer(Timer.LONG_REPLY))
_REPLY_ENDS: tuple[Action, ...] = (
    CancelTimer(Timer.REPLY),
    CancelTimer(Timer.LONG_REPLY),
    CancelTimer(Timer.TOOL),
)

#: A new question over the reply: silence now, and the rest of it is not to come back.
_SILENCE_REPLY: tuple[Action, ...] = (ClearPlayback(), SupersedeReply())

_END_SESSION: tuple[Action, ...] = (
    StopCapture(),
    ClearPlayback(),
    DropOutbox(),
    CloseSession(),
    CancelTimer(Timer.IDLE),
    CancelTimer(Timer.SILENCE),
    CancelTimer(Timer.REPLY),
    CancelTimer(Timer.LONG_REPLY),
    CancelTimer(Timer.TOOL),
    CancelTimer(Timer.OPEN_MIC),
)
