"""The installed layout as an owner meets it over SSH: what the installer's dry run tells
someone without root, and what an uninstall then an install give back.

Run in the private view of this machine's root of tests/test_install_script.py, with
its stand-ins for every command that changes a system.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from system_view import SystemView, require
from test_install_script import INSTALLED, ROOT, StandIns

#: Each test runs the installer's scripts, as tests/test_install_script.py's do.
pytestmark = pytest.mark.rig

#: The installer's /etc/live-appliance: root's and the service group's alone.
INSTALLERS_MODES = """
chgrp -R live-appliance /etc/live-appliance
chmod 0750 /etc/live-appliance
chmod 0640 /etc/live-appliance/config.toml
chmod 0600 /etc/live-appliance/api-key
chown root:root /etc/live-appliance/api-key
"""
#: A copy of the scripts and what they read that anyone may read (the test's checkout
#: may sit in a directory only root may enter).
READABLE_COPY = (
    "mkdir -p /opt/src && cp -r "
    + " ".join(shlex.quote(str(ROOT / d)) for d in ("scripts", "systemd", "requirements"))
    + " /opt/src && chmod -R a+rX /opt/src\n"
)


def test_a_dry_run_without_root_never_says_it_replaces_the_owners_config(
    tmp_path: Path,
) -> None:
    """`scripts/install-pi.sh --dry-run` ("no root needed") run by an owner outside the
    service's group on an installed box could not see into /etc/live-appliance, and told
    them the update would install the default config over theirs, that there was no API
    key, and that the service would not be started: none of which a real run does."""
    view = SystemView(tmp_path / "view")
    stand_ins = StandIns(tmp_path)
    view.setup(INSTALLED + INSTALLERS_MODES + READABLE_COPY)
    before = view.snapshot()
    owner = [require("setpriv", "util-linux"), "--reuid=1500", "--regid=1500", "--clear-groups"]
    result = view.run([*owner, "bash", "/opt/src/scripts/install-pi.sh", "--dry-run"],
                      env=stand_ins.env())  # fmt: skip
    said = result.stdout + result.stderr
    assert "config.toml.example /etc/live-appliance/config.toml" not in said, said
    assert "no API key yet" not in said, said
    assert result.returncode == 1, said
    assert "sudo scripts/install-pi.sh --dry-run" in result.stderr, result.stderr
    assert stand_ins.calls() == [] and view.snapshot() == before


#: The service's own files beside its config, as the README has an owner make them
#: (root, group live-appliance, 0640), one of them in a directory of the owner's.
OWNERS_FILES = """
printf 'token\\n' > /etc/live-appliance/token
mkdir -m 0750 /etc/live-appliance/personas
printf 'You are a kitchen helper.\\n' > /etc/live-appliance/personas/kitchen.txt
chgrp -R live-appliance /etc/live-appliance
chmod 0640 /etc/live-appliance/token /etc/live-appliance/personas/kitchen.txt
"""
AS_THE_SERVICE = "setpriv --reuid=live-appliance --regid=live-appliance --init-groups"


def test_an_uninstall_then_an_install_gives_the_service_back_every_file_it_read(
    tmp_path: Path,
) -> None:
    """The uninstall (without --purge) gives root's group to everything under
    /etc/live-appliance, subdirectories too; the install after it gave the service's
    group back to the files at the top only, and a persona in a directory of the owner's
    stayed out of the service's reach: the box started with the wrong voice, or not."""
    view = SystemView(tmp_path / "view")
    real = {"PATH": "/usr/sbin:/usr/bin:/bin"}
    # The uninstaller's and installer's own commands, all but systemctl, which succeeds.
    systemctl = tmp_path / "bin" / "systemctl"
    systemctl.parent.mkdir()
    systemctl.write_text("#!/bin/sh\nexit 0\n")
    systemctl.chmod(0o755)
    systemctl_only = {"PATH": f"{systemctl.parent}:{real['PATH']}"}
    view.setup(INSTALLED + INSTALLERS_MODES + OWNERS_FILES)
    read = f"{AS_THE_SERVICE} cat /etc/live-appliance/token /etc/live-appliance/personas/*"
    assert view.run(["sh", "-c", read], env=real).returncode == 0
    gone = view.run(["bash", str(ROOT / "scripts" / "uninstall-pi.sh")], env=systemctl_only)
    assert gone.returncode == 0, gone.stderr
    install = (f"source {shlex.quote(str(ROOT / 'scripts' / 'install-pi.sh'))} && DRY_RUN=0 "
               "&& create_user && install_config")  # fmt: skip
    again = view.run(["bash", "-c", install], env=systemctl_only)
    assert again.returncode == 0, again.stderr
    result = view.run(["sh", "-c", read], env=real)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "token\nYou are a kitchen helper.\n"


def succeeding_systemctl(tmp_path: Path) -> dict[str, str]:
    """An environment whose systemctl succeeds and does nothing (no systemd here); every
    other command the scripts run is the real one, in the view."""
    systemctl = tmp_path / "bin" / "systemctl"
    systemctl.parent.mkdir(exist_ok=True)
    systemctl.write_text("#!/bin/sh\nexit 0\n")
    systemctl.chmod(0o755)
    return {"PATH": f"{systemctl.parent}:/usr/sbin:/usr/bin:/bin"}


def test_an_uninstall_says_nothing_that_reads_as_a_failure(tmp_path: Path) -> None:
    """The installer puts the owner in the service's group; at the uninstall, userdel
    then wrote "userdel: group live-appliance not removed because it has other members"
    in the middle of a run that went well (the group went a line later): the owner took
    it for a step that failed. An uninstall that goes well writes nothing on stderr."""
    view = SystemView(tmp_path / "view")
    view.setup(
        "rm -rf /etc/live-appliance /opt/live-appliance /var/lib/live-appliance\n"
        "sed -i '/^live-appliance:/d;/^owner:/d' /etc/passwd /etc/group /etc/shadow "
        "/etc/gshadow\n"
        "useradd --system --user-group --no-create-home live-appliance\n"
        "useradd --no-create-home owner && usermod -a -G live-appliance owner\n"
    )
    result = view.run(["bash", str(ROOT / "scripts" / "uninstall-pi.sh")],
                      env=succeeding_systemctl(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    left = view.run(["sh", "-c", "getent passwd live-appliance; getent group live-appliance; "
                     "id -nG owner"], env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert left.stdout == "owner\n", "the service's user and group gone, the owner kept"


def test_a_dry_run_by_an_owner_in_the_group_does_not_guess_at_the_key(tmp_path: Path) -> None:
    """An owner in the service's group sees the config but not the key file (root's
    alone): their dry run took a key file it could not read for a good key, and promised
    a restart where the real run finds it empty and starts nothing."""
    view = SystemView(tmp_path / "view")
    stand_ins = StandIns(tmp_path)
    view.setup(INSTALLED + INSTALLERS_MODES + READABLE_COPY + ": > /etc/live-appliance/api-key\n")
    as_root = view.run(["bash", "/opt/src/scripts/install-pi.sh", "--dry-run"],
                       env=stand_ins.env())  # fmt: skip
    assert "+ systemctl restart live-appliance.service" not in as_root.stdout, as_root.stdout
    owner = [require("setpriv", "util-linux"), "--reuid=1500", "--regid=1500", "--groups=990"]
    result = view.run([*owner, "bash", "/opt/src/scripts/install-pi.sh", "--dry-run"],
                      env=stand_ins.env())  # fmt: skip
    assert "systemctl restart" not in result.stdout, result.stdout
    assert result.returncode == 1
    assert "sudo scripts/install-pi.sh --dry-run" in result.stderr, result.stderr
    assert stand_ins.calls() == []


def test_an_install_over_the_group_an_interrupted_uninstall_left_makes_the_user(
    tmp_path: Path,
) -> None:
    """Ctrl-C in an uninstall between userdel and groupdel (or a user removed by hand)
    leaves the group live-appliance without its user: the install after it stopped at
    useradd ("group live-appliance exists - if you want to add this user to that group,
    use -g"), exit status 9, and never got further until the owner removed the group."""
    view = SystemView(tmp_path / "view")
    view.setup(
        "rm -rf /etc/live-appliance /opt/live-appliance /var/lib/live-appliance\n"
        "sed -i '/^live-appliance:/d;/^owner:/d' /etc/passwd /etc/group /etc/shadow "
        "/etc/gshadow\n"
        "groupadd --system live-appliance\n"
    )
    step = f"source {shlex.quote(str(ROOT / 'scripts' / 'install-pi.sh'))} && create_user"
    result = view.run(["bash", "-c", step], env=succeeding_systemctl(tmp_path))
    assert result.returncode == 0, result.stderr
    made = view.run(["id", "-nG", "live-appliance"], env={"PATH": "/usr/bin:/bin"})
    assert made.stdout.split()[0] == "live-appliance", made.stdout + made.stderr
