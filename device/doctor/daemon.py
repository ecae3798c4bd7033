"""The running daemon as its control socket describes it: found, and put into words.

Used by `doctor` (hardware the service holds is not tested behind its back) and by
`ctl status`. Standard library only, so `ctl` answers at once.
"""

from __future__ import annotations

import os
from typing import Any

from device.control_client import Barred, ControlError, NotRunning, request

#: Faults of a sound card, which the audio keeper tries at once when one appears.
SOUND_DEVICES = frozenset({"microphone", "speaker"})

#: The turn timings the daemon reports, in the order a turn happens, with their labels.
TIMINGS = (
    ("press_to_first_audio_ms", "press to first audio sent"),
    ("release_to_activity_end_ms", "release to end of turn sent"),
    ("release_to_first_reply_ms", "release to first reply"),
    ("turn_ms", "whole turn"),
)


def running_status(socket_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The daemon's status, or None when nothing serves the socket.

    A socket that exists but cannot be read (permissions, a hung daemon) still means
    a daemon holds the hardware: its status is then only the reason it is unreadable,
    and "barred" when this user may not use the socket (nothing said whether one runs).
    """
    try:
        return request(socket_path, "status", timeout=2.0)
    except NotRunning:
        return None
    except ControlError as exc:
        status: dict[str, Any] = {"status": f"unreadable ({exc})", "unreadable": True}
        return status | {"barred": True} if isinstance(exc, Barred) else status


def run_by_hand(status: dict[str, Any]) -> str | None:
    """ "a live-appliance run by hand, pid N" when systemd did not start the daemon (a
    `live-appliance run` in a shell has no NOTIFY_SOCKET), else None: the service (or a
    daemon too old to say)."""
    if status.get("systemd") is not False:
        return None
    return f"a live-appliance run by hand, pid {status.get('pid', '?')}"


def what_runs(status: dict[str, Any]) -> str:
    """The daemon in words: the copy run by hand as `run_by_hand` names it, or the service."""
    return run_by_hand(status) or "the running service"


def how_to_restart(status: dict[str, Any]) -> str:
    """How the owner restarts this daemon: a copy run by hand is no service to restart."""
    if run_by_hand(status) is not None:
        return "Ctrl-C where the copy runs, and run it again"
    return "sudo systemctl restart live-appliance"


def where_it_logs(status: dict[str, Any], journalctl_option: str = "-f") -> str:
    """Where this daemon's lines are read: a copy run by hand writes to its terminal."""
    if run_by_hand(status) is not None:
        return "its terminal"
    return f"journalctl -u live-appliance {journalctl_option}"


def in_use(status: dict[str, Any], purpose: str) -> str:
    """The devices are held by this daemon: said with how the owner frees them for `purpose`
    ("test it"). A copy run by hand is no service to stop."""
    if (copy := run_by_hand(status)) is not None:
        return f"in use by {copy} (stop it, Ctrl-C where it runs, to {purpose})"
    return f"in use by the running service (sudo systemctl stop live-appliance to {purpose})"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f} s" if value >= 10000 else f"{value:.0f} ms"


def turn_line(turn: dict[str, Any]) -> str:
    """One finished turn: its number, whether it ended in the error state, its timings."""
    spans = ", ".join(f"{label} {_ms(turn.get(key))}" for key, label in TIMINGS)
    failed = " (failed)" if turn.get("failed") else ""
    return f"turn {turn.get('turn', '?')}{failed}: {spans}"


def _state(status: dict[str, Any]) -> str:
    """Its state in words: before READY its machine reads idle, though nothing answers yet."""
    if status.get("ready") is False:
        return "starting (opening the microphone and the speaker)"
    return str(status.get("status", status.get("state", "unknown")))


def one_line(status: dict[str, Any]) -> str:
    """The status in a few words, for beside a doctor line."""
    parts = [_state(status)]
    if "session_open" in status:
        parts.append("session open" if status["session_open"] else "session closed")
    turns = status.get("turns") or []
    if turns:
        parts.append(f"last {turn_line(turns[-1])}")
    return ", ".join(parts)


def summary_lines(status: dict[str, Any]) -> list[str]:
    """What `ctl status` prints: state, session, devices, the last turns and their timings.

    Fields a daemon does not report are left out, so an older or newer daemon still reads.
    """
    state = _state(status)
    mode = f" ({status['mode']} mode)" if status.get("mode") else ""
    lines = [f"state:    {state}{mode}"]
    if "session_open" in status:
        session = "open" if status["session_open"] else "closed"
        if status.get("session_open") and "connected" in status:
            session += ", connected" if status["connected"] else ", reconnecting"
        if status.get("session_id"):
            session += f", id {status['session_id']}"
        if "connections" in status:
            session += f"; {status['connections']} connections since start"
        if status.get("live_client") is False:
            session += "; the Live client still being built"
        lines.append(f"session:  {session}")
    if faults := [str(fault) for fault in status.get("faults") or ()]:
        # The audio keeper looks at the sound hardware every second: a card plugged in
        # is tried then, not at the end of the wait (an owner would restart the service).
        card = " at once when a sound card is plugged in, else" if SOUND_DEVICES & {*faults} else ""
        lines.append(
            f"faults:   {', '.join(faults)} (tried again by itself,{card} less often the "
            "longer it stays away; the journal says when it is back)"
        )
    if isinstance(off := status.get("leds_off"), dict):
        again = (
            " (each frame tried again until one shows)"
            if off.get("opened")
            else " (tried again by itself, less often the longer it lasts)"
        )
        lines.append(f"leds:     off: {off.get('reason')}{again if off.get('tried_again') else ''}")
    if status.get("button_held"):
        lines.append(
            "button:   reads pressed since the start (a short, the wrong pin, something on "
            "it): ignored until it is let go"
        )
    if unkept := status.get("settings_not_kept"):
        lines.append(
            f"settings: not kept in {unkept.get('path')}: {unkept.get('error')} (the next "
            "start plays the volume kept last, not this one; the doctor says why)"
        )
    audio = []
    if "outbox_ms" in status:
        audio.append(f"{status['outbox_ms']} ms waiting to be sent")
    if "mic_overflows" in status:
        audio.append(f"{status['mic_overflows']} microphone overflows")
    if status.get("mic_silent"):
        audio.append("the microphone recorded only digital silence in the last turn (muted?)")
    if "volume" in status:
        audio.append(f"volume {status['volume']:.0%}")
    why = f" ({status['mic_missing']})" if status.get("mic_missing") else ""
    if status.get("mode") == "push_to_talk":  # no canceller runs: only noise suppression
        if why:
            audio.append(f"noise suppression off{why}")
    elif status.get("mic_during_playback"):
        audio.append(f"microphone while speaking: {status['mic_during_playback']}{why}")
    if audio:
        lines.append(f"audio:    {', '.join(audio)}")
    failure = status.get("camera_failure")
    if status.get("camera"):  # filming, or stuck in a call that may be: its light on
        lines.append(f"camera:   on{f'; failed: {failure}' if failure else ''}")
    elif failure:
        lines.append(f"camera:   failed: {failure} (tried again in the next conversation)")
    elif "camera" in status:
        lines.append("camera:   off")
    turns = status.get("turns") or []
    if turns:
        lines.append(f"last {len(turns)} turn{'s' if len(turns) > 1 else ''}:")
        lines += [f"  {turn_line(turn)}" for turn in turns]
    else:
        lines.append("no finished turns yet")
    return lines
