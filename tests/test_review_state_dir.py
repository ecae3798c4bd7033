"""The state file's save in a directory the service may not write: the reason it is told."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_persist import SAVE_VOLUME, SERVICE_UID


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="root's directory, saved in by another"
)
def test_a_state_directory_the_service_may_not_write_is_said_as_permission_denied(
    open_dir: Path,
) -> None:
    """A state directory left root's (made by hand, or a backup restored as root): the
    service cannot keep its volume, and `ctl status` and the doctor say why by the errno,
    which decides the fix (EACCES: the directory's owner). It said ENOENT, "No such file or
    directory", for a directory that is there, about a file nobody asked for."""
    place = open_dir / "state"
    place.mkdir(mode=0o755)  # root's: the service may read it, not write in it
    (place / "state.json").write_text('{"volume": 0.5}\n')
    saved = subprocess.run(
        ["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups",
         sys.executable, "-c", SAVE_VOLUME, str(place / "state.json")],
        env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    problem = ast.literal_eval(saved.stdout.strip())  # the dict ctl status shows, as printed
    assert problem["errno"] == "EACCES", problem
    assert problem["error"] == "Permission denied", problem
    assert "Permission denied" in saved.stderr, saved.stderr  # the journal's line
    assert json.loads((place / "state.json").read_text()) == {"volume": 0.5}
