"""The installed box over its life: an update over the owner's key and a second run.

Reuses tests/test_install_script.py's view of this machine (a throw-away layer over
/etc, /opt, /usr/local and /var/lib) and its stand-ins.
"""

from __future__ import annotations

import os
import pty
import select
import shlex
import time

from system_view import SystemView, require
from test_install_script import (
    INSTALL,
    INSTALLED,
    stand_ins,
    view,
)

__all__ = ["stand_ins", "view"]  # the fixtures, used by name

KEY_FILE = "/etc/live-appliance/api-key"


def install_key_on_a_terminal(view: SystemView, answers: list[str]) -> bytes:
    """The installer's install_key step, as a real (not dry) run from a terminal in the
    view, given `answers` one per key prompt; everything it wrote to the terminal."""
    mounts = " && ".join(
        f"mount -t overlay overlay -o lowerdir={d},upperdir={upper},workdir={work} {d}"
        for d, (upper, work) in view.layers.items()
    )
    step = f'source {shlex.quote(str(INSTALL))} && KEY_READY=0 && install_key "" ""'
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the pty is its terminal, /dev/tty included
        inside = f"{mounts} && exec bash -c {shlex.quote(step)}"
        os.execvp(require("unshare", "util-linux"), ["unshare", "--mount", "sh", "-c", inside])
    seen = b""
    left = list(answers)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if left and seen.count(b"typing is not shown") > len(answers) - len(left):
            os.write(terminal, left.pop(0).encode() + b"\n")
        ready, _, _ = select.select([terminal], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            continue
        try:
            chunk = os.read(terminal, 1024)
        except OSError:  # EIO: the child has exited
            break
        if not chunk:
            break
        seen += chunk
    os.waitpid(pid, 0)
    os.close(terminal)
    assert not left, f"not asked for every answer: {seen!r}"
    return seen


def test_skipping_the_key_prompt_on_an_update_keeps_the_owners_key_file(
    view: SystemView,
) -> None:
    """An update that finds the kept key in quotation marks asks for it again, and
    Enter skips: the owner's key must still be there to fix with sudoedit, as the
    message says, not deleted before anything was typed."""
    view.setup(INSTALLED + f"\nprintf '\"owner-key\"\\n' > {KEY_FILE}\n")
    seen = install_key_on_a_terminal(view, [""])
    assert b"is in quotation marks" in seen, seen
    result = view.run(["cat", KEY_FILE])
    assert result.returncode == 0, f"the owner's key file is gone: {seen!r}"
    assert result.stdout == '"owner-key"\n'


def test_a_key_typed_at_that_prompt_replaces_the_refused_one_root_only(
    view: SystemView,
) -> None:
    view.setup(INSTALLED + f"\nprintf '\"owner-key\"\\n' > {KEY_FILE}\n")
    install_key_on_a_terminal(view, ["AIza-new-key-0123456789"])
    result = view.run(["stat", "-c", "%a %U", KEY_FILE])
    assert result.stdout.split() == ["600", "root"]
    assert view.run(["cat", KEY_FILE]).stdout == "AIza-new-key-0123456789\n"
    assert view.run(["ls", "/etc/live-appliance"]).stdout.split() == ["api-key", "config.toml"]
