"""The appliance's parts, made from the configuration: the real ones by default.

The appliance asks this factory for every part it uses (microphone, speaker,
camera, LEDs, button, Live link, control socket, systemd notifier, state file,
tools), so a test can hand it fakes by overriding a method, and drive the real
appliance in-process. Nothing is opened here: each part opens its hardware in
its own `start()`, which the appliance calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from device.audio import echo
from device.audio.capture import Capture
from device.audio.playback import Playback
from device.config import Config
from device.control import ControlServer
from device.hw.button import ButtonInput
from device.hw.camera import CameraFeed
from device.hw.leds import LedDriver, open_leds
from device.live.hooks import SpeakerRoom
from device.persist import StateFile, state_dir
from device.service import Notifier

if TYPE_CHECKING:
    from device.live.session import LiveLink
    from device.outbox import Item, Outbox
    from device.states import Event
    from device.tools import DeviceActions, ToolBox


class Parts:
    """Makes each part of the appliance; override a method to put a fake in its place."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @cached_property
    def mic_plan(self) -> echo.Plan:
        """How the box keeps its own voice out of the microphone, as it can here."""
        audio, hands_free = self.cfg.audio, self.cfg.button.mode == "toggle"
        return echo.plan(audio.mic_during_playback, audio.noise_suppression, hands_free)

    @cached_property
    def _far_end(self) -> echo.FarEnd | None:
        """What the speaker played, for the microphone's echo canceller: both share it."""
        return echo.FarEnd() if self.mic_plan.echo else None

    def microphone(
        self,
        on_chunk: Callable[[bytes, float], None],
        on_overflow: Callable[[int], None],
        preroll: int,
        on_pause: Callable[[], None],
    ) -> Capture:
        audio, plan = self.cfg.audio, self.mic_plan
        cleaning = plan.echo or plan.noise
        return Capture(
            on_chunk,
            device=audio.input_device,
            chunk_ms=audio.chunk_ms,
            on_overflow=on_overflow,
            preroll=preroll,
            on_pause=on_pause,
            cleaner=echo.Canceller(self._far_end, noise=plan.noise) if cleaning else None,
        )

    def speaker(self) -> Playback:
        audio = self.cfg.audio
        return Playback(
            device=audio.output_device, period_ms=audio.period_ms, far_end=self._far_end
        )

    def camera(self, on_frame: Callable[[bytes, float], None]) -> CameraFeed:
        """Lingering no longer than `end_after_silence_s`: nobody talking, the camera must
        be off within that silence and a second of the last word, follow-up or not."""
        camera, silence_s = self.cfg.camera, self.cfg.conversation.end_after_silence_s
        return CameraFeed(replace(camera, linger_s=min(camera.linger_s, silence_s)), on_frame)

    def leds(self) -> LedDriver:
        """The configured LEDs, opened; raises what stopped them (`leds_failure` says it in
        words): the appliance goes on without them and tries them again."""
        return open_leds(self.cfg.leds)

    def button(self, on_edge: Callable[[str, float], None]) -> ButtonInput:
        button = self.cfg.button
        return ButtonInput(
            button.pin,
            on_edge,
            active_high=button.active_high,
            bounce_time=button.bounce_ms / 1000 or None,
            hold_time=button.long_press_s or None,
        )

    def link(
        self,
        outbox: Outbox,
        on_event: Callable[[Event], None],
        on_sent: Callable[[Item, float], None],
        tools: ToolBox | None,
        speaker: SpeakerRoom,
    ) -> LiveLink:
        from device.live.session import LiveLink  # the SDK: only for the daemon

        return LiveLink(
            self.cfg, outbox, on_event, on_sent, tools=tools, speaker=speaker
        )

    def tools(self, actions: DeviceActions) -> ToolBox | None:
        if not self.cfg.tools.enabled:
            return None
        from device.tools import ToolBox

        return ToolBox(self.cfg.tools, actions)

    def control(
        self, handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    ) -> ControlServer:
        control = self.cfg.control
        return ControlServer(control.socket, handler, mode=control.mode)

    def notifier(self) -> Notifier:
        return Notifier()

    def state_file(self) -> StateFile:
        return StateFile(state_dir(self.cfg.service) / "state.json")
