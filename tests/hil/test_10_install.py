"""1. Install as an owner does: the README's steps on a clean system."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from hilrig import (
    APP_VENV,
    CHECKOUT,
    CONFIG,
    DROP_IN,
    IN_VM,
    KEY,
    KEY_FILE,
    OWNER,
    SOURCE,
    UNIT,
    active,
    api_key,
    open_files,
    point_config_at_rig,
    sh,
    sh_live,
    show,
    venv_distributions,
    wait_active,
    write_drop_in,
)

#: The installer's lock for the system Python (the tests run on it: Python 3.11 on
#: Bookworm, 3.13 on Trixie).
LOCK = SOURCE / "requirements" / f"pi-py{sys.version_info[0]}{sys.version_info[1]}.txt"


def test_the_installer_installs_and_starts_the_service(server: object) -> None:
    """`sudo scripts/install-pi.sh --key-file ...` from the owner's clone: the service is
    running under systemd (READY=1 arrived) with the state in words."""
    if IN_VM:
        # The owner's clone, owned by the owner (Raspberry Pi OS: /home/owner, mode 0700).
        shutil.rmtree(CHECKOUT, ignore_errors=True)
        sh(["cp", "-a", str(SOURCE), str(CHECKOUT)])
        sh(["chown", "-R", f"{OWNER}:{OWNER}", str(CHECKOUT)])
        Path(f"/home/{OWNER}/gemini-key.txt").write_text(KEY + "\n")
        # Before the install, as someone preparing the box would: the config (kept by the
        # installer) and the unit's drop-in (systemd takes drop-ins before their unit).
        CONFIG.parent.mkdir(parents=True, exist_ok=True)
        example = (SOURCE / "systemd" / "config.toml.example").read_text()
        CONFIG.write_text(point_config_at_rig(example))
        write_drop_in()
        installer = ["sudo", "scripts/install-pi.sh", "--key-file",
                     f"/home/{OWNER}/gemini-key.txt", "--no-camera", "--no-gpio"]
        status, output = sh_live(f"cd {CHECKOUT} && {' '.join(installer)}", user=OWNER,
                                 log="install.txt")
        assert status == 0, output[-3000:]
        assert KEY not in output
    else:
        assert Path(f"/etc/systemd/system/{UNIT}").exists(), "install the appliance first"
        CONFIG.write_text(point_config_at_rig(CONFIG.read_text()))
        write_drop_in()
        sh(["systemctl", "daemon-reload"])
        sh(["systemctl", "restart", UNIT])
    wait_active()
    assert show("Type") == "notify"
    assert show("StatusText") == "idle"
    status = sh(["systemctl", "status", "--no-pager", UNIT], check=False).stdout
    assert 'Status: "idle"' in status
    assert DROP_IN.exists()


def test_the_key_is_root_only() -> None:
    assert KEY_FILE.read_text().strip() == api_key()
    info = KEY_FILE.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o600)


def test_what_is_installed_is_what_the_lock_says() -> None:
    """Every package of the lock, at its version, in the service's venv; no other (not
    even pip: the venv's Python runs apt's)."""
    locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), re.MULTILINE))
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()
    installed = {norm(k): v for k, v in venv_distributions().items()}
    for name, version in locked.items():
        assert installed.get(norm(name)) == version, (name, version, installed.get(norm(name)))
    extra = set(installed) - {norm(n) for n in locked} - {"live-appliance"}
    assert not extra, f"in the venv but not in the lock: {sorted(extra)}"


def test_pyaudio_and_systemd_are_apts() -> None:
    """The service's PyAudio and systemd-python are Debian's builds, seen through the venv
    (--system-site-packages): nothing was compiled on the box."""
    found = sh([str(APP_VENV / "bin" / "python"), "-c",
                "import pyaudio, systemd.journal; "
                "print(pyaudio.__file__); print(systemd.journal.__file__)"]).stdout.split()
    assert len(found) == 2 and all(f.startswith("/usr/lib/python3/dist-packages/")
                                   for f in found), found


@pytest.mark.skipif(not IN_VM, reason="only the VM's clone is known to be the owner's")
def test_the_owners_checkout_has_nothing_of_roots() -> None:
    """The build ran from a copy, unprivileged: root left no file in the owner's clone."""
    found = sh(["find", str(CHECKOUT), "-user", "root", "-print", "-quit"]).stdout.strip()
    assert found == "", f"root-owned in the owner's checkout: {found}"


def test_the_service_runs_on_the_loopback_card() -> None:
    pid = int(show("MainPID"))
    assert active()
    fds = open_files(pid)
    assert any(f.startswith("/dev/snd/pcm") for f in fds), "it holds no sound device open"
