"""Reading what the local server received from our client: the setup, tool responses."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from helpers import until

from device.config import Config, LiveConfig, Secret
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import Event, SetupComplete
from rig.server.server import LiveServer
from rig.server.wire import has, pick


def config_for(server: LiveServer, **sections: Any) -> Config:
    """Defaults pointed at the local server; `live=dict(...)` etc. change a section."""
    base = Config(live=LiveConfig(base_url=server.base_url), api_key=Secret(server.api_key))
    changes = {
        name: dataclasses.replace(getattr(base, name), **values)
        for name, values in sections.items()
    }
    return dataclasses.replace(base, **changes)


def at(setup: dict, *path: str) -> Any:
    """A nested value under either key spelling (the SDK mixes camelCase and snake_case)."""
    value: Any = setup
    for key in path:
        value = pick(value, key)
    return value


def function_names(setup: dict) -> list[str]:
    return [d["name"] for tool in at(setup, "tools") or []
            for d in pick(tool, "function_declarations") or []]


def searches(setup: dict) -> int:
    return sum(has(tool, "google_search") for tool in at(setup, "tools") or [])


def instruction(setup: dict) -> str:
    (part,) = at(setup, "system_instruction", "parts")
    return part["text"]


def tool_responses(server: LiveServer) -> list[dict[str, Any]]:
    """Every function response that reached the server, as sent."""
    return [
        response
        for entry in server.entries(direction="in") if entry.kind == "tool_response"
        for response in entry.raw["tool_response"]["functionResponses"]
    ]


@contextlib.asynccontextmanager
async def set_up_link(server: LiveServer) -> AsyncIterator[tuple[LiveLink, Outbox, list[Event]]]:
    """A link to `server` through the real SDK, its setup complete: with the outbox it
    sends from and the events it posts."""
    events: list[Event] = []
    outbox = Outbox(5)
    link = LiveLink(config_for(server), outbox, events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        yield link, outbox, events
    finally:
        await link.close()
