"""The installed layout as an owner meets it: what the installer leaves when the owner's
shell is not a fresh Pi's (a tighter umask), how it takes the key, the key file's mode."""

from __future__ import annotations

import os
import pty
import select
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from system_view import SystemView
from test_install_script import INSTALL, INSTALLED, KEY, StandIns, dry_run


@pytest.fixture
def view(tmp_path: Path) -> SystemView:
    return SystemView(tmp_path / "view")


@pytest.fixture
def stand_ins(tmp_path: Path) -> StandIns:
    return StandIns(tmp_path)


#: Every step of install_main, replaced by one that prints its name and the umask it runs with.
STEPS = (
    "check_os check_arch check_root check_python install_packages create_user install_venv "
    "install_command install_config install_key install_unit start_service"
)


def test_every_step_runs_with_a_umask_that_lets_the_service_read_what_root_installed() -> None:
    """An owner whose shell has umask 027 or 077 (sudo keeps the stricter of its own 022
    and theirs) made a venv only root may enter: the service, run as live-appliance,
    failed at every start with 203/EXEC, and `live-appliance ctl` without sudo with
    "Permission denied"."""
    stubs = "\n".join(f'{step}() {{ echo "{step} $(umask)"; }}' for step in STEPS.split())
    script = f"source {shlex.quote(str(INSTALL))}\n{stubs}\numask 077\ninstall_main\n"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    names = STEPS.split()
    shown = dict(line.split() for line in result.stdout.splitlines()
                 if line.split()[0] in names)  # fmt: skip
    assert set(shown) == set(names), result.stdout
    assert {step: mask for step, mask in shown.items() if mask != "0022"} == {}


def type_on_the_terminal(command: str, typed: str) -> tuple[bytes, bool]:
    """Run `command` on a terminal (a pty), type `typed` and Enter once it asks; what the
    terminal showed, and whether it ended without an end-of-file (Ctrl-D) too."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the pty is its terminal
        os.execvp("bash", ["bash", "-c", command])
    seen, typed_at, ctrl_d = b"", None, False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = time.monotonic()
        if typed_at is None and (b"key" in seen.lower() or now > deadline - 18):
            os.write(terminal, typed.encode() + b"\n")
            typed_at = now
        elif typed_at is not None and not ctrl_d and now - typed_at > 3:
            os.write(terminal, b"\x04")  # still waiting: end the input as a person would
            ctrl_d = True
        ready, _, _ = select.select([terminal], [], [], 0.2)
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
    return seen, not ctrl_d


def test_key_file_standard_input_on_a_terminal_asks_and_does_not_show_the_key() -> None:
    """The README's `--key-file -`, typed at a terminal: the installer printed nothing and
    waited, the pasted key stood on the screen (and in a terminal's scrollback), and
    Enter did not end it: only Ctrl-D, which nothing said."""
    command = (f"source {shlex.quote(str(INSTALL))} && key=$(read_key -) && "
               'echo "read ${#key} characters"')  # fmt: skip
    seen, ended_at_enter = type_on_the_terminal(command, KEY)
    assert f"read {len(KEY)} characters".encode() in seen, seen
    assert KEY.encode() not in seen, "the key was shown on the screen"
    assert b"typing is not shown" in seen, seen
    assert ended_at_enter, "Enter did not end the key: it waited for Ctrl-D"


def test_a_kept_key_the_service_would_refuse_is_still_made_root_only(
    view: SystemView, stand_ins: StandIns
) -> None:
    """A key file the owner wrote with `sudo tee` (0644) holding the key in quotation
    marks: the update says to fix it, and left it readable by the live-appliance group
    (the owner, the service outside its credential) where a good key is made 0600."""
    view.setup(INSTALLED + "\nprintf '\"owner-key\"\\n' > /etc/live-appliance/api-key"
               "\nchmod 0644 /etc/live-appliance/api-key\n")  # fmt: skip
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert any(line.startswith("the key in /etc/live-appliance/api-key is in quotation marks")
               for line in lines), lines  # fmt: skip
    assert "+ chown root:root /etc/live-appliance/api-key" in lines
    assert "+ chmod 0600 /etc/live-appliance/api-key" in lines


def test_an_update_opens_a_venv_an_earlier_install_left_to_root_alone(
    view: SystemView, stand_ins: StandIns
) -> None:
    """Run again, as the journal's 203/EXEC sends the owner to do, the installer kept that
    venv as it was ("exists"): the service still could not start."""
    view.setup(INSTALLED + "\nchmod -R go-rwx /opt/live-appliance\n")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert "+ chmod -R a+rX /opt/live-appliance" in lines, lines
    view.setup(INSTALLED + "\nchmod -R a+rX /opt/live-appliance\n")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert not any(line.startswith("+ chmod -R") for line in lines), "nothing to mend"


def test_run_as_root_itself_it_says_how_to_let_an_owner_use_ctl(
    view: SystemView, stand_ins: StandIns
) -> None:
    """Run from a root shell (no sudo) no owner is added to the group; `live-appliance ctl`
    then told the owner "the installer adds the owner to live-appliance", which it had not,
    and nothing said how."""
    view.setup(INSTALLED)
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]  # no SUDO_USER
    assert any("usermod -a -G live-appliance" in line and "ctl" in line
               for line in lines), lines  # fmt: skip
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL, SUDO_USER="owner")]
    assert "+ usermod -a -G live-appliance owner" in lines


@pytest.mark.parametrize("fails", ["update", "install"])
def test_apt_failing_without_a_network_says_how_to_finish(fails: str) -> None:
    """A fresh Pi not on the network yet: apt's own error, then the installer stopped
    under `set -e` without a word of its own, where pip's failures say what to do."""
    script = (f"source {shlex.quote(str(INSTALL))}\n"
              "package_installed() { return 1; }\npackage_available() { return 0; }\n"
              f'run() {{ [[ "$*" != *"apt-get {fails}"* ]]; }}\n'
              "install_packages\n")  # fmt: skip
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "apt" in result.stderr and result.stderr.rstrip().endswith(
        "fix that and run this script again: it installs what is still missing"
    ), result.stderr
