"""The state machine on its own: the sequences a person at the button goes through."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device import states as s
from device.config import ConversationConfig
from device.states import (
    AwaitDrain,
    CancelTimer,
    CloseSession,
    Event,
    Machine,
    Mode,
    PlaybackDrained,
    Pressed,
    Released,
    ReplyAudio,
    SetupComplete,
    StartTimer,
    State,
    Timeout,
    Timer,
    TurnComplete,
    step,
)


def run(machine: Machine, *events: s.Event) -> tuple[Machine, list[State], list[s.Action]]:
    seen, actions = [], []
    for event in events:
        machine, done = s.step(machine, event)
        seen.append(machine.state)
        actions += done
    return machine, seen, actions


def names(actions: list[s.Action]) -> list[str]:
    """Each action as `snake_name` or `snake_name:argument`, e.g. `start_timer:reply` (an
    argument that is None left out)."""
    described = []
    for action in actions:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(action).__name__).lower()
        args = [str(v) for v in vars(action).values() if not isinstance(v, bytes | None)]
        described.append(":".join([name, *args]))
    return described


# Link events of the first session a machine opens (their number is 1).
SETUP = s.SetupComplete(session=1)
REPLY = s.ReplyAudio(session=1, pcm=b"\x01\x00")
DONE = s.TurnComplete(session=1)
INTERRUPTED = s.Interrupted(session=1)
ENDED = s.EndConversation(session=1)


def lost(reason: str) -> s.ConnectionLost:
    return s.ConnectionLost(session=1, reason=reason)


def reconnecting(reason: str) -> s.Reconnecting:
    return s.Reconnecting(session=1, reason=reason)


def test_push_to_talk_turn_before_the_connection_is_ready() -> None:
    m, seen, actions = run(
        Machine(),
        s.Pressed(),
        SETUP,
        s.Released(),
        REPLY,
        DONE,
        s.PlaybackDrained(),
    )
    assert seen == [
        State.CONNECTING,
        State.LISTENING,
        State.THINKING,
        State.SPEAKING,
        State.SPEAKING,  # the speaker still plays what it has
        State.IDLE,
    ]
    got = names(actions)
    # capture and activityStart at the press, before the session is ready
    wanted = ("open_session:1", "send_activity_start", "start_capture:True:True")
    order = [got.index(n) for n in wanted]
    assert order == sorted(order)
    assert got.index("finish_capture") < got.index("send_activity_end")
    assert got[-1] == "start_timer:idle"
    assert m.session_open and not m.held


def test_release_before_setup_goes_straight_to_thinking() -> None:
    _, seen, _ = run(Machine(), s.Pressed(), s.Released(), SETUP)
    assert seen == [State.CONNECTING, State.CONNECTING, State.THINKING]


def test_follow_up_press_reuses_the_session_and_idle_timeout_closes_it() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), DONE)
    assert m.state is State.IDLE and m.session_open
    m, seen, actions = run(m, s.Pressed())
    assert seen == [State.LISTENING]
    assert "open_session" not in names(actions)
    assert "cancel_timer:idle" in names(actions)
    m, _, _ = run(m, s.Released(), DONE)
    m, seen, actions = run(m, s.Timeout(s.Timer.IDLE))
    assert names(actions) == ["close_session"]
    assert not m.session_open and m.state is State.IDLE


def test_press_during_a_reply_is_a_barge_in() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY)
    assert m.state is State.SPEAKING
    m, seen, actions = run(m, s.Pressed())
    assert seen == [State.LISTENING]
    assert names(actions)[0] == "clear_playback", "silence first: it is what the person hears"
    # The moments before the press are the box's own voice, not the person's first word.
    assert "start_capture:True:False" in names(actions)
    # the rest of the old reply and its end do not change what the person sees
    m, seen, _ = run(m, REPLY, INTERRUPTED, DONE)
    assert seen == [State.LISTENING] * 3


def test_the_services_interruption_after_a_press_leaves_the_go_ahead_beep_playing() -> None:
    """A press over the reply silenced it and played its "go ahead" beep; the service's
    Interrupted for that reply comes a moment later and must not clear the speaker again:
    the beep was cut short, and the person could not tell the box was listening."""
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY, s.Pressed())
    assert m.state is State.LISTENING and m.held
    _, _, actions = run(m, INTERRUPTED)
    assert "clear_playback" not in names(actions)


@pytest.mark.parametrize("mode", list(Mode))
def test_the_capture_starts_from_the_buttons_edge_not_from_when_the_press_is_taken(
    mode: Mode,
) -> None:
    """The person talks from the button's edge: the machine may get to the press a second
    later (busy closing the last session), and the capture reaches back to the edge. Over
    the box's own voice, from the reply's silencing only: it played on until then."""
    _, _, actions = run(Machine(mode=mode), s.Pressed(at=12.5))
    assert [a for a in actions if isinstance(a, s.StartCapture)] == [
        s.StartCapture(preroll=True, since=12.5)
    ]
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY)
    _, _, actions = run(m, s.Pressed(at=20.0))
    assert [a for a in actions if isinstance(a, s.StartCapture)] == [
        s.StartCapture(preroll=False, since=None)
    ]


def test_a_release_ends_the_turn_at_its_edge_and_a_timer_now() -> None:
    m, _, _ = run(Machine(), s.Pressed(at=1.0), SETUP)
    _, _, actions = run(m, s.Released(at=2.5))
    assert [a for a in actions if isinstance(a, s.FinishCapture)] == [s.FinishCapture(2.5)]
    _, _, actions = run(m, s.Timeout(s.Timer.OPEN_MIC))
    assert [a for a in actions if isinstance(a, s.FinishCapture)] == [s.FinishCapture(None)]


def test_server_interruption_clears_the_speaker() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY)
    m, seen, actions = run(m, INTERRUPTED)
    assert seen == [State.IDLE]
    assert names(actions)[0] == "clear_playback"


def test_connect_failure_shows_error_then_idle_and_next_press_retries() -> None:
    refused = s.ConnectFailed(session=1, reason="TCP: connection refused")
    m, seen, actions = run(Machine(), s.Pressed(), refused)
    assert seen == [State.CONNECTING, State.ERROR]
    assert "play_earcon:error" in names(actions)
    assert m.error == "TCP: connection refused"
    assert "drop_outbox" in names(actions)
    assert not m.session_open
    m, seen, _ = run(m, s.Timeout(s.Timer.ERROR))
    assert seen == [State.IDLE] and m.error == ""
    m, seen, actions = run(m, s.Pressed())
    assert seen == [State.CONNECTING] and "open_session:2" in names(actions)


def test_connection_lost_mid_reply_never_leaves_thinking() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released())
    assert m.state is State.THINKING
    m, seen, _ = run(m, lost("close code 1011"))
    assert seen == [State.ERROR]


def test_long_press_hangs_up() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP)
    m, seen, actions = run(m, s.LongPress())
    assert seen == [State.IDLE]
    assert {"stop_capture", "close_session", "drop_outbox"} <= set(names(actions))
    assert not m.session_open and not m.held


def test_toggle_conversation_two_turns_and_second_press_ends_it() -> None:
    m = Machine(mode=Mode.TOGGLE)
    m, seen, actions = run(m, s.Pressed(), SETUP)
    assert seen == [State.CONNECTING, State.LISTENING]
    assert "send_activity_start" not in names(actions)  # the server detects speech
    m, seen, _ = run(
        m, REPLY, DONE, s.PlaybackDrained(), REPLY, INTERRUPTED
    )
    assert seen == [
        State.SPEAKING,
        State.SPEAKING,
        State.LISTENING,
        State.SPEAKING,
        State.LISTENING,
    ]
    m, seen, actions = run(m, s.Pressed())
    assert seen == [State.IDLE]
    assert "close_session" in names(actions) and not m.session_open


def test_toggle_conversation_ends_after_silence() -> None:
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP)
    m, seen, actions = run(m, s.Timeout(s.Timer.SILENCE))
    assert seen == [State.IDLE] and "close_session" in names(actions)


def test_late_events_after_hang_up_change_nothing() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.LongPress())
    m2, seen, actions = run(
        m, SETUP, REPLY, DONE, lost("x")
    )
    assert seen == [State.IDLE] * 4
    assert actions == []
    assert m2 == m


def test_a_reply_that_never_starts_ends_the_turn_with_the_error_earcon() -> None:
    m, _, actions = run(Machine(), s.Pressed(), SETUP, s.Released())
    assert "start_timer:reply" in names(actions)
    m, seen, actions = run(m, s.Timeout(s.Timer.REPLY))
    assert seen == [State.IDLE] and m.session_open
    assert "play_earcon:error" in names(actions)


def test_a_whole_reply_still_playing_is_never_cut_by_the_reply_timer() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY, DONE)
    m, seen, actions = run(m, s.Timeout(s.Timer.REPLY))  # a long reply, all of it in
    assert seen == [State.SPEAKING] and "clear_playback" not in names(actions)
    assert s.Timer.REPLY in m.timers
    _, seen, _ = run(m, s.PlaybackDrained())
    assert seen == [State.IDLE]


def test_a_model_still_working_after_its_words_thinks_on_until_the_rest_comes() -> None:
    """interactionStatus IN_PROGRESS at turnComplete: more of the reply may follow. The turn
    used to end there (idle, or listening hands-free with the silence timer running)."""
    more = s.TurnComplete(session=1, more_to_come=True)
    m, seen, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY, more)
    assert seen[-2:] == [State.SPEAKING, State.SPEAKING]
    m, seen, actions = run(m, s.PlaybackDrained())
    assert seen == [State.THINKING] and names(actions) == ["start_timer:reply"]
    m, seen, _ = run(m, more)  # a tool ran, nothing was said: still at work
    assert seen == [State.THINKING]
    m, seen, _ = run(m, REPLY, DONE, s.PlaybackDrained())
    assert seen == [State.SPEAKING, State.SPEAKING, State.IDLE]
    m, seen, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY, more, REPLY)
    assert not m.reply_done, "the rest came before the first part had played"
    _, seen, _ = run(m, DONE, s.PlaybackDrained())
    assert seen == [State.SPEAKING, State.IDLE]


def test_hands_free_a_model_working_before_its_first_word_is_waited_for_not_hung_up_on(
) -> None:
    """Hands-free, the person asks and waits in silence; the model says it works on
    (turnComplete, IN_PROGRESS) before a word of its reply, as after a tool's answer. The
    box went on listening (blue, not the amber of thinking) with the silence timer
    running from the question's last word, and hung up on the reply it was owed."""
    more = s.TurnComplete(session=1, more_to_come=True)
    asked, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, s.SpeechHeard(True))
    m, seen, actions = run(asked, more)
    assert seen == [State.THINKING] and s.Timer.SILENCE not in m.timers
    assert {"start_timer:reply", "start_timer:long_reply"} <= set(names(actions))
    m, seen, actions = run(m, s.Timeout(s.Timer.SILENCE), REPLY, DONE, s.PlaybackDrained())
    assert seen == [State.THINKING, State.SPEAKING, State.SPEAKING, State.LISTENING]
    assert m.session_open and s.Timer.SILENCE in m.timers, "listening on, the silence whole"
    # A reply that never comes: the error earcon after reply_timeout_s, then listening.
    m, seen, actions = run(asked, more, s.Timeout(s.Timer.REPLY))
    assert seen[-1] is State.LISTENING and "play_earcon:error" in names(actions)
    assert m.session_open and s.Timer.SILENCE in m.timers


def test_a_reply_that_stops_coming_ends_the_turn_too() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released())
    m, _, actions = run(m, REPLY, REPLY)
    assert names(actions).count("start_timer:reply") == 2, "each chunk restarts the timer"
    m, seen, actions = run(m, s.Timeout(s.Timer.REPLY))
    assert seen == [State.IDLE] and m.session_open
    assert names(actions)[:2] == ["clear_playback", "play_earcon:error"]


def test_reconnecting_while_thinking_ends_the_turn_and_the_session_lives_on() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released())
    m, seen, actions = run(m, reconnecting("close code 1011"))
    assert seen == [State.IDLE] and m.session_open and not m.connected
    assert "play_earcon:error" in names(actions) and "close_session" not in names(actions)
    m, seen, actions = run(m, s.Pressed(), s.Reconnected(session=1))
    assert seen == [State.CONNECTING, State.LISTENING]
    assert "open_session" not in names(actions), "the session is still open"


def test_reconnecting_before_the_turn_went_out_waits_for_its_reply_on_the_next_connection(
) -> None:
    """The release's end of turn was still in the outbox: it goes out on the next
    connection and is answered there. Ending the turn with the error earcon, then
    answering anyway, told the person it had failed when it had not."""
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released())
    not_sent = s.Reconnecting(session=1, reason="close code 1011", reply_lost=False)
    m, seen, actions = run(m, not_sent)
    assert seen == [State.THINKING] and not m.connected
    assert "play_earcon:error" not in names(actions) and s.Timer.REPLY in m.timers
    m, seen, _ = run(m, s.Reconnected(session=1), REPLY)
    assert seen == [State.THINKING, State.SPEAKING]


def test_giving_up_on_a_session_nobody_is_using_ends_it_quietly() -> None:
    """Push-to-talk keeps its session open between turns; when the service stays away
    then, nobody is there to be told: no beep, no red, the next press connects anew."""
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY, DONE, s.PlaybackDrained())
    assert m.state is State.IDLE and m.session_open
    m, seen, actions = run(m, reconnecting("close code 1011"), lost("gave up after 8 tries"))
    assert seen == [State.IDLE, State.IDLE] and not m.session_open
    assert "play_earcon:error" not in names(actions) and "close_session" in names(actions)
    m, seen, actions = run(m, s.Pressed())
    assert seen == [State.CONNECTING] and "open_session:2" in names(actions)


def test_reconnecting_mid_reply_plays_what_arrived_then_the_turn_is_over() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY)
    m, seen, _ = run(m, reconnecting("dropped"))
    assert seen == [State.SPEAKING] and m.reply_done
    m, seen, _ = run(m, s.PlaybackDrained())
    assert seen == [State.IDLE]


def test_between_connections_the_leds_say_connecting_not_listening() -> None:
    """Hands-free, or with the button held, what the microphone hears is held for the
    next connection: the LEDs say connecting (they said listening for as long as the
    service was away), and listening again once it is back."""
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP)
    m, seen, _ = run(m, reconnecting("dropped"), s.Reconnected(session=1))
    assert seen == [State.CONNECTING, State.LISTENING]
    m, _, _ = run(m, s.SpeechHeard(), REPLY, DONE)
    m, seen, _ = run(m, reconnecting("dropped"), s.PlaybackDrained(), s.Reconnected(session=1))
    assert seen == [State.SPEAKING, State.CONNECTING, State.LISTENING]
    m, _, _ = run(Machine(), s.Pressed(), SETUP)
    m, seen, _ = run(m, reconnecting("dropped"), s.Released(), s.Reconnected(session=1), REPLY)
    assert seen == [State.CONNECTING, State.CONNECTING, State.THINKING, State.SPEAKING]


def test_a_goodbye_awaited_across_a_reconnect_ends_the_conversation_quietly() -> None:
    """Hands-free, the model hung up before its goodbye's audio and the connection
    dropped: waiting for the goodbye in connecting, its timer ending the wait is the
    hang-up it asked for, not a failed turn with the error earcon."""
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, ENDED)
    m, seen, actions = run(m, reconnecting("dropped"), s.Timeout(s.Timer.REPLY))
    assert seen == [State.CONNECTING, State.IDLE] and not m.session_open
    assert "play_earcon:error" not in names(actions)


def test_a_session_started_afresh_says_so_with_an_earcon_to_whoever_is_there() -> None:
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP)  # a conversation
    m, _, actions = run(m, reconnecting("stall"), s.Reconnected(session=1, history_lost=True))
    assert "play_earcon:restart" in names(actions) and m.connected
    _, _, actions = run(m, reconnecting("stall"), s.Reconnected(session=1, history_lost=False))
    assert "play_earcon:restart" not in names(actions)
    # Idle, the session only kept for a follow-up: no beep in what may be an empty room
    # (a session closed after idle_timeout_s starts afresh without one too).
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), DONE)
    m, _, actions = run(m, reconnecting("stall"), s.Reconnected(session=1, history_lost=True))
    assert m.state is State.IDLE and "play_earcon:restart" not in names(actions)


def test_a_text_turn_opens_a_session_and_waits_for_its_reply() -> None:
    m, seen, actions = run(Machine(), s.TextTurn("The washing is done."), SETUP)
    assert seen == [State.CONNECTING, State.THINKING]
    wanted = ["open_session:1", "send_text:The washing is done."]
    assert [n for n in names(actions) if n in wanted] == wanted
    m, seen, _ = run(m, REPLY, DONE, s.PlaybackDrained())
    assert seen[-1] is State.IDLE
    # Hands-free the conversation listens for an answer; the camera waits for a person, and
    # nothing from before the words goes (no pre-roll: nobody pressed).
    m, seen, actions = run(Machine(mode=Mode.TOGGLE), s.TextTurn("Hello"))
    assert seen == [State.CONNECTING] and "start_capture:False:False" in names(actions)
    assert names(actions)[-1] == "send_text:Hello"
    m, _, actions = run(m, SETUP, s.SpeechHeard())  # the service's transcript of the text
    assert names(actions)[-1] == "start_timer:silence"
    m, _, actions = run(m, s.SpeechHeard(from_the_room=True))  # someone is there
    assert names(actions) == ["start_timer:silence", "start_camera"]


@pytest.mark.parametrize(("mode", "then"), [(Mode.PUSH_TO_TALK, State.THINKING),
                                            (Mode.TOGGLE, State.LISTENING)])  # fmt: skip
def test_a_text_turn_over_a_reply_stops_it_as_a_press_does(mode: Mode, then: State) -> None:
    """The answer to the new question must not come after the old reply, nor the rest of
    the old reply read ahead refill the speaker before the words go out."""
    m, _, _ = run(Machine(mode=mode), s.Pressed(), SETUP, s.Released(), REPLY)
    m, seen, actions = run(m, s.TextTurn("And tomorrow?"))
    assert seen == [then]
    assert names(actions)[:2] == ["clear_playback", "supersede_reply"]
    assert "send_text:And tomorrow?" in names(actions)


def test_a_text_turn_during_the_goodbye_is_not_left_for_the_next_session() -> None:
    """Hands-free, words over the model's goodbye went into the outbox after the hang-up
    had emptied it: the next session, maybe hours later, said them first."""
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, REPLY, ENDED)
    assert m.ending and m.state is State.SPEAKING
    _, _, actions = run(m, s.TextTurn("The washing is done."))
    done = names(actions)
    assert "drop_outbox" not in done or done.index("drop_outbox") > done.index(
        "send_text:The washing is done."
    )


def test_the_model_hangs_up_after_its_goodbye() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY)
    m, seen, actions = run(m, ENDED)
    assert seen == [State.SPEAKING] and m.ending and "close_session" not in names(actions)
    m, seen, actions = run(m, DONE, s.PlaybackDrained())
    assert seen[-1] is State.IDLE and not m.session_open and not m.ending
    assert "close_session" in names(actions)


def test_a_lost_device_is_an_error_until_every_device_is_back() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP)
    m, seen, actions = run(m, s.DeviceFailed("microphone", "unplugged"))
    assert seen == [State.ERROR] and not m.session_open
    assert "close_session" in names(actions) and m.error == "microphone: unplugged"
    m, seen, actions = run(
        m, s.DeviceFailed("speaker", "unplugged"), s.Timeout(s.Timer.ERROR), s.Pressed()
    )
    assert seen == [State.ERROR] * 3
    assert "play_earcon:error" not in names(actions), "no earcon into a speaker that is gone"
    assert m.error == "microphone: unplugged; speaker: unplugged", "both gone, both said"
    m, seen, _ = run(m, s.DeviceRecovered("microphone"))
    assert seen == [State.ERROR] and m.faults == frozenset({"speaker"})
    assert m.error == "speaker: unplugged", "the one back is no longer blamed"
    m, seen, _ = run(m, s.DeviceRecovered("speaker"))
    assert seen == [State.IDLE] and not m.faults and not m.error


def test_hands_free_the_model_hangs_up_after_its_goodbye_too() -> None:
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP)
    m, seen, actions = run(m, ENDED)  # the call comes before the goodbye's audio
    assert seen == [State.LISTENING] and m.ending and "close_session" not in names(actions)
    m, seen, actions = run(m, REPLY, DONE, s.PlaybackDrained())
    assert seen[-1] is State.IDLE and not m.session_open and "close_session" in names(actions)


def test_a_turn_handed_over_while_connecting_waits_for_its_reply_with_a_timer() -> None:
    _, seen, actions = run(Machine(), s.Pressed(), s.Released(), SETUP)
    assert seen == [State.CONNECTING, State.CONNECTING, State.THINKING]
    assert names(actions).count("start_timer:reply") == 2, "at the release and when connected"


# ---- left alone in a home: what ends a session, stale events, the watchdog -------------------

#: Timers that end what the microphone and camera send: a session, a turn, a conversation.
ENDING = {s.Timer.SILENCE, s.Timer.IDLE, s.Timer.REPLY, s.Timer.TOOL}


def test_hands_free_an_unanswered_interruption_listens_with_the_silence_timer_armed() -> None:
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, REPLY)
    assert s.Timer.SILENCE not in m.timers, "nobody is expected to talk over the reply"
    m, seen, actions = run(m, INTERRUPTED)
    assert seen == [State.LISTENING] and "start_timer:silence" in names(actions)
    m, seen, actions = run(m, s.Timeout(s.Timer.SILENCE))
    assert seen == [State.IDLE] and "close_session" in names(actions)


def test_the_silence_counts_from_the_last_word_heard() -> None:
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP)
    m, _, actions = run(m, s.SpeechHeard())
    assert names(actions) == ["start_timer:silence"], "speech restarts the silence timer"
    m, _, actions = run(m, REPLY, s.SpeechHeard())
    assert "start_timer:silence" not in names(actions[1:]), "not while the model speaks"


@pytest.mark.parametrize("timer", [s.Timer.SILENCE, s.Timer.OPEN_MIC])
def test_a_button_held_with_nobody_talking_ends_the_turn_like_a_release(timer: s.Timer) -> None:
    """SILENCE: nobody talks. OPEN_MIC: held that long, whatever the room's sound (a TV
    or a fan kept the silence timer from ever running out, the camera sending)."""
    m, _, actions = run(Machine(), s.Pressed(), SETUP)
    assert {"start_timer:silence", "start_timer:open_mic"} <= set(names(actions))
    m, _, _ = run(m, *[s.SpeechHeard()] * 5)
    m, seen, actions = run(m, s.Timeout(timer))
    assert seen == [State.THINKING] and not m.held
    assert names(actions)[:4] == [
        "cancel_timer:silence", "cancel_timer:open_mic", "finish_capture", "send_activity_end"
    ]
    assert "stop_camera" in names(actions), "no linger: nobody is there for a follow-up"
    _, seen, actions = run(m, s.Released())
    assert seen == [State.THINKING] and actions == [], "the late release changes nothing"


def test_a_hands_free_conversation_ends_after_its_longest_whatever_it_hears() -> None:
    m, _, actions = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP)
    assert "start_timer:open_mic" in names(actions)
    m, _, _ = run(m, *[s.SpeechHeard(), REPLY, DONE, s.PlaybackDrained()] * 5)
    m, seen, actions = run(m, s.Timeout(s.Timer.OPEN_MIC))
    assert seen == [State.IDLE] and not m.session_open
    assert {"stop_capture", "close_session"} <= set(names(actions))


def test_the_end_conversation_call_with_no_goodbye_still_hangs_up() -> None:
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, ENDED)
    assert m.ending and s.Timer.REPLY in m.timers
    done, seen, actions = run(m, DONE)  # the goodbye turn ends without audio
    assert seen == [State.IDLE] and not done.session_open and "close_session" in names(actions)
    m, seen, actions = run(m, s.Timeout(s.Timer.REPLY))  # or it never even ends
    assert seen == [State.IDLE] and not m.session_open and "close_session" in names(actions)


def test_events_of_a_closed_session_cannot_touch_the_next_one() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.LongPress(), s.Pressed())
    assert m.session == 2 and m.state is State.CONNECTING
    old = [lost("1011"), s.SetupComplete(session=1), s.ReplyAudio(session=1, pcm=b"\0\0")]
    m2, seen, actions = run(m, *old)
    assert (m2, actions) == (m, []) and seen == [State.CONNECTING] * 3
    _, seen, _ = run(m, s.SetupComplete(session=2))
    assert seen == [State.LISTENING]


def test_a_timer_cancelled_after_it_fired_changes_nothing() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), DONE)
    assert m.state is State.IDLE and s.Timer.REPLY not in m.timers
    m2, _, actions = run(m, s.Timeout(s.Timer.REPLY))
    assert (m2, actions) == (m, [])


def test_the_heartbeat_feeds_the_watchdog_whatever_the_state() -> None:
    """A box that stopped feeding it while it speaks (or shows an error) is killed."""
    turn = (s.Pressed(), SETUP, s.Released(), REPLY, s.DeviceFailed("microphone", "gone"))
    machines = [Machine()]
    for event in turn:
        machines.append(s.step(machines[-1], event)[0])
    assert {m.state for m in machines} == set(State)
    for machine in machines:
        assert s.step(machine, s.Heartbeat()) == (machine, [s.FeedWatchdog()]), machine.state


def test_the_microphone_is_gated_while_the_model_speaks_hands_free() -> None:
    m, _, actions = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP)
    m, _, actions = run(m, REPLY)
    assert "gate_microphone:True" in names(actions) and "play_reply" in names(actions)
    m, _, actions = run(m, DONE)
    assert "await_drain" in names(actions)
    m, _, actions = run(m, s.PlaybackDrained())
    assert "gate_microphone:False" in names(actions)


def test_hands_free_talked_over_a_reply_sent_whole_the_box_stops_it_itself() -> None:
    """The service interrupts what it still sends; what it sent whole is the box's to stop
    (the link says whether it was whole: ReplyDropped). Then it listens."""
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, REPLY, DONE)
    m, seen, actions = run(m, s.TalkedOver())
    assert seen == [State.SPEAKING] and names(actions) == ["drop_whole_reply"]
    m, seen, actions = run(m, s.ReplyDropped(session=1))
    assert seen == [State.LISTENING]
    assert names(actions)[:2] == ["clear_playback", "cancel_timer:reply"]
    assert "gate_microphone:False" in names(actions) and s.Timer.SILENCE in m.timers
    m, seen, _ = run(m, s.ReplyDropped(session=1), s.TalkedOver())  # late: nothing to stop
    assert seen == [State.LISTENING, State.LISTENING]
    # Push-to-talk the button stops a reply; talking without it never does.
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY, DONE)
    assert run(m, s.TalkedOver())[2] == []


def test_a_reply_that_would_never_end_is_stopped_and_the_conversation_left_to_end() -> None:
    """A service streaming one reply without end kept a hands-free box speaking and its
    microphone open: every chunk restarted the reply timer and none let silence count."""
    m, _, actions = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, REPLY)
    assert "start_timer:long_reply" in names(actions)
    m, _, _ = run(m, *[REPLY] * 50)
    m, seen, actions = run(m, s.Timeout(s.Timer.LONG_REPLY))
    assert seen == [State.LISTENING]
    assert names(actions)[:3] == ["clear_playback", "supersede_reply", "play_earcon:error"]
    rest = s.ReplyAudio(session=1, pcm=b"\x01\x00", talked_over=True)  # as the link marks it
    m, seen, _ = run(m, rest, s.Timeout(s.Timer.SILENCE))
    assert seen == [State.LISTENING, State.IDLE] and not m.session_open


def test_push_to_talk_a_reply_dropped_past_the_idle_time_still_ends_the_session() -> None:
    """A reply nobody asked for plays as the session's idle time runs out: it ends once
    that reply is over. Dropped whole, it forgot the hang-up (hands-free's rule, where a
    person talking over a goodbye goes on), and the idle timer started over, every time."""
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY, DONE, s.PlaybackDrained())
    m, _, _ = run(m, REPLY, s.Timeout(s.Timer.IDLE))  # the service speaks of its own accord
    assert m.ending and m.session_open
    m, seen, _ = run(m, s.ReplyDropped(session=1))
    assert seen == [State.IDLE] and not m.session_open


# Every event; a link event is made for the session open when it comes, now and then
# for the one before it (a stale event), hence a function of the session's number.
EventOf = Callable[[int], s.Event]


def _events() -> st.SearchStrategy[EventOf]:
    def link(kind: type[s.LinkEvent], **fields: st.SearchStrategy[object]) -> st.SearchStrategy:
        made = st.fixed_dictionaries(fields)
        stale = st.sampled_from([0, 0, 0, 1])
        return st.builds(lambda f, back: lambda n: kind(session=n - back, **f), made, stale)

    def plain(event: s.Event) -> st.SearchStrategy[EventOf]:
        return st.just(lambda _n: event)

    reason = st.just("1011")
    return st.one_of(
        *map(plain, [s.Pressed(), s.Released(), s.LongPress(), s.SpeechHeard(), s.TalkedOver()]),
        plain(s.SpeechHeard(from_the_room=True)),
        *map(plain, [s.PlaybackDrained(), s.Heartbeat(), s.TextTurn("hello")]),
        *map(plain, [s.DeviceFailed("microphone", "gone"), s.DeviceRecovered("microphone")]),
        *map(plain, [s.Timeout(timer) for timer in s.Timer]),
        link(s.SetupComplete),
        link(s.ConnectFailed, reason=reason),
        link(s.ConnectionLost, reason=reason),
        link(s.Reconnecting, reason=reason),
        link(s.Reconnected, history_lost=st.booleans()),
        link(s.ReplyAudio, pcm=st.just(b"\0\0"), talked_over=st.booleans()),
        link(s.TurnComplete, talked_over=st.booleans(), more_to_come=st.booleans()),
        link(s.Interrupted, talked_over=st.booleans()),
        link(s.EndConversation),
        link(s.ReplyDropped),
        link(s.ToolsAtWork, calls=st.integers(0, 2)),
    )


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(Mode), events=st.lists(_events(), max_size=40))
def test_a_session_nobody_talks_in_ends_by_itself_from_any_state(
    mode: Mode, events: list[EventOf]
) -> None:
    """The privacy invariant: from every reachable state, an open session in which nobody
    talks ends by itself (SILENCE ends a conversation or a held turn, REPLY a reply that
    does not come or stops coming, IDLE an unused push-to-talk session), and whenever a
    session is open one of those timers is armed. The error state never sticks."""
    m = Machine(mode=mode)
    for event_of in events:
        event = event_of(m.session)
        m, _ = s.step(m, event)
        if m.session_open:
            assert m.timers & ENDING, f"nothing armed: {m} after {event}"
            assert _ends_whatever_runs_out_first(m), f"never ends: {m} after {event}"
        if m.state is State.ERROR:
            assert m.faults or s.Timer.ERROR in m.timers, f"{m} after {event}"
        assert m.gated == (mode is Mode.TOGGLE and m.state is State.SPEAKING)
        assert m.connected or m.state is not State.LISTENING, f"{m} after {event}"


def _all_events(m: Machine) -> list[s.Event]:
    """Every event that can come now: link events of the session open now and stale ones."""
    plain: list[s.Event] = [
        s.Pressed(), s.Released(), s.LongPress(), s.SpeechHeard(), s.TalkedOver(),
        s.SpeechHeard(from_the_room=True, soft=True),
        s.PlaybackDrained(),
        s.Heartbeat(), s.TextTurn("hello"), s.DeviceFailed("microphone", "gone"),
        s.DeviceRecovered("microphone"), *(s.Timeout(timer) for timer in s.Timer),
    ]
    link: list[s.Event] = []
    for n in (m.session, m.session - 1):
        link += [
            s.SetupComplete(session=n), s.ConnectFailed(session=n, reason="x"),
            s.ConnectionLost(session=n, reason="x"), s.Reconnecting(session=n, reason="x"),
            s.Reconnected(session=n), s.Reconnected(session=n, history_lost=True),
            s.EndConversation(session=n), s.ReplyDropped(session=n),
        ]
        for talked_over in (False, True):
            link += [
                s.ReplyAudio(session=n, pcm=b"\0\0", talked_over=talked_over),
                s.TurnComplete(session=n, talked_over=talked_over),
                s.Interrupted(session=n, talked_over=talked_over),
            ]
        link.append(s.TurnComplete(session=n, more_to_come=True))
        link += [s.ToolsAtWork(session=n, calls=1), s.ToolsAtWork(session=n, calls=0)]
    return plain + link


def _ends_whatever_runs_out_first(m: Machine, depth: int = 12) -> bool:
    """Nobody talks, the service says nothing more: whichever armed timer runs out first,
    and whenever the speaker finishes, the session ends."""
    if not m.session_open:
        return True
    armed = m.timers & ENDING
    if not armed or depth == 0:
        return False
    drained, _ = s.step(m, s.PlaybackDrained())
    if drained != m:
        return _ends_whatever_runs_out_first(drained, depth - 1)
    return all(
        _ends_whatever_runs_out_first(s.step(m, s.Timeout(timer))[0], depth - 1)
        for timer in armed
    )


@pytest.mark.parametrize("mode", list(Mode))
def test_every_reachable_state_with_a_session_open_ends_by_itself(mode: Mode) -> None:
    """The privacy invariant over every state the machine can reach (three sessions deep),
    not only random walks: nobody talking always ends the session."""
    start = Machine(mode=mode)
    seen, frontier = {start}, [start]
    while frontier:
        m = frontier.pop()
        assert _ends_whatever_runs_out_first(m), f"a session left alone stays open: {m}"
        for event in _all_events(m):
            after, _ = s.step(m, event)
            if after.session <= 3 and after not in seen:
                seen.add(after)
                frontier.append(after)
    assert len(seen) > 50, "the walk reached the machine's states"


def test_a_second_press_without_a_release_is_the_same_turn() -> None:
    """`ctl press` twice (or a script looping on it): one activityStart, one earcon."""
    m, _, actions = run(Machine(), s.Pressed(), SETUP, s.Pressed(), s.Pressed())
    assert m.state is State.LISTENING and m.held
    assert names(actions).count("send_activity_start") == 1
    assert names(actions).count("play_earcon:listen_start") == 1


def test_a_long_press_while_someone_talks_is_a_long_question_not_a_hang_up() -> None:
    """Push-to-talk: holding is talking. A question longer than `long_press_s` (10 s by
    default) was hung up on mid-sentence and dropped; the release ends it, as any turn."""
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.SpeechHeard(from_the_room=True))
    m, seen, actions = run(m, s.LongPress())
    assert seen == [State.LISTENING] and m.held and actions == []
    m, seen, actions = run(m, s.Released())
    assert seen == [State.THINKING] and "send_activity_end" in names(actions)
    # The next press starts afresh: held in silence, the long press hangs up again.
    m, _, _ = run(m, REPLY, DONE, s.PlaybackDrained(), s.Pressed())
    m, seen, _ = run(m, s.LongPress())
    assert seen == [State.IDLE] and not m.session_open


def test_hands_free_a_soft_voice_keeps_no_silence_open() -> None:
    """A voice under `speech_dbfs` (a television across the room, a murmur) neither holds
    open the silence that ends a hands-free conversation nor starts the camera: the
    conversation still hangs up `end_after_silence_s` after the last word."""
    m, _, actions = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP)
    assert "start_timer:silence" in names(actions)
    m, _, actions = run(m, s.SpeechHeard(from_the_room=True, soft=True))
    assert actions == []
    m, seen, _ = run(m, s.Timeout(s.Timer.SILENCE))
    assert not m.session_open, seen


def test_a_press_over_the_models_goodbye_keeps_the_conversation() -> None:
    """Push-to-talk: the model says goodbye and calls end_conversation; the person presses
    over it ("wait, one more thing"). The call arriving while they hold hung up at once,
    their words dropped; one that came before hung up after the answer to them."""
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY)
    m, seen, actions = run(m, s.Pressed(), ENDED)
    assert seen == [State.LISTENING, State.LISTENING] and m.held and not m.ending
    assert "close_session" not in names(actions)
    m, _, _ = run(Machine(), s.Pressed(), SETUP, s.Released(), REPLY, ENDED, s.Pressed())
    assert not m.ending
    m, seen, _ = run(m, s.Released(), REPLY, DONE, s.PlaybackDrained())
    assert seen[-1] is State.IDLE and m.session_open, "hung up after the answer"



@pytest.mark.parametrize("stopped", [
    INTERRUPTED,  # the service stops the goodbye it still streams
    s.ReplyDropped(session=1),  # it had sent all of it: the box stops it itself
], ids=["interrupted", "dropped"])
def test_hands_free_talking_over_the_goodbye_keeps_the_conversation(stopped: s.Event) -> None:
    """The model says goodbye and calls end_conversation; hands-free, the person talks
    over it ("wait, one more thing"). The box hung up at once, the service's answer to
    them never heard. Push-to-talk, a press over the goodbye keeps the conversation
    (above); speech is hands-free's press."""
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, REPLY, ENDED, s.TalkedOver())
    m, _, actions = run(m, stopped)
    assert "close_session" not in names(actions), "hung up on the person"
    assert m.session_open and m.state is State.LISTENING and not m.ending
    m, _, _ = run(m, REPLY, DONE, s.PlaybackDrained())
    assert m.session_open and m.state is State.LISTENING, "the answer to them is heard"

def test_hands_free_speaking_up_before_the_goodbye_is_heard_keeps_the_conversation() -> None:
    """Hands-free, a person who paused to think is taken for done: the model calls
    end_conversation before a word of its goodbye, and they go on ("...and one more
    thing"). The service stops the goodbye it was making for them (interrupted), but the
    box kept the hang-up: it hung up once the answer to them had played."""
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, ENDED, s.SpeechHeard(True))
    m, seen, actions = run(m, INTERRUPTED)
    assert seen == [State.LISTENING] and not m.ending and s.Timer.SILENCE in m.timers
    m, _, actions = run(m, REPLY, DONE, s.PlaybackDrained())
    assert "close_session" not in names(actions), "hung up after the answer to them"
    assert m.session_open and m.state is State.LISTENING


def _capture(capturing: bool, framing: bool, actions: list[s.Action]) -> tuple[bool, bool]:
    for action in actions:
        match action:
            case s.StartCapture(camera=camera):
                capturing, framing = True, framing or camera
            case s.StartCamera():
                framing = True
            case s.StopCapture() | s.FinishCapture():
                capturing = framing = False
            case s.StopCamera():
                framing = False
    return capturing, framing


@pytest.mark.parametrize("mode", list(Mode))
def test_in_every_reachable_state_the_microphone_streams_only_while_someone_talks(
    mode: Mode,
) -> None:
    """The privacy invariant over every state the machine can reach (three sessions deep):
    the microphone streams only into an open session, never in idle or error, exactly
    while the button is held (push-to-talk) or the conversation open (hands-free), and
    the camera frames only while it streams."""
    start = (Machine(mode=mode), False, False)
    seen, frontier = {start}, [start]
    while frontier:
        m, capturing, framing = frontier.pop()
        for event in _all_events(m):
            after, actions = s.step(m, event)
            mic, camera = _capture(capturing, framing, actions)
            where = f"{m} then {event}"
            assert not mic or (after.session_open and after.state not in (
                State.IDLE, State.ERROR)), where  # fmt: skip
            assert mic == (after.held if mode is Mode.PUSH_TO_TALK else after.session_open), where
            assert mic or not camera, where
            key = (after, mic, camera)
            if after.session <= 3 and key not in seen:
                seen.add(key)
                frontier.append(key)


def test_a_text_turn_over_a_reply_gets_its_own_longest_reply() -> None:
    """Push-to-talk: a reply plays (LONG_REPLY armed at its start); `ctl text` asks
    something new. Its reply must get longest_reply_s of its own, not the rest of the
    old one's (the old code re-armed LONG_REPLY at every reply's first part in THINKING)."""
    m = Machine()
    m, _, _ = run(m, s.Pressed(), SETUP, s.Released(), REPLY)
    assert m.state is State.SPEAKING and s.Timer.LONG_REPLY in m.timers
    m, _, _ = run(m, s.TextTurn("and tomorrow?"))
    assert m.state is State.THINKING
    m, _, actions = run(m, REPLY)  # the new reply's first part
    assert s.StartTimer(s.Timer.LONG_REPLY) in actions, (
        f"the new reply's longest_reply_s is not restarted: {actions}"
    )


def test_a_reply_carried_across_a_drop_is_one_turn_though_the_speaker_ran_dry_meanwhile() -> None:
    """The drop's reply came whole and goes on from the next connection (reply_lost=False
    while it plays): the speaker running out before that connection hands on the rest is
    a pause in the reply, not its end. Taken as its end, the box went idle mid-sentence and
    took the rest for a reply of its own. Meanwhile it thinks, as when the model works on
    (not "speaking" in silence, hands-free with the microphone gated)."""
    reply = s.ReplyAudio(session=1, pcm=b"\x01\x00")
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(session=1), s.Released(), reply)
    carried = s.Reconnecting(session=1, reason="dropped", reply_lost=False)
    m, seen, _ = run(m, carried, s.PlaybackDrained(), s.Reconnected(session=1), reply)
    assert seen == [State.SPEAKING, State.THINKING, State.THINKING, State.SPEAKING]
    m, seen, _ = run(m, s.TurnComplete(session=1), s.PlaybackDrained())
    assert seen == [State.SPEAKING, State.IDLE]


TIMERS_S = {timer: 60.0 for timer in Timer} | {
    Timer.IDLE: ConversationConfig().idle_timeout_s,
    Timer.REPLY: ConversationConfig().reply_timeout_s,
    Timer.LONG_REPLY: ConversationConfig().longest_reply_s,
}


def closed_at(script: list[tuple[float, Event]], hours: float = 1.0) -> float | None:
    """When the machine closed its session, the events of `script` taken at their times and
    its timers' Timeouts at theirs (a reply drains as soon as it is done); None: never."""
    m, now, due = Machine(), 0.0, {}
    waiting = sorted(script, key=lambda timed: timed[0])
    while now < hours * 3600:
        next_timer = min(due.items(), key=lambda item: item[1], default=None)
        if waiting and (next_timer is None or waiting[0][0] <= next_timer[1]):
            now, event = waiting.pop(0)
        elif next_timer is not None:
            (timer, now), event = next_timer, Timeout(next_timer[0])
            del due[timer]
        else:
            return None
        m, actions = step(m, event)
        for action in actions:
            match action:
                case CloseSession():
                    return now
                case StartTimer(timer):
                    due[timer] = now + TIMERS_S[timer]
                case CancelTimer(timer):
                    due.pop(timer, None)
                case AwaitDrain():
                    waiting.insert(0, (now, PlaybackDrained()))
    return None


@pytest.mark.parametrize("reply_s", [1.0, 40.0])
def test_a_push_to_talk_session_the_service_alone_keeps_talking_in_closes_when_idle(
    reply_s: float,
) -> None:
    """One question, then the service speaks every 50 s of its own accord (or something
    posing as it), each reply `reply_s` long: each reply nobody asked for started the idle
    timer again (one playing as it ran out kept the session too), and the session, its
    connection and the speaker's surprises went on for good. A reply still playing as the
    idle time runs out plays to its end."""
    reply, done = ReplyAudio(session=1, pcm=b"\x01\x00"), TurnComplete(session=1)
    asked = [(0.0, Pressed()), (0.0, SetupComplete(session=1)), (1.0, Released()),
             (2.0, reply), (3.0, done)]  # fmt: skip
    unasked = [(3.0 + 50 * n + second, reply) for n in range(1, 100)
               for second in range(int(reply_s))]  # fmt: skip
    unasked += [(3.0 + 50 * n + reply_s, done) for n in range(1, 100)]
    closed = closed_at([*asked, *unasked])
    assert closed is not None and closed <= 3.0 + TIMERS_S[Timer.IDLE] + 50, closed
    assert closed == 3.0 + (TIMERS_S[Timer.IDLE] if reply_s < 10 else 50 + reply_s), closed


def test_the_restart_earcon_of_a_session_started_afresh_plays_once_at_the_release() -> None:
    """Push-to-talk: the session started afresh while the button was held, and its
    earcon waits for the release (not beeped into the question). It is said once: the
    next question's release plays no restart earcon, as though the session had started
    afresh again; and with the button up, a session started afresh says so at once."""
    afresh = s.Reconnected(session=1, history_lost=True)
    m, _, held = run(Machine(), s.Pressed(), SETUP, reconnecting("goAway"), afresh)
    assert "play_earcon:restart" not in names(held), names(held)
    m, _, released = run(m, s.Released())
    assert names(released).count("play_earcon:restart") == 1, names(released)
    m, seen, again = run(m, REPLY, DONE, s.PlaybackDrained(), s.Pressed(), s.Released())
    assert seen[-1] is s.State.THINKING, seen
    assert "play_earcon:restart" not in names(again), names(again)
    # The button up (the question out, its answer awaited), it plays at once.
    moved = s.Reconnecting(session=1, reason="goAway", reply_lost=False)
    _, _, thinking = run(m, moved, afresh)
    assert "play_earcon:restart" in names(thinking), names(thinking)
