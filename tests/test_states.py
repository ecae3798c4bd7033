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
    assert got.index("finish_capture") < got.index("send_activity_end")
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
    assert names(actions)[0] == "clear_playback", "silence first: it is what the person hears"
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


def test_a_reply_that_never_starts_ends_the_turn_with_the_error_earcon() -> None:
    m, _, actions = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released())
    assert "start_timer:reply" in names(actions)
    m, seen, actions = run(m, s.Timeout(s.Timer.REPLY))
    assert seen == [State.IDLE] and m.session_open
    assert "earcon:error" in names(actions)
    m, _, actions = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released(), s.ReplyAudio())
    assert "cancel_timer:reply" in names(actions)
    m, seen, _ = run(m, s.Timeout(s.Timer.REPLY))
    assert seen == [State.SPEAKING], "a late timer changes nothing once the reply plays"


def test_reconnecting_while_thinking_ends_the_turn_and_the_session_lives_on() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released())
    m, seen, actions = run(m, s.Reconnecting("close code 1011"))
    assert seen == [State.IDLE] and m.session_open and not m.connected
    assert "earcon:error" in names(actions) and "close_session" not in names(actions)
    m, seen, actions = run(m, s.Pressed(), s.Reconnected())
    assert seen == [State.CONNECTING, State.LISTENING]
    assert "open_session" not in names(actions), "the session is still open"


def test_reconnecting_mid_reply_plays_what_arrived_then_the_turn_is_over() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released(), s.ReplyAudio())
    m, seen, _ = run(m, s.Reconnecting("dropped"))
    assert seen == [State.SPEAKING] and m.reply_done
    m, seen, _ = run(m, s.PlaybackDrained())
    assert seen == [State.IDLE]


def test_a_session_started_afresh_says_so_with_an_earcon() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released(), s.TurnComplete())
    m, _, actions = run(m, s.Reconnecting("stall"), s.Reconnected(history_lost=True))
    assert "earcon:restart" in names(actions) and m.connected
    _, _, actions = run(m, s.Reconnecting("stall"), s.Reconnected(history_lost=False))
    assert "earcon:restart" not in names(actions)


def test_a_text_turn_opens_a_session_and_waits_for_its_reply() -> None:
    m, seen, actions = run(Machine(), s.TextTurn("The washing is done."), s.SetupComplete())
    assert seen == [State.CONNECTING, State.THINKING]
    wanted = ["open_session", "send_text:The washing is done."]
    assert [n for n in names(actions) if n in wanted] == wanted
    m, seen, _ = run(m, s.ReplyAudio(), s.TurnComplete(), s.PlaybackDrained())
    assert seen[-1] is State.IDLE
    _, seen, actions = run(Machine(mode=Mode.TOGGLE), s.TextTurn("Hello"))
    assert seen == [State.CONNECTING] and "start_capture" in names(actions)
    assert names(actions)[-1] == "send_text:Hello"


def test_the_model_hangs_up_after_its_goodbye() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(), s.Released(), s.ReplyAudio())
    m, seen, actions = run(m, s.EndConversation())
    assert seen == [State.SPEAKING] and m.ending and "close_session" not in names(actions)
    m, seen, actions = run(m, s.TurnComplete(), s.PlaybackDrained())
    assert seen[-1] is State.IDLE and not m.session_open and not m.ending
    assert "close_session" in names(actions)


def test_a_lost_device_is_an_error_until_every_device_is_back() -> None:
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete())
    m, seen, actions = run(m, s.DeviceFailed("microphone", "unplugged"))
    assert seen == [State.ERROR] and not m.session_open
    assert "close_session" in names(actions) and m.error == "microphone: unplugged"
    m, seen, actions = run(
        m, s.DeviceFailed("speaker", "unplugged"), s.Timeout(s.Timer.ERROR), s.Pressed()
    )
    assert seen == [State.ERROR] * 3 and names(actions)[-1] == "earcon:error"
    m, seen, _ = run(m, s.DeviceRecovered("microphone"))
    assert seen == [State.ERROR] and m.faults == frozenset({"speaker"})
    m, seen, _ = run(m, s.DeviceRecovered("speaker"))
    assert seen == [State.IDLE] and not m.faults and not m.error


def test_hands_free_the_model_hangs_up_after_its_goodbye_too() -> None:
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), s.SetupComplete())
    m, seen, actions = run(m, s.EndConversation())  # the call comes before the goodbye's audio
    assert seen == [State.LISTENING] and m.ending and "close_session" not in names(actions)
    m, seen, actions = run(m, s.ReplyAudio(), s.TurnComplete(), s.PlaybackDrained())
    assert seen[-1] is State.IDLE and not m.session_open and "close_session" in names(actions)


def test_a_turn_handed_over_while_connecting_waits_for_its_reply_with_a_timer() -> None:
    _, seen, actions = run(Machine(), s.Pressed(), s.Released(), s.SetupComplete())
    assert seen == [State.CONNECTING, State.CONNECTING, State.THINKING]
    assert names(actions).count("start_timer:reply") == 2, "at the release and when connected"
