"""Time on a box without a battery clock: what the model is told of the time, as the owner
sets the clock and the time zone while the service runs."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fakes import FakeActions
from google.genai import types
from system_view import SystemView

from device.config import ToolsConfig
from device.tools import ToolBox

ZONES = Path("/usr/share/zoneinfo")

#: Asks get_time (the real clock and zone), sets the zone the way `timedatectl
#: set-timezone` does (a new /etc/localtime link put in place of the old one), asks again.
ASK_SET_ASK = """
import asyncio, json, os, sys
from pathlib import Path
from google.genai import types
from device.config import ToolsConfig
from device.tools import ToolBox
sys.path.insert(0, sys.argv[1])
from fakes import FakeActions

async def ask():
    box = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions(), root=Path(sys.argv[2]))
    call = types.FunctionCall(id="1", name="get_time", args={})
    return (await box.run(call)).response

async def main():
    before = await ask()
    os.symlink("/usr/share/zoneinfo/Europe/Paris", "/etc/localtime.new")
    os.replace("/etc/localtime.new", "/etc/localtime")
    print(json.dumps([before, await ask()]))

asyncio.run(main())
"""


@pytest.mark.skipif(not (ZONES / "Europe/Paris").exists(), reason="needs tzdata")
def test_get_time_tells_the_zone_the_owner_set_while_the_service_runs(tmp_path: Path) -> None:
    """A box installed with the image's zone (UTC) whose owner then ran `sudo timedatectl
    set-timezone Europe/Paris`: asked the time, the model was told UTC's, an hour off,
    until the service was restarted (glibc reads the zone once, at the first local time)."""
    view = SystemView(tmp_path / "view")
    view.setup(f"ln -sfn {ZONES}/Etc/UTC /etc/localtime")
    env = {k: v for k, v in os.environ.items() if k != "TZ"}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    tests = str(Path(__file__).parent)
    done = view.run([sys.executable, "-c", ASK_SET_ASK, tests, str(tmp_path)], env=env)
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout)
    assert before["timezone"] == "UTC", before
    paris = datetime.now(ZoneInfo("Europe/Paris"))
    assert (after["timezone"], after["utc_offset"]) == (f"{paris:%Z}", f"{paris:%z}"), after


@pytest.mark.parametrize(
    ("zone", "warned"),
    [("Etc/UTC", True), ("UTC", True), ("Europe/London", False), ("America/New_York", False)],
)  # fmt: skip
async def test_get_time_says_a_utc_zone_may_not_be_where_the_box_is(
    tmp_path: Path, zone: str, warned: bool
) -> None:
    """A box on an image whose zone is UTC (Ubuntu's, a Debian install that skipped the
    question), never set by its owner in New York: asked the time, the model was told
    UTC's as "the local time of the place the device is in" and said 13:05 at 8:05."""
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), FakeActions(), root=tmp_path,
                      now=lambda: datetime(2026, 12, 6, 13, 5, tzinfo=ZoneInfo(zone)))
    response = await run_alone(toolbox, "get_time")
    assert response["time"] == "13:05", response
    assert ("UTC" in response.get("warning", "")) == warned, response


async def run_alone(toolbox: ToolBox, name: str) -> dict[str, object]:
    response = await toolbox.run(types.FunctionCall(id="call-1", name=name, args={}))
    return response.response or {}
