"""The installer and uninstaller as an owner meets them: what a dry run's status says, what
a step that fails says, what the steps name, and whose files they replace."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from system_view import SystemView
from test_install_script import (
    FRESH,
    INSTALL,
    INSTALLED,
    ROOT,
    UNINSTALL,
    StandIns,
    in_apt,
    installed,
    steps,
    succeeding_systemctl,
)

#: Each test runs the installer, as tests/test_install_script.py does.
pytestmark = pytest.mark.rig

PI_PACKAGES = ("python3-picamera2", "python3-lgpio")
AGAIN = "fix that and run this script again"


def test_a_dry_run_that_says_a_real_run_would_stop_does_not_exit_0(tmp_path: Path) -> None:
    """On a system whose apt lacks a Pi package the dry run says "a real run would stop
    here", goes on to show the rest, and exited 0: `install-pi.sh --dry-run && sudo
    install-pi.sh` went on to the real run, which stopped there."""
    if all(installed(p) or in_apt(p) for p in PI_PACKAGES):
        pytest.skip("apt here has the Pi packages")
    view, stand_ins = SystemView(tmp_path / "view"), StandIns(tmp_path)
    view.setup(FRESH)
    before = view.snapshot()
    result = view.run(["bash", str(INSTALL), "--dry-run"], env=stand_ins.env())
    assert "a real run would stop here" in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout + result.stderr
    assert "a real run would stop" in result.stderr, result.stderr
    assert stand_ins.calls() == [] and view.snapshot() == before


def source_and(steps_run: str, fails: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installer's functions `steps_run`, every command they run succeeding (and doing
    nothing) but the one whose line holds `fails`."""
    script = (f"source {shlex.quote(str(INSTALL))}\nKEPT_DISABLED=0\n"
              f'run() {{ [[ "$*" != *{shlex.quote(fails)}* ]]; }}\n{steps_run}\n')  # fmt: skip
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          check=False, env={"PATH": "/usr/sbin:/usr/bin:/bin", **env})  # fmt: skip


@pytest.mark.parametrize(
    ("steps_run", "fails", "env"),
    [
        ("create_user", "useradd", {}),
        ("create_user", "usermod", {"SUDO_USER": "nobody"}),
        ("install_unit", "systemctl enable", {}),
        ("install_command", "ln -sfn", {}),
    ],
)
def test_a_user_or_unit_step_that_fails_says_how_to_finish(
    steps_run: str, fails: str, env: dict[str, str]
) -> None:
    """useradd refused (a name in /etc/passwd by hand), `systemctl enable` failing: the
    installer stopped under `set -e` with the tool's status and no word of its own, where
    apt's and pip's failures say what to do."""
    if steps_run == "create_user" and installed_user():
        pytest.skip("this machine has a live-appliance user")
    result = source_and(steps_run, fails, **env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert AGAIN in result.stderr, result.stderr


def installed_user() -> bool:
    return subprocess.run(["id", "-u", "live-appliance"], capture_output=True).returncode == 0


def test_an_uninstall_whose_userdel_fails_says_how_to_finish(tmp_path: Path) -> None:
    """userdel refuses a user with a process still running ("currently used by process"):
    the uninstall stopped there with userdel's status, the group and config steps not
    done, and no word saying to run it again."""
    view = SystemView(tmp_path / "view")
    view.setup(INSTALLED)
    env = succeeding_systemctl(tmp_path)
    userdel = tmp_path / "bin" / "userdel"
    userdel.write_text(
        "#!/bin/sh\necho 'userdel: user live-appliance is currently used by process 4242' >&2\n"
        "exit 8\n"
    )
    userdel.chmod(0o755)
    result = view.run(["bash", str(UNINSTALL)], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert AGAIN in result.stderr, result.stderr


def test_the_python_step_names_only_the_pi_packages_the_box_gets(tmp_path: Path) -> None:
    """With --no-camera --no-gpio the Python step said the venv "sees apt's PyAudio,
    systemd, picamera2 and lgpio", two packages the step before had just left out."""
    view, stand_ins = SystemView(tmp_path / "view"), StandIns(tmp_path)
    view.setup(FRESH)
    result = view.run(["bash", str(INSTALL), "--dry-run", "--no-camera", "--no-gpio"],
                      env=stand_ins.env())  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    title = next(s for s in steps(result.stdout.splitlines()) if s.startswith("Python"))
    assert "picamera2" not in title and "lgpio" not in title, title
    assert "PyAudio" in title


def test_an_unrelated_command_of_the_same_name_is_not_replaced(tmp_path: Path) -> None:
    """/usr/local/bin/live-appliance that is not the installer's link (a `sudo pip install`
    of an old checkout, a script of the owner's): the install replaced it with its link
    without a word, where the uninstaller leaves such a file alone."""
    view, stand_ins = SystemView(tmp_path / "view"), StandIns(tmp_path)
    view.setup(FRESH + "printf '#!/bin/sh\\necho mine\\n' > /usr/local/bin/live-appliance\n"
               "chmod 0755 /usr/local/bin/live-appliance\n")  # fmt: skip
    result = view.run(["bash", str(INSTALL), "--dry-run", "--no-camera", "--no-gpio"],
                      env=stand_ins.env())  # fmt: skip
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert (
        "+ ln -sfn /opt/live-appliance/bin/live-appliance /usr/local/bin/live-appliance"
        not in lines
    ), result.stdout
    assert result.returncode == 1, result.stdout + result.stderr
    assert "/usr/local/bin/live-appliance" in result.stderr, result.stderr
    assert not any(line.startswith("+") for line in lines), "refused before any change"
    # The installer's own link, old (into the venv) or new, is replaced as before.
    for target in ("/opt/live-appliance/venv/bin/live-appliance",
                   "/opt/live-appliance/bin/live-appliance"):  # fmt: skip
        view.setup(f"ln -sfn {target} /usr/local/bin/live-appliance")
        again = view.run(["bash", str(INSTALL), "--dry-run", "--no-camera", "--no-gpio"],
                         env=stand_ins.env())  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr


def test_an_uninstall_forgets_the_retry_units_failed_state_too(tmp_path: Path) -> None:
    """The retry service fails when its start of the service is refused; after the
    uninstall, `systemctl --failed` still listed live-appliance-retry.service, a unit
    whose file was gone: only the main unit's failed state was reset."""
    view, stand_ins = SystemView(tmp_path / "view"), StandIns(tmp_path)
    view.setup(INSTALLED + "".join(
        f"cp {shlex.quote(str(ROOT / 'systemd' / unit))} /etc/systemd/system/\n"
        for unit in ("live-appliance-retry.timer", "live-appliance-retry.service")))  # fmt: skip
    result = view.run(["bash", str(UNINSTALL), "--dry-run"], env=stand_ins.env())
    assert result.returncode == 0, result.stdout + result.stderr
    reset = " ".join(line.strip() for line in result.stdout.splitlines()
                     if "systemctl reset-failed" in line)  # fmt: skip
    for unit in ("live-appliance.service", "live-appliance-retry.service",
                 "live-appliance-retry.timer"):  # fmt: skip
        assert unit in reset, result.stdout


@pytest.mark.parametrize(
    ("mode", "folder_open", "said"),
    [(0o644, True, True), (0o600, True, False), (0o644, False, False)],
)
def test_a_key_file_others_may_read_is_pointed_at_once_the_key_is_stored(
    tmp_path: Path, open_dir: Path, mode: int, folder_open: bool, said: bool
) -> None:
    """`--key-file ~/key.txt`, written under the usual umask (0644) where others may go:
    the installer stored the key root's alone and left the source for every local user
    to read, without a word. A file in a home only its owner may enter (Bookworm's 0700)
    is nobody else's to read, and is not pointed at."""
    view, stand_ins = SystemView(tmp_path / "view"), StandIns(tmp_path)
    view.setup(FRESH)
    folder = open_dir if folder_open else tmp_path / "home"
    folder.mkdir(mode=0o700, exist_ok=True)
    source = folder / "key.txt"
    source.write_text("AIza-install-test-key-0123456789\n")
    source.chmod(mode)
    result = view.run(
        ["bash", str(INSTALL), "--dry-run", "--no-camera", "--no-gpio", "--key-file", str(source)],
        env=stand_ins.env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pointed = [line for line in result.stdout.splitlines() if f"rm {source}" in line]
    assert bool(pointed) is said, result.stdout
