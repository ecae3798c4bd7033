"""How a connection reports to the rest of the appliance: no SDK here, so the session
can be built (at the daemon's start) before the SDK is imported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from device.outbox import Item
from device.states import Event


class SpeakerRoom(Protocol):
    """How much more reply audio the speaker takes (Playback's)."""

    def has_room(self) -> bool:
        """Less than the speaker's limit of audio waits to be played."""

    async def wait_for_room(self) -> None:
        """Returns once it has room."""


@dataclass
class Hooks:
    """How a connection reports to the rest of the appliance (all run on the loop).

    `session` is the number of the session the connection serves; every event it
    reports carries it, so the appliance can tell a closed session's events apart.
    """

    session: int
    on_event: Callable[[Event], None]
    on_sent: Callable[[Item, float], None]
    on_handle: Callable[[str], None]
    #: The speaker reply audio is handed to as it has room; None: never wait.
    speaker: SpeakerRoom | None = None
