"""The state machine on its own: the sequences a person at the button goes through."""

from __future__ import annotations

from device import states as s
from device.states import Machine, Mode, State


def run(machine: Machine, *events: s.Event) -> tuple[Machine, list[State], list[s.Action]]:
    seen, actions = [], []
    for event in events:
        machine, done = s.step(machine, event)
        seen.append(machine.state)
        actions += done
    return machine, seen, actions


def names(actions: list[s.Action]) -> list[str]:
    return [a.name if a.arg is None else f"{a.name}:{a.arg}" for a in actions]


def test_push_to_talk_turn_before_the_connection_is_ready() -> None:
    m, seen, actions = run(
        Machine(),
        s.Pressed(),
        s.SetupComplete(),
        s.Released(),
        s.ReplyAudio(),
        s.TurnComplete(),
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
    assert got.index("open_session") < got.index("send_activity_start") < got.index("start_capture")
    assert got.index("stop_capture") < got.index("send_activity_end")
    assert got[-1] == "start_timer:idle"
    assert m.session_open and not m.held


def test_release_before_setup_goes_straight_to_thinking() -> None:
    _, seen, _ = run(Machine(), s.Pressed(), s.Released(), s.SetupComplete())
    assert seen == [State.CONNECTING, State.CONNECTING, State.THINKING]


def test_follow_up_press_reuses_the_session_and_idle_timeout_closes_it() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released(), s.TurnComplete())
    assert m.state is State.IDLE and m.session_open
    m, seen, actions = run(m, s.Pressed())
    assert seen == [State.LISTENING]
    assert "open_session" not in names(actions)
    assert "cancel_timer:idle" in names(actions)
    m, _, _ = run(m, s.Released(), s.TurnComplete())
    m, seen, actions = run(m, s.Timeout(s.Timer.IDLE))
    assert names(actions) == ["close_session"]
    assert not m.session_open and m.state is State.IDLE


def test_press_during_a_reply_is_a_barge_in() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released(), s.ReplyAudio())
    assert m.state is State.SPEAKING
    m, seen, actions = run(m, s.Pressed())
    assert seen == [State.LISTENING]
    assert names(actions)[:3] == ["cancel_timer:idle", "cancel_timer:error", "clear_playback"]
    # the rest of the old reply and its end do not change what the person sees
    m, seen, _ = run(m, s.ReplyAudio(), s.Interrupted(), s.TurnComplete())
    assert seen == [State.LISTENING] * 3


def test_server_interruption_clears_the_speaker() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released(), s.ReplyAudio())
    m, seen, actions = run(m, s.Interrupted())
    assert seen == [State.IDLE]
    assert names(actions)[0] == "clear_playback"


def test_connect_failure_shows_error_then_idle_and_next_press_retries() -> None:
    m, seen, actions = run(Machine(), s.Pressed(), s.ConnectFailed("TCP: connection refused"))
    assert seen == [State.CONNECTING, State.ERROR]
    assert "earcon:error" in names(actions)
    assert m.error == "TCP: connection refused"
    assert "drop_outbox" in names(actions)
    assert not m.session_open
    m, seen, _ = run(m, s.Timeout(s.Timer.ERROR))
    assert seen == [State.IDLE] and m.error == ""
    m, seen, actions = run(m, s.Pressed())
    assert seen == [State.CONNECTING] and "open_session" in names(actions)


def test_connection_lost_mid_reply_never_leaves_thinking() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released())
    assert m.state is State.THINKING
    m, seen, _ = run(m, s.ConnectionLost("close code 1011"))
    assert seen == [State.ERROR]


def test_long_press_hangs_up() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete())
    m, seen, actions = run(m, s.LongPress())
    assert seen == [State.IDLE]
    assert {"stop_capture", "close_session", "drop_outbox"} <= set(names(actions))
    assert not m.session_open and not m.held


def test_toggle_conversation_two_turns_and_second_press_ends_it() -> None:
    m = Machine(mode=Mode.TOGGLE)
    m, seen, actions = run(m, s.Pressed(), s.SetupComplete())
    assert seen == [State.CONNECTING, State.LISTENING]
    assert "send_activity_start" not in names(actions)  # the server detects speech
    m, seen, _ = run(
        m, s.ReplyAudio(), s.TurnComplete(), s.PlaybackDrained(), s.ReplyAudio(), s.Interrupted()
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
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), s.SetupComplete())
    m, seen, actions = run(m, s.Timeout(s.Timer.SILENCE))
    assert seen == [State.IDLE] and "close_session" in names(actions)


def test_late_events_after_hang_up_change_nothing() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.LongPress())
    m2, seen, actions = run(
        m, s.SetupComplete(), s.ReplyAudio(), s.TurnComplete(), s.ConnectionLost("x")
    )
    assert seen == [State.IDLE] * 4
    assert actions == []
    assert m2 == m
