"""`scripts/demo --out DIR` (and bench's, soak's): a relative path is where the user typed
the command, as with any command, not inside the checkout the script lives in.

A copy of scripts/ runs in a scratch checkout whose setup is a stand-in and whose rig
tool is a stand-in module that writes its --out, run by this machine's Python.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The rig's tool: writes a file at its --out (a directory for the demo, a JSON otherwise).
TOOL = """\
import argparse, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("{default}"))
out = parser.parse_args().out
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("written")
"""


@pytest.mark.parametrize(
    ("script", "module", "default"),
    [("demo", "demo", "demo-out"), ("bench", "bench", "bench-results.json"),
     ("soak", "soak", "soak-results.json")],
)  # fmt: skip
def test_a_relative_out_is_taken_from_where_the_user_typed_it(
    tmp_path: Path, script: str, module: str, default: str
) -> None:
    checkout = tmp_path / "a checkout"
    shutil.copytree(ROOT / "scripts", checkout / "scripts")
    (checkout / "scripts" / "setup").write_text("#!/bin/bash\nexit 0\n")
    package = checkout / "rig" / module
    package.mkdir(parents=True)
    (checkout / "rig" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(TOOL.format(default=default))
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "python").symlink_to(sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / script), "--out", "results/mine"],
        cwd=home, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (home / "results" / "mine").read_text() == "written"
    assert not (checkout / "results").exists(), "written inside the checkout"
