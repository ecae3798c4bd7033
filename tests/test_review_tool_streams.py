"""A tool's stream inside what it returns is read no further than could be sent, whatever
holds it (review of stop 55)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest
from fakes import FakeActions
from google.genai import types

from device.config import ToolsConfig
from device.tools import RESULT_LIMIT, Device, Registry, ToolBox

#: Far past what RESULT_LIMIT can hold, yet finite: an endless stream would not end the test.
LONG = 20 * RESULT_LIMIT


class Readings(NamedTuple):
    sensor: str
    values: Any


@pytest.mark.parametrize(
    "holder",
    [
        lambda stream: collections.OrderedDict(readings=stream),
        lambda stream: collections.defaultdict(list, readings=stream),
        lambda stream: Readings("thermometer", stream),
    ],
    ids=["OrderedDict", "defaultdict", "namedtuple"],
)
async def test_a_stream_in_a_dict_or_tuple_of_another_kind_is_read_no_further_than_could_be_sent(
    holder: Callable[[Iterator[int]], Any],
) -> None:
    """A tool returning its sensor's stream in a dict was bounded at stop 55, but only in a
    plain dict, list or tuple: in an OrderedDict, a defaultdict or a namedtuple, the stream
    was read to its end, for an endless one until the service's memory limit killed the
    box (the model answered "timed out" meanwhile)."""
    read = 0

    def stream() -> Iterator[int]:
        nonlocal read
        for value in range(LONG):
            read += 1
            yield value

    registry = Registry()

    @registry.tool
    def sensor(device: Device) -> Any:
        """The sensor's readings, as they come."""
        return holder(stream())

    toolbox = ToolBox(ToolsConfig(enabled=("sensor",), timeout_s=10.0), FakeActions(),
                      registry=registry)  # fmt: skip
    response = await toolbox.run(types.FunctionCall(id="c1", name="sensor", args={}))
    assert response.response is not None
    assert "too large" in response.response.get("error", ""), str(response.response)[:200]
    assert read <= RESULT_LIMIT + 1, f"{read} readings taken from the stream"
