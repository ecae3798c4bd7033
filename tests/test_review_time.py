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
from system_view import SystemView

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
