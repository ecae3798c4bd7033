"""Upgrade day: a box updated by the installer, or with Raspberry Pi OS upgraded under it.

What the owner sees run in the same private view of this machine's root as
tests/test_install_script.py: the service's ExecStart and the `live-appliance` command,
as the installer leaves them.
"""

from __future__ import annotations

import shlex
import sysconfig
from pathlib import Path

import pytest
from system_view import SystemView
from test_install_script import FRESH, INSTALL, INSTALLED, ROOT, SYSTEM_SITE, StandIns, dry_run

from device import cli
from rig.unit import service_directives

#: The service's own environment: no PYTHONPATH leading to this checkout.
SERVICE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
VENV_COMMAND = "/opt/live-appliance/venv/bin/live-appliance"
#: What pip puts in the venv for the appliance's console script.
CONSOLE_SCRIPT = (
    "#!/opt/live-appliance/venv/bin/python\n"
    "import sys\n"
    "from device.cli import main\n"
    "sys.exit(main())\n"
)


@pytest.fixture
def view(tmp_path: Path) -> SystemView:
    return SystemView(tmp_path / "view")


def a_box(view: SystemView, setup: str) -> None:
    """An installed box as `setup` leaves it, with the installer's command step run on it."""
    view.setup(setup)
    view.setup(f"bash -c {shlex.quote(f'source {INSTALL} && install_command')}")


def what_the_owner_sees(view: SystemView) -> list[tuple[int, str, str]]:
    """The service's start (its ExecStart) and `live-appliance doctor`: status and output."""
    exec_start = shlex.split(service_directives()["ExecStart"][0])
    results = []
    for argv in (exec_start, ["/usr/local/bin/live-appliance", "doctor"]):
        result = view.run(argv, env=SERVICE_ENV)
        results.append((result.returncode, result.stdout, result.stderr))
    return results


def test_after_an_os_upgrade_the_service_and_the_doctor_say_to_run_the_installer_again(
    view: SystemView,
) -> None:
    """Bookworm to Trixie: the venv's python is now 3.13, its packages in lib/python3.11.
    The service failed at every start with a traceback (`No module named 'device'`),
    five times, then again every ten minutes for good, and the doctor with the same
    traceback: nothing said to run the installer again. A configuration-error status
    (2) stops the restarts; the line says what to do."""
    upgraded = INSTALLED.replace(f"$({SYSTEM_SITE})", "python3.9") + (
        f"printf %s {shlex.quote(CONSOLE_SCRIPT)} > {VENV_COMMAND} && chmod 755 {VENV_COMMAND}\n"
    )
    a_box(view, upgraded)
    for status, _, stderr in what_the_owner_sees(view):
        assert status == cli.EXIT_CONFIG, stderr
        assert "Traceback" not in stderr
        assert "Python 3.9" in stderr and "sudo scripts/install-pi.sh" in stderr, stderr


def test_after_an_install_stopped_half_way_the_service_says_to_run_it_again(
    view: SystemView,
) -> None:
    """Ctrl-C or a power cut after the venv was made afresh and before the appliance was
    in it: the service failed at every start (203/EXEC) without a word of what mends it."""
    a_box(view, INSTALLED)
    for status, _, stderr in what_the_owner_sees(view):
        assert status == cli.EXIT_CONFIG, stderr
        assert "sudo scripts/install-pi.sh" in stderr, stderr


def test_a_sound_install_runs_the_venvs_command_with_its_arguments(view: SystemView) -> None:
    stand_in = "#!/bin/sh\necho \"ran $*\"\n"
    a_box(view, INSTALLED + f"printf %s {shlex.quote(stand_in)} > {VENV_COMMAND} && "
          f"chmod 755 {VENV_COMMAND}\n")  # fmt: skip
    (service, started, _), (doctor, checked, _) = what_the_owner_sees(view)
    assert (service, started) == (0, "ran run\n")
    assert (doctor, checked) == (0, "ran doctor\n")


def test_an_install_whose_apt_step_was_interrupted_finishes_when_run_again(
    view: SystemView, tmp_path: Path
) -> None:
    """Ctrl-C or a power cut in the longest step of a first install (apt's, minutes on a
    small Pi) leaves dpkg's journal unfinished: run again, as the installer says, apt
    refused every install ("dpkg was interrupted, you must manually run 'dpkg
    --configure -a'") and the installer stopped there, each time. It finishes dpkg's work
    first, as apt asks."""
    view.setup(FRESH + "mkdir -p /var/lib/dpkg/updates && echo 'Package: x' > "
               "/var/lib/dpkg/updates/0001\n")  # fmt: skip
    stand_ins = StandIns(tmp_path)
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    install = next(i for i, line in enumerate(lines) if " apt-get install " in line)
    assert "+ dpkg --configure -a" in lines[:install], lines
    view.setup("rm /var/lib/dpkg/updates/0001")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert "+ dpkg --configure -a" not in lines, "dpkg had nothing left to finish"


#: A venv whose site-packages lead to this checkout and the packages it runs with.
VENV_OF_THIS_CHECKOUT = (
    f"printf %s {shlex.quote(CONSOLE_SCRIPT)} > {VENV_COMMAND} && chmod 755 {VENV_COMMAND}\n"
    f"printf '%s\\n' {shlex.quote(str(ROOT))} {shlex.quote(sysconfig.get_paths()['purelib'])} "
    f"> \"/opt/live-appliance/venv/lib/$({SYSTEM_SITE})/site-packages/checkout.pth\"\n"
)


def test_an_update_whose_service_refuses_the_kept_config_says_which_setting(
    view: SystemView, tmp_path: Path
) -> None:
    """A setting the new version no longer has (removed, renamed): the restart at the end
    fails as the daemon exits with its configuration error, and the installer said only
    "journalctl -u live-appliance -n 50 shows why". It says the setting, and the fix."""
    old = "[button]\\nmode = \"toggle\"\\nlong_press = 2\\n"
    a_box(view, INSTALLED + VENV_OF_THIS_CHECKOUT
          + f"printf '{old}' > /etc/live-appliance/config.toml\n")  # fmt: skip
    stand_ins = StandIns(tmp_path)  # systemctl restart fails, as the daemon exits 2
    step = f"source {INSTALL} && KEY_READY=1 KEPT_DISABLED=0 && start_service"
    result = view.run(["bash", "-c", step], env=stand_ins.env())
    assert result.returncode == 1
    assert "[button] long_press: unknown setting" in result.stderr, result.stderr
    assert "sudoedit /etc/live-appliance/config.toml" in result.stderr


def test_a_service_that_does_not_start_with_a_sound_config_points_at_the_journal(
    view: SystemView, tmp_path: Path
) -> None:
    a_box(view, INSTALLED + VENV_OF_THIS_CHECKOUT)
    step = f"source {INSTALL} && KEY_READY=1 KEPT_DISABLED=0 && start_service"
    result = view.run(["bash", "-c", step], env=StandIns(tmp_path).env())
    assert result.returncode == 1
    assert result.stderr.endswith(
        "the service did not start: journalctl -u live-appliance -n 50 shows why\n"
    ), result.stderr


def test_what_the_install_wrote_is_on_the_card_before_the_service_starts(
    view: SystemView, tmp_path: Path
) -> None:
    """An owner unplugs the box soon after the installer said it is running (to move it):
    ext4 writes new files' data up to 30 s later, and nothing made it sooner, so the new
    unit, launcher, venv files or key could come back empty at the next boot, a box that
    no longer starts. The card is synced after the last file is written."""
    view.setup(INSTALLED)
    lines = [line.strip() for line in dry_run(view, StandIns(tmp_path), INSTALL)]
    written = max(i for i, line in enumerate(lines)
                  if line.startswith(("+ install ", "+ ln ", "+ chmod ", "+ chown ")))  # fmt: skip
    restart = lines.index("+ systemctl restart live-appliance.service")
    assert "+ sync" in lines[written:restart], lines[written:]


def test_the_venv_is_recorded_as_at_its_lock_only_once_its_files_are_on_the_card(
    view: SystemView, tmp_path: Path
) -> None:
    """A power cut in the seconds after pip installed the lock's packages could leave
    their files empty while the venv's record of its lock survived: run again, the
    installer took the dependencies as installed ("kept") and never mended them."""
    view.setup(FRESH)
    lines = [line.strip() for line in dry_run(view, StandIns(tmp_path), INSTALL)]
    installed = max(i for i, line in enumerate(lines) if " -m pip install " in line)
    recorded = next(i for i, line in enumerate(lines)
                    if line.startswith("the lock's digest, for the next update"))  # fmt: skip
    assert "+ sync" in lines[installed:recorded], lines[installed:recorded]
