"""A tool's result holding a sensor's stream inside a kind of value `_taken` did not walk:
a dataclass, a set or frozenset, a deque, a pydantic model. The JSON of each is made by
pydantic, which reads an iterator in it to its end: an endless one for ever, a list growing
in the abandoned tool thread until the service's memory limit killed the box (the model
told "timed out" meanwhile). The same test as stop 56's for an OrderedDict, with these."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from test_tools import (
    test_a_stream_in_a_dict_or_tuple_of_another_kind_is_read_no_further_than_could_be_sent as read_no_further,  # noqa: E501
)


@dataclasses.dataclass
class Reading:
    sensor: str
    values: Any


class ReadingModel(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    sensor: str
    values: Any


@pytest.mark.parametrize(
    "holder",
    [
        lambda stream: Reading("thermometer", stream),
        lambda stream: {stream},
        lambda stream: frozenset({stream}),
        lambda stream: ReadingModel(sensor="thermometer", values=stream),
        lambda stream: {"readings": [Reading("thermometer", stream)]},
        lambda stream: collections.deque([stream]),
    ],
    ids=["dataclass", "set", "frozenset", "pydantic model", "dataclass in a dict", "deque"],
)
async def test_a_stream_in_a_dataclass_set_or_model_is_read_no_further_than_could_be_sent(
    holder: Callable[[Iterator[int]], Any],
) -> None:
    await read_no_further(holder)
