"""A tool's result holding a stream: what its thread reads of it, and what the model is told."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fakes import FakeActions
from google.genai import types
from helpers import until

from device.config import ToolsConfig
from device.tools import RESULT_LIMIT, Device, Registry, ToolBox

#: Where the test's stand-in for an endless stream stops, so that a failing run ends too.
STREAM_CAP = 1_000_000


def streaming_tools(read: list[int]) -> Registry:
    registry = Registry()

    def stream() -> Any:
        """A sensor's readings for ever (here to STREAM_CAP), counted as they are read."""
        for value in range(STREAM_CAP):
            read[0] += 1
            yield value

    @registry.tool
    def readings(device: Device) -> dict[str, Any]:
        """The thermometer's readings, by an owner who put its stream in the result."""
        return {"unit": "C", "readings": stream()}

    return registry


async def test_an_endless_stream_inside_a_tools_result_is_read_no_further_than_could_be_sent(
) -> None:
    """The bound on a tool's iterator held only for one returned bare: the same stream in a
    dict ({"readings": stream()}) was read to its end, which for an endless one is never,
    a list growing in the abandoned thread until the service's memory limit killed the
    box. It is read as far as RESULT_LIMIT could hold, and answered too large."""
    read = [0]
    toolbox = ToolBox(ToolsConfig(enabled=("readings",), timeout_s=30.0), FakeActions(),
                      registry=streaming_tools(read))
    response = await toolbox.run(types.FunctionCall(id="c1", name="readings", args={}))
    assert response.response is not None
    assert "too large" in response.response.get("error", ""), response.response
    await until(lambda: not any(t.name == "tool" for t in threading.enumerate()))
    assert read[0] <= RESULT_LIMIT + 1, f"{read[0]} readings taken from an endless stream"


def stream_tools() -> Registry:
    registry = Registry()

    @registry.tool
    async def motion(device: Device) -> Any:
        """The motion sensor's events, by an owner who wrote it as an async stream."""
        yield {"moved": True}

    return registry


async def test_an_async_stream_tool_is_refused_when_registered_not_at_every_call() -> None:
    """An `async def` tool is refused when it is registered; one that yields (an async
    generator, no coroutine function) was taken: its thread got an async generator it
    never runs, and every call answered the model "the tool's result is not JSON", the
    box started as if the tool worked."""
    with pytest.raises(TypeError, match=r"tool motion: .*async def"):
        registry = stream_tools()
        toolbox = ToolBox(ToolsConfig(enabled=("motion",)), FakeActions(), registry=registry)
        response = await toolbox.run(types.FunctionCall(id="c1", name="motion", args={}))
        raise AssertionError(f"registered, and its call answered {response.response}")
