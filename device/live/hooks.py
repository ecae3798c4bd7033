"""How a connection reports to the rest of the appliance: no SDK here, so the session
can be built (at the daemon's start) before the SDK is imported."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from device.outbox import Item
from device.states import Event


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
    #: Returns once the speaker has room for more reply audio; None: never wait.
    wait_for_room: Callable[[], Awaitable[None]] | None = None
