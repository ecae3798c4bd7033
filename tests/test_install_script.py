"""The Raspberry Pi installer and uninstaller: what they would do, and that a dry run does nothing.

The scripts run against this machine's own root file system, seen through a
private mount namespace with a throw-away writable layer over /etc, /opt,
/usr/local and /var/lib: a test can show them a fresh Pi or an installed one,
and nothing they could do reaches the real system. Commands that change a
system are replaced by stand-ins that record any call, so a dry run that ran
one would be caught.
"""

from __future__ import annotations

import hashlib
import os
import pty
import re
import select
import shlex
import stat
import subprocess
import time
from pathlib import Path

import pytest
from system_view import SystemView, require

from device import config

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install-pi.sh"
UNINSTALL = ROOT / "scripts" / "uninstall-pi.sh"
EXAMPLE = ROOT / "systemd" / "config.toml.example"
UNIT = ROOT / "systemd" / "live-appliance.service"
KEY = "AIza-install-test-key-0123456789"

#: Commands that change a system; in a dry run none of them may run.
MUTATING = (
    "apt-get", "dpkg", "groupadd", "groupdel", "gpasswd", "useradd", "userdel", "usermod",
    "systemctl", "install", "ln", "rm", "cp", "mv", "mkdir", "chown", "chgrp", "chmod",
    "tar", "pip", "python3",
)

INSTALL_STEPS = [
    "checking this system",
    "Debian packages:",
    "system user live-appliance",
    "Python environment /opt/live-appliance/venv",
    "command /usr/local/bin/live-appliance",
    "configuration /etc/live-appliance/config.toml",
    "API key /etc/live-appliance/api-key",
    "systemd unit /etc/systemd/system/live-appliance.service",
    "start live-appliance.service",
]
UNINSTALL_STEPS = [
    "checking this system",
    "service live-appliance.service",
    "command /usr/local/bin/live-appliance",
    "Python environment /opt/live-appliance",
    "system user live-appliance",
    "configuration /etc/live-appliance and state /var/lib/live-appliance",
]

RASPBERRY_PI_GROUPS = ("audio", "video", "gpio", "spi")

#: A fresh Raspberry Pi OS: no trace of the appliance, the device groups present.
FRESH = """
rm -rf /etc/live-appliance /opt/live-appliance /var/lib/live-appliance
rm -f /usr/local/bin/live-appliance /etc/systemd/system/live-appliance.service
rm -rf /etc/systemd/system/live-appliance.service.d
sed -i '/^live-appliance:/d' /etc/passwd /etc/group
for group in {groups}; do
  grep -q "^$group:" /etc/group || echo "$group:x:$((900 + ${{#group}})):" >> /etc/group
done
""".format(groups=" ".join(RASPBERRY_PI_GROUPS))

#: A Pi the installer has run on, with the owner "owner" (not yet in the service's group)
#: and, as on plain Debian, no spi group.
#: The venv's directory of packages for the system's Python: `python3.11` on Bookworm.
SYSTEM_SITE = """/usr/bin/python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])'"""
INSTALLED = FRESH + f"""
sed -i '/^spi:/d' /etc/group
mkdir -p /etc/live-appliance /opt/live-appliance/venv/bin /var/lib/live-appliance
printf '[button]\\nmode = "toggle"\\n' > /etc/live-appliance/config.toml
printf 'owner-key\\n' > /etc/live-appliance/api-key
ln -s /usr/bin/python3 /opt/live-appliance/venv/bin/python
echo 'include-system-site-packages = true' > /opt/live-appliance/venv/pyvenv.cfg
mkdir -p "/opt/live-appliance/venv/lib/$({SYSTEM_SITE})/site-packages"
ln -s /opt/live-appliance/bin/live-appliance /usr/local/bin/live-appliance
cp {shlex.quote(str(UNIT))} /etc/systemd/system/live-appliance.service
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -sf /etc/systemd/system/live-appliance.service /etc/systemd/system/multi-user.target.wants/
mkdir -p /etc/systemd/system/live-appliance.service.d
printf '[Service]\\nNice=-5\\n' > /etc/systemd/system/live-appliance.service.d/override.conf
echo 'live-appliance:x:990:990::/nonexistent:/usr/sbin/nologin' >> /etc/passwd
echo 'live-appliance:x:990:' >> /etc/group
echo 'owner:x:1500:1500::/home/owner:/bin/bash' >> /etc/passwd
echo 'owner:x:1500:' >> /etc/group
"""


#: The calls to them that only ask (the system's architecture; whether the owner left the
#: service enabled, from the unit files), as shell lines that hand those to the real one.
QUESTIONS = {
    "dpkg": '[ "$*" = --print-architecture ] && exec /usr/bin/dpkg "$@"\n',
    "systemctl": 'case "$1" in is-enabled) exec /usr/bin/systemctl "$@";; esac\n',
}


class StandIns:
    """A directory of commands that record their arguments instead of changing anything."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "bin"
        self.log = base / "calls.log"
        self.dir.mkdir()
        for name in MUTATING:
            path = self.dir / name
            log = shlex.quote(str(self.log))
            # Questions change nothing: the real command answers them.
            ask = QUESTIONS.get(name, "")
            path.write_text(f'#!/bin/sh\n{ask}echo "{name} $*" >> {log}\nexit 97\n')
            path.chmod(0o755)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
        env["PATH"] = f"{self.dir}:{env['PATH']}"
        env.update(extra)
        return env

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def view(tmp_path: Path) -> SystemView:
    return SystemView(tmp_path / "view")


@pytest.fixture
def stand_ins(tmp_path: Path) -> StandIns:
    return StandIns(tmp_path)


def dry_run(
    view: SystemView, stand_ins: StandIns, script: Path, *args: str, **env: str
) -> list[str]:
    """The script's --dry-run output lines, after checking it changed and ran nothing."""
    before = view.snapshot()
    result = view.run(["bash", str(script), "--dry-run", *args], env=stand_ins.env(**env))
    # A dry run shows every step, and its status is the real run's: 1 where that stops.
    stops = "a real run would stop here" in result.stdout
    assert result.returncode == (1 if stops else 0), result.stdout + result.stderr
    assert stand_ins.calls() == [], "a dry run ran a command that changes the system"
    assert view.snapshot() == before, "a dry run changed files"
    assert KEY not in result.stdout + result.stderr
    return result.stdout.splitlines()


def steps(lines: list[str]) -> list[str]:
    return [line.removeprefix("==> ") for line in lines if line.startswith("==> ")]


def assert_steps(lines: list[str], expected: list[str]) -> None:
    """Exactly these steps, in this order (each title may go on after the expected start)."""
    shown = steps(lines)
    assert len(shown) == len(expected), shown
    for got, want in zip(shown, expected, strict=True):
        assert got.startswith(want), (got, want)


def assert_in_order(lines: list[str], expected: list[str]) -> None:
    """Each expected line appears, in this order (other lines may come between)."""
    position = 0
    for want in expected:
        try:
            position = lines.index(want, position) + 1
        except ValueError:
            pytest.fail(f"missing, or out of order: {want!r}\nin:\n" + "\n".join(lines))


def test_both_scripts_pass_shellcheck() -> None:
    result = subprocess.run(
        [require("shellcheck", "shellcheck"), "-x", str(INSTALL), str(UNINSTALL)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_on_a_fresh_pi_shows_every_step_in_order(
    view: SystemView, stand_ins: StandIns, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    view.setup(FRESH)
    lines = dry_run(view, stand_ins, INSTALL, "--key-file", str(key_file))
    assert lines[0] == "dry run: printing what would be done; nothing is changed"
    assert_steps(lines, INSTALL_STEPS)
    assert_in_order(
        [line.strip() for line in lines],
        [
            "+ useradd --system --user-group --no-create-home --home-dir /nonexistent "
            "--shell /usr/sbin/nologin --comment live-appliance\\ voice\\ daemon live-appliance",
            "+ /usr/bin/python3 -m venv --clear --system-site-packages --without-pip "
            "/opt/live-appliance/venv",
            "+ install -D -m 0755 -o root -g root "
            f"{ROOT}/systemd/live-appliance-launch /opt/live-appliance/bin/live-appliance",
            "+ ln -sfn /opt/live-appliance/bin/live-appliance /usr/local/bin/live-appliance",
            "+ install -d -m 0750 -o root -g live-appliance /etc/live-appliance",
            f"+ install -m 0640 -o root -g live-appliance {EXAMPLE} "
            "/etc/live-appliance/config.toml",
            f"store the key from {key_file} as /etc/live-appliance/api-key, mode 0600",
            f"+ install -m 0644 -o root -g root {UNIT} "
            "/etc/systemd/system/live-appliance.service",
            "+ systemctl daemon-reload",
            "+ systemctl enable live-appliance.service",
            "+ systemctl restart live-appliance.service",
        ],
    )
    pip = [line.strip() for line in lines if " -m pip install" in line]
    stage = "/tmp/live-appliance-build"
    # apt's pip, run by the venv's Python: the lock's wheels (only what is not installed
    # at its locked version yet), then the appliance itself, always.
    assert pip == [
        "+ /opt/live-appliance/venv/bin/python -m pip install --no-index --no-deps "
        f"--require-hashes --find-links {stage}/downloads "
        "--requirement /tmp/live-appliance-needed.txt",
        "+ /opt/live-appliance/venv/bin/python -m pip install --no-index --no-deps "
        f"--force-reinstall {stage}/wheels/live_appliance-\\*.whl",
    ]
    assert not any("groupadd" in line for line in lines), "Raspberry Pi OS has the groups"


def test_the_package_step_installs_only_what_is_missing(
    view: SystemView, stand_ins: StandIns
) -> None:
    view.setup(FRESH)
    lines = dry_run(view, stand_ins, INSTALL)
    start = next(i for i, line in enumerate(lines) if line.startswith("==> Debian packages: "))
    wanted = lines[start].split(": ", 1)[1].split()
    body = lines[start + 1 :]
    body = body[: next(i for i, line in enumerate(body) if line.startswith("==> "))]
    missing = [p for p in wanted if not installed(p)]
    if missing:
        assert "  + apt-get update" in body
        assert body[-1] == (
            "  + env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + " ".join(missing)
        )
    else:
        assert body == ["  all installed"]


def installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.stdout == "install ok installed"


def test_without_a_key_it_installs_but_does_not_start(
    view: SystemView, stand_ins: StandIns
) -> None:
    view.setup(FRESH)
    lines = dry_run(view, stand_ins, INSTALL)
    assert "  no key given (use --key-file, or run from a terminal to be asked)" in lines
    assert "  + systemctl enable live-appliance.service" in lines
    assert not any("systemctl restart" in line for line in lines)
    assert any(line.startswith("  not started: no API key yet.") for line in lines)


def test_run_again_it_updates_and_keeps_config_and_key(
    view: SystemView, stand_ins: StandIns, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    view.setup(INSTALLED)
    lines = dry_run(view, stand_ins, INSTALL, "--key-file", str(key_file), SUDO_USER="owner")
    assert_steps(lines, INSTALL_STEPS)
    assert_in_order(
        [line.strip() for line in lines],
        [
            "+ groupadd --system spi",
            "live-appliance exists",
            "+ usermod -a -G live-appliance owner",
            "/opt/live-appliance/venv exists",
            "+ install -D -m 0755 -o root -g root "
            f"{ROOT}/systemd/live-appliance-launch /opt/live-appliance/bin/live-appliance",
            "+ ln -sfn /opt/live-appliance/bin/live-appliance /usr/local/bin/live-appliance",
            "keeping your /etc/live-appliance/config.toml",
            "+ chgrp live-appliance /etc/live-appliance/config.toml",
            "+ chmod g+r /etc/live-appliance/config.toml",
            "keeping the key in /etc/live-appliance/api-key (--key-file ignored); "
            "to change it: sudoedit /etc/live-appliance/api-key",
            "+ chown root:root /etc/live-appliance/api-key",
            "+ chmod 0600 /etc/live-appliance/api-key",
            "+ systemctl reset-failed live-appliance.service",
            "+ systemctl restart live-appliance.service",
        ],
    )
    assert not any("useradd" in line or "-m venv" in line for line in lines)
    overwrite = f"{EXAMPLE} /etc/live-appliance/config.toml"
    assert not any(overwrite in line for line in lines), "the owner's config would be replaced"



def test_an_update_leaves_a_service_the_owner_disabled_off(
    view: SystemView, stand_ins: StandIns
) -> None:
    """`systemctl disable` is the owner's switch: an update brings new code and restarts a
    service running by hand, but neither enables it nor starts a stopped one."""
    wants = "/etc/systemd/system/multi-user.target.wants/live-appliance.service"
    view.setup(INSTALLED + f"\nrm {wants}\n")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert "left disabled, as you set it: it does not start at boot" in lines
    assert "+ systemctl try-restart live-appliance.service" in lines
    assert not any(line.startswith(("+ systemctl enable", "+ systemctl restart")) for line in lines)
    assert ("restarted only if it was running; to turn it back on: systemctl enable --now "
            "live-appliance") in lines  # fmt: skip


def test_a_reinstall_gives_the_service_its_group_back_on_the_owners_files(
    view: SystemView, stand_ins: StandIns
) -> None:
    """An uninstall without --purge leaves them root's; the README's token file (0640)
    must be the service's to read again, the key file and other modes left alone."""
    view.setup(INSTALLED + "\nprintf 't\\n' > /etc/live-appliance/token"
               " && chmod 0640 /etc/live-appliance/token"
               "\nprintf 'p\\n' > /etc/live-appliance/private"
               " && chmod 0600 /etc/live-appliance/private"
               "\nchmod 0640 /etc/live-appliance/api-key\n")  # fmt: skip
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert "+ chgrp live-appliance /etc/live-appliance/token" in lines
    assert not any(line.startswith("+ chgrp") and ("private" in line or "api-key" in line)
                   for line in lines)  # fmt: skip


TOKEN_FILE_CONFIG = ("\nprintf '[live]\\napi_key_file = \"/etc/live-appliance/token\"\\n'"
                     " > /etc/live-appliance/config.toml")
VERTEX_CONFIG = ("\nprintf '[live]\\nbackend = \"vertex\"\\nproject = \"p\"\\n'"
                 " > /etc/live-appliance/config.toml")


def test_an_update_keeps_an_empty_key_file_and_restarts_the_service(
    view: SystemView, stand_ins: StandIns
) -> None:
    """The README's token set-up leaves the key file empty ([live] api_key_file names a
    token file): the update must not take that for a key the service would refuse."""
    view.setup(INSTALLED + TOKEN_FILE_CONFIG + "\n: > /etc/live-appliance/api-key\n")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert ("keeping /etc/live-appliance/api-key empty: the configuration names [live] "
            "api_key_file or Vertex AI") in lines  # fmt: skip
    assert "+ systemctl restart live-appliance.service" in lines


def test_an_empty_key_file_where_the_configuration_needs_one_is_no_key(
    view: SystemView, stand_ins: StandIns
) -> None:
    """Else the service, which exits at once without a key, is restarted on every update
    and never comes up (an empty file was what a key typed wrong at the prompt left)."""
    view.setup(INSTALLED + "\n: > /etc/live-appliance/api-key\n")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert ("the key in /etc/live-appliance/api-key is empty: sudoedit "
            "/etc/live-appliance/api-key, or run this again with --key-file") in lines
    assert not any("systemctl restart" in line for line in lines)


@pytest.mark.parametrize("setup", [TOKEN_FILE_CONFIG, VERTEX_CONFIG], ids=["token-file", "vertex"])
def test_no_key_file_is_asked_for_where_the_configuration_needs_none(
    view: SystemView, stand_ins: StandIns, setup: str
) -> None:
    """Vertex AI, or a token file of its own: an update restarts the service on the new
    code rather than leaving the old one running for want of a key it does not use."""
    view.setup(INSTALLED + setup + "\nrm /etc/live-appliance/api-key\n")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert "none needed: the configuration names [live] api_key_file or Vertex AI" in lines
    assert "+ systemctl restart live-appliance.service" in lines


def test_an_update_over_a_kept_key_the_service_would_refuse_says_how_to_fix_it(
    view: SystemView, stand_ins: StandIns, tmp_path: Path
) -> None:
    view.setup(INSTALLED + "\nprintf '\\342\\200\\234owner-key\\342\\200\\235\\n' "
               "> /etc/live-appliance/api-key\n")  # fmt: skip
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert any(line.startswith("the key in /etc/live-appliance/api-key has a character no key")
               and line.endswith("sudoedit /etc/live-appliance/api-key, or run this again "
                                 "with --key-file") for line in lines), lines  # fmt: skip
    assert "+ systemctl restart live-appliance.service" not in lines
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL, "--key-file",
                                              str(key_file))]  # fmt: skip
    assert any(line.endswith(": replacing it") for line in lines)
    assert f"store the key from {key_file} as /etc/live-appliance/api-key, mode 0600" in lines
    assert "+ systemctl restart live-appliance.service" in lines


def test_a_byte_order_mark_a_windows_editor_saved_is_no_fault_of_key_or_configuration(
    view: SystemView, stand_ins: StandIns, tmp_path: Path
) -> None:
    """The daemon reads both files as utf-8-sig: a kept key file and a configuration
    saved with a BOM work. The installer refused the key ("a character no key has":
    invisible in sudoedit) and took the Vertex AI configuration for one needing a key,
    and did not start the service."""
    bom = "\\357\\273\\277"
    view.setup(INSTALLED + f"\nprintf '{bom}{KEY}\\n' > /etc/live-appliance/api-key\n")
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert not any("has a character no key" in line for line in lines), lines
    assert "+ systemctl restart live-appliance.service" in lines
    view.setup(INSTALLED + VERTEX_CONFIG.replace("'[live]", f"'{bom}[live]")
               + "\nrm /etc/live-appliance/api-key\n")  # fmt: skip
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    assert "none needed: the configuration names [live] api_key_file or Vertex AI" in lines
    assert "+ systemctl restart live-appliance.service" in lines
    source = tmp_path / "key-from-notepad.txt"
    source.write_bytes(b"\xef\xbb\xbf" + KEY.encode() + b"\r\n")
    dest = tmp_path / "api-key"
    result = store_key(str(source), dest)
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == KEY + "\n"


def test_an_update_after_an_os_upgrade_builds_the_venv_afresh(
    view: SystemView, stand_ins: StandIns, tmp_path: Path
) -> None:
    """Bookworm to Trixie: the venv's python now runs 3.13 while its packages sit in
    lib/python3.11; kept, the installer would take them as installed."""
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    upgraded = INSTALLED.replace(f"$({SYSTEM_SITE})", "python3.9")
    view.setup(upgraded)
    lines = dry_run(view, stand_ins, INSTALL, "--key-file", str(key_file), SUDO_USER="owner")
    assert any("-m venv --clear" in line for line in lines), lines
    assert not any("venv exists" in line for line in lines)

def lock_digest() -> str:
    """What the installer records in the venv: the digest of the system Python's lock."""
    tag = subprocess.run(
        ["/usr/bin/python3", "-c", 'import sys; print("%d%d" % sys.version_info[:2])'],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return hashlib.sha256((ROOT / "requirements" / f"pi-py{tag}.txt").read_bytes()).hexdigest()


def test_an_update_downloads_only_what_the_venv_lacks_at_its_locked_version(
    tmp_path: Path,
) -> None:
    """Of a changed lock, the entries (with their hashes and markers) whose package the
    venv does not hold at that version: one changed package, one new, not the rest; and
    what the venv holds that the lock no longer names, to be removed."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    for name, version in (("numpy", "1.26.4"), ("Google_GenAI", "3.5.0"), ("soxr", "1.1.0"),
                          ("iniconfig", "2.3.1"), ("live_appliance", "0.1.0"), ("pip", "23.0.1")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lock = tmp_path / "pi-py311.txt"
    lock.write_text(
        "# This file was autogenerated by uv via the following command:\n"
        "#    scripts/lock\n"
        "google-genai==3.6.1 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via live-appliance\n"
        "numpy==1.26.4 \\\n    --hash=sha256:" + "b" * 64 + "\n"
        "pywebrtc-audio==0.2.0 ; platform_machine == 'aarch64' \\\n"
        "    --hash=sha256:" + "c" * 64 + "\n"
        "soxr==1.1.0 \\\n    --hash=sha256:" + "d" * 64 + "\n"
        "\n# The following packages were excluded from the output:\n# pyaudio\n"
    )
    def venv_vs_lock(what: str) -> str:
        return subprocess.run(
            ["bash", "-c", f'source {shlex.quote(str(INSTALL))} && venv_vs_lock "$@"', "test",
             what, str(lock), str(tmp_path / "venv")],
            capture_output=True, text=True, check=True,
        ).stdout

    assert venv_vs_lock("extra") == "iniconfig\npip\n"
    assert venv_vs_lock("missing") == (
        "google-genai==3.6.1 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via live-appliance\n"
        "pywebrtc-audio==0.2.0 ; platform_machine == 'aarch64' \\\n"
        "    --hash=sha256:" + "c" * 64 + "\n"
    )


@pytest.mark.parametrize("recorded", ["the same lock", "another lock", "none"])
def test_an_update_with_the_lock_of_the_last_install_replaces_only_the_appliance(
    view: SystemView, stand_ins: StandIns, recorded: str
) -> None:
    digest = {"the same lock": lock_digest(), "another lock": "0" * 64, "none": None}[recorded]
    stamp = "/opt/live-appliance/venv/.live-appliance-locks"
    view.setup(INSTALLED + (f"echo {digest} > {stamp}\n" if digest else ""))
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    pip = [line for line in lines if " -m pip " in line]
    if recorded == "the same lock":
        assert any(line.startswith("the dependencies are as requirements/pi-") for line in lines)
        # Nothing downloaded, installed or removed but the appliance, built as nobody.
        assert len(pip) == 2 and pip[0].startswith("+ setpriv --reuid=nobody "), pip
        assert " -m pip wheel " in pip[0]
        assert pip[1].endswith("--force-reinstall /tmp/live-appliance-build/wheels/"
                               "live_appliance-\\*.whl")  # fmt: skip
    else:
        assert sum(" -m pip download " in line for line in pip) == 1
        assert f"the lock's digest, for the next update: {stamp}" in lines


def test_uninstall_dry_run_removes_everything_but_the_owners_files(
    view: SystemView, stand_ins: StandIns
) -> None:
    view.setup(INSTALLED)
    lines = dry_run(view, stand_ins, UNINSTALL)
    assert steps(lines) == UNINSTALL_STEPS
    assert_in_order(
        [line.strip() for line in lines],
        [
            "+ systemctl disable --now live-appliance.service",
            "+ rm -rf /run/live-appliance",
            "+ rm -f /etc/systemd/system/live-appliance.service "
            "/etc/systemd/system/live-appliance-retry.timer "
            "/etc/systemd/system/live-appliance-retry.service",
            "+ systemctl daemon-reload",
            "+ systemctl reset-failed live-appliance.service live-appliance-retry.timer "
            "live-appliance-retry.service",
            "+ rm -f /usr/local/bin/live-appliance",
            "+ rm -rf /opt/live-appliance /var/cache/live-appliance",
            "+ userdel live-appliance",
            "+ groupdel live-appliance",
            "keeping /etc/live-appliance (config.toml, api-key) and /var/lib/live-appliance; "
            "--purge removes them",
            "+ find /etc/live-appliance /var/lib/live-appliance \\( -nouser -o -nogroup \\) "
            "-exec chown -h root:root \\{\\} +",
            "keeping your changes to the service in "
            "/etc/systemd/system/live-appliance.service.d",
        ],
    )
    purge = dry_run(view, stand_ins, UNINSTALL, "--purge")
    assert_in_order(
        purge,
        [
            "  + rm -rf /etc/live-appliance /var/lib/live-appliance",
            "  + rm -rf /etc/systemd/system/live-appliance.service.d",
        ],
    )


def test_uninstall_on_a_clean_system_has_nothing_to_do(
    view: SystemView, stand_ins: StandIns
) -> None:
    view.setup(FRESH)
    lines = dry_run(view, stand_ins, UNINSTALL)
    assert steps(lines) == UNINSTALL_STEPS
    assert not any(line.startswith("  +") for line in lines)


def test_a_real_run_needs_root(view: SystemView, stand_ins: StandIns) -> None:
    # A copy anyone may read, so that the refusal is about root and not about file modes.
    view.setup(
        f"mkdir -p /opt/src && cp -r {shlex.quote(str(ROOT / 'scripts'))} "
        f"{shlex.quote(str(ROOT / 'systemd'))} /opt/src && chmod -R a+rX /opt/src"
    )
    nobody = [require("setpriv", "util-linux"), "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = view.run([*nobody, "bash", "/opt/src/scripts/install-pi.sh"], env=stand_ins.env())
    assert result.returncode == 1
    assert "must be run as root (sudo), or with --dry-run" in result.stderr
    assert not any(line.startswith("  +") for line in result.stdout.splitlines())
    assert stand_ins.calls() == []


@pytest.mark.parametrize(
    ("os_release", "complaint"),
    [
        (
            'ID=fedora\nVERSION_ID=40\nPRETTY_NAME="Fedora Linux 40"\n',
            "not Raspberry Pi OS or Debian",
        ),
        (
            'ID=debian\nVERSION_ID="11"\nPRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\n',
            "Bookworm (12) or newer is needed",
        ),
    ],
)
def test_it_refuses_other_systems(
    view: SystemView, stand_ins: StandIns, os_release: str, complaint: str
) -> None:
    view.setup(f"rm -f /etc/os-release && printf %s {shlex.quote(os_release)} > /etc/os-release")
    for script in (INSTALL, UNINSTALL):
        result = view.run(["bash", str(script), "--dry-run"], env=stand_ins.env())
        assert result.returncode == 1, result.stdout
        assert complaint in result.stderr
        assert not any(line.startswith("  +") for line in result.stdout.splitlines())


def test_a_32_bit_system_is_refused_before_anything_changes(
    view: SystemView, stand_ins: StandIns, tmp_path: Path
) -> None:
    """No lock file has its wheels: it would fail half-way, the system already changed."""
    armhf = tmp_path / "armhf"
    armhf.mkdir()
    (armhf / "dpkg").write_text("#!/bin/sh\necho armhf\n")
    (armhf / "dpkg").chmod(0o755)
    view.setup(FRESH)
    env = stand_ins.env()
    env["PATH"] = f"{armhf}:{env['PATH']}"
    result = view.run(["bash", str(INSTALL), "--dry-run"], env=env)
    assert result.returncode == 1, result.stdout
    assert "this system is armhf (32-bit): install Raspberry Pi OS 64-bit" in result.stderr
    assert not any(line.startswith("  +") for line in result.stdout.splitlines())


@pytest.mark.parametrize("script", [INSTALL, UNINSTALL])
def test_help_and_bad_options(script: Path) -> None:
    def call(option: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(script), option], capture_output=True, text=True, check=False
        )

    shown = call("--help")
    assert shown.returncode == 0 and shown.stdout.startswith(f"Usage: sudo scripts/{script.name}")
    wrong = call("--frobnicate")
    assert wrong.returncode == 2
    assert "unknown option: --frobnicate" in wrong.stderr


def store_key(source: str, dest: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The installer's own store_key function, on files of the test's choosing."""
    return subprocess.run(
        ["bash", "-c", f'source {shlex.quote(str(INSTALL))} && store_key "$1" "$2"', "test",
         source, str(dest)],
        input=stdin, capture_output=True, text=True, timeout=30, check=False,
    )


@pytest.mark.parametrize("fails", ["download", "install"])
def test_an_update_that_stops_midway_says_how_to_finish_it(tmp_path: Path, fails: str) -> None:
    """The new packages half installed (the network gone, the SD card full): pip's own
    error, then what mends it, which a bare exit under `set -e` never said."""
    stage, listed = tmp_path / "stage", tmp_path / "listed.txt"
    stage.mkdir()
    (stage / "downloads").mkdir()
    (stage / "downloads" / "numpy-2.0-py3-none-any.whl").touch()
    failing = {"download": "as_builder() { return 1; }", "install": "run() { return 1; }"}
    script = (f"source {shlex.quote(str(INSTALL))}\n{failing[fails]}\n"
              "venv_vs_lock() { echo 'numpy==2.0'; }\n"
              f"install_missing {stage} requirements/pi.txt {listed}\n")  # fmt: skip
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith(
        "pip says why above; fix that and run this script again: it installs what is "
        "still missing"
    ), result.stderr


def test_the_key_is_stored_root_only_and_never_shown(tmp_path: Path) -> None:
    source = tmp_path / "from-owner.txt"
    source.write_text(f"  {KEY}  \n\n")
    dest = tmp_path / "api-key"
    result = store_key(str(source), dest)
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == KEY + "\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert KEY not in result.stdout + result.stderr

    piped = tmp_path / "api-key-from-stdin"
    result = store_key("-", piped, stdin=KEY + "\n")
    assert result.returncode == 0, result.stderr
    assert piped.read_text() == KEY + "\n"
    assert stat.S_IMODE(piped.stat().st_mode) == 0o600


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "api-key"
    dest.write_text("owner-key\n")
    result = store_key("-", dest, stdin=KEY)
    assert result.returncode == 1
    assert f"{dest} exists: not replacing the key" in result.stderr
    assert dest.read_text() == "owner-key\n"


@pytest.mark.parametrize(
    "text",
    ["", "  \n", "two words\n", f"\u201c{KEY}\u201d\n", f"{KEY[:8]}\u200b{KEY[8:]}\n",
     f'"{KEY}"\n', f"GEMINI_API_KEY={KEY}\n"],
    ids=["empty", "blank", "two-words", "quoted-from-a-web-page", "zero-width-space",
         "quoted-from-a-toml-file", "a-line-of-an-env-file"],
)
def test_a_key_that_cannot_be_one_is_refused(tmp_path: Path, text: str) -> None:
    """As the daemon refuses it (an HTTP header cannot carry it): stored, the service
    would exit at every start with a configuration error."""
    dest = tmp_path / "api-key"
    result = store_key("-", dest, stdin=text)
    assert result.returncode == 1
    assert "standard input" in result.stderr
    assert not dest.exists()


def test_a_key_file_the_service_would_refuse_stops_the_install_before_it_starts(
    view: SystemView, stand_ins: StandIns, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"\u201c{KEY}\u201d\n")  # pasted from a web page, quotes and all
    view.setup(FRESH)
    before = view.snapshot()
    result = view.run(["bash", str(INSTALL), "--key-file", str(key_file)], env=stand_ins.env())
    assert result.returncode == 1
    assert f"the API key in {key_file} has a character no key has" in result.stderr
    assert "==> Debian packages" not in result.stdout, "it stopped before installing anything"
    assert stand_ins.calls() == [] and view.snapshot() == before
    assert KEY not in result.stdout + result.stderr


def test_the_key_given_as_the_key_files_path_is_not_shown(
    view: SystemView, stand_ins: StandIns
) -> None:
    """`--key-file AIza...`: the owner gave the key where its file goes; the refusal says
    what the option takes and does not print the key back (a screen, a pasted log)."""
    view.setup(FRESH)
    result = view.run(["bash", str(INSTALL), "--key-file", KEY], env=stand_ins.env())
    assert result.returncode == 1
    assert "--key-file takes the path of a file holding the key" in result.stderr
    assert KEY[4:] not in result.stdout + result.stderr
    assert stand_ins.calls() == []


def answer_key_prompt(dest: Path, answers: list[str]) -> tuple[int, bytes]:
    """The installer's own prompt_key on a terminal (a pty), called in an `if` as the
    installer calls it, given `answers` one per prompt; its status and everything it
    wrote to the terminal."""
    command = (f'source {shlex.quote(str(INSTALL))} && '
               'if prompt_key "$1"; then exit 0; else exit 1; fi')
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, /dev/tty included
        os.execvp("bash", ["bash", "-c", command, "prompt", str(dest)])
    return answer_on_the_terminal(pid, terminal, answers)


def answer_on_the_terminal(pid: int, terminal: int, answers: list[str]) -> tuple[int, bytes]:
    """Type `answers` into the child's terminal, one at each key prompt, until it exits;
    its status and everything it wrote to the terminal."""
    seen = b""
    deadline = time.monotonic() + 20
    left = list(answers)
    while time.monotonic() < deadline:
        if left and seen.count(b"typing is not shown") > len(answers) - len(left):
            os.write(terminal, left.pop(0).encode() + b"\n")
        ready, _, _ = select.select([terminal], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            continue
        try:
            chunk = os.read(terminal, 1024)
        except OSError:  # EIO: the child has exited and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert not left, f"not asked for every answer: {seen!r}"
    return os.waitstatus_to_exitcode(status), seen


def test_the_key_prompt_does_not_echo_what_is_typed(tmp_path: Path) -> None:
    dest = tmp_path / "api-key"
    status, seen = answer_key_prompt(dest, [KEY])
    assert status == 0, seen
    assert KEY.encode() not in seen
    assert dest.read_text() == KEY + "\n"


def test_a_key_typed_wrong_at_the_prompt_is_asked_again_never_stored(tmp_path: Path) -> None:
    """Called in an `if` (as the installer does), a refused key used to be stored as an
    empty key file, which a second install then kept: the service never started."""
    dest = tmp_path / "api-key"
    status, seen = answer_key_prompt(dest, ["two words", f"\u201c{KEY}\u201d", KEY])
    assert status == 0, seen
    assert b"must be one word on one line" in seen and b"has a character no key has" in seen
    assert dest.read_text() == KEY + "\n"
    other = tmp_path / "api-key-skipped"
    status, seen = answer_key_prompt(other, ["two words", ""])
    assert status == 1, seen
    assert not other.exists()


@pytest.fixture
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX) or name in config.KEY_ENV_VARS:
            monkeypatch.delenv(name)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


SETTING = re.compile(r"^# (\w+ = .+)$", re.MULTILINE)


def test_the_default_config_loads_and_changes_nothing(no_overrides: None) -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.path == EXAMPLE
    assert cfg.hardware.profile == "breadboard"
    defaults = config.Config()
    for section in config.SECTIONS:
        assert getattr(cfg, section) == getattr(defaults, section), section


def test_every_setting_shown_in_the_default_config_is_real(
    no_overrides: None, tmp_path: Path
) -> None:
    text = EXAMPLE.read_text()
    shown = SETTING.findall(text)
    assert len(shown) >= 15, shown
    enabled = tmp_path / "config.toml"
    enabled.write_text(SETTING.sub(r"\1", text))
    cfg = config.load(enabled)  # an unknown key or a bad value raises ConfigError
    assert cfg.live.voice == "Kore" and cfg.audio.input_device == "USB"


REQUIREMENTS = ROOT / "requirements"
#: The Pythons of Raspberry Pi OS: Bookworm's 3.11, Trixie's 3.13; a lock for each.
PYTHONS = ("311", "313")
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.MULTILINE)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(python: str, kind: str = "") -> dict[str, str]:
    lock = REQUIREMENTS / f"pi-{kind}py{python}.txt"
    return {canonical(n): v for n, v in REQUIREMENT.findall(lock.read_text())}


def test_the_python_packages_are_built_unprivileged_from_the_lock(
    view: SystemView, stand_ins: StandIns
) -> None:
    """Downloads (hashes checked, wheels only) and the appliance's build run as nobody;
    nothing of the lock is compiled; root only installs wheels."""
    view.setup(FRESH)
    lines = [line.strip() for line in dry_run(view, stand_ins, INSTALL)]
    builds = [line for line in lines if line.startswith("+ setpriv ")]
    assert len(builds) == 2
    for line in builds:
        assert line.startswith("+ setpriv --reuid=nobody --regid=")
        assert "--clear-groups --inh-caps=-all env -i " in line
    download, appliance = builds
    # Of the lock, what the venv lacks at its locked version (all of it on a fresh system).
    assert "-m pip download --no-deps --require-hashes --only-binary=:all: " in download
    assert download.endswith("--dest /tmp/live-appliance-build/downloads "
                             "--requirement /tmp/live-appliance-build/needed.txt")
    assert ("/tmp/live-appliance-build/needed.txt: the packages of requirements/pi-py311.txt "
            "not in /opt/live-appliance/venv at their locked version") in lines
    # The one wheel built is the appliance's, from the copy of the checkout.
    assert "-m pip wheel --no-deps --no-index --no-build-isolation " in appliance
    assert appliance.endswith(
        " --wheel-dir /tmp/live-appliance-build/wheels /tmp/live-appliance-build/src")
    # Root installs wheels only: the lock's, their hashes checked again against root's own
    # list (the builder could have swapped a download), then the appliance.
    root_pip = [line for line in lines
                if line.startswith("+ /opt/live-appliance/venv/bin/python -m pip")]
    assert len(root_pip) == 2, root_pip
    assert root_pip[0].endswith(
        " install --no-index --no-deps --require-hashes --find-links "
        "/tmp/live-appliance-build/downloads --requirement /tmp/live-appliance-needed.txt")
    assert " install --no-index --no-deps " in root_pip[1] and root_pip[1].endswith(".whl")


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_pins_every_dependency_with_hashes(python: str) -> None:
    """Every dependency of pyproject.toml is in the lock, at a version it allows, with the
    sha256 hashes pip checks, or comes from apt (PyAudio, systemd-python: pinned in the
    release's constraints, and the installer's apt packages); the SDK's major version is
    bounded."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    pins = locked(python)
    from_apt = locked(python, "system-")
    assert set(from_apt) == {"pyaudio", "systemd-python"}, from_apt
    assert not set(from_apt) & set(pins), "in the lock and from apt"
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonical(requirement.name)
        version = pins.get(name, from_apt.get(name))
        assert version, f"{name} is not in pi-py{python}.txt: run scripts/lock"
        assert requirement.specifier.contains(version, prereleases=True), (spec, version)
    packages = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(INSTALL))} && apt_packages"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert {"python3-pyaudio", "python3-systemd"} <= set(packages), packages
    genai = next(Requirement(s) for s in project["dependencies"] if s.startswith("google-genai"))
    assert any(s.operator == "<" for s in genai.specifier), "no upper bound on the SDK"
    text = (REQUIREMENTS / f"pi-py{python}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    for entry in entries:
        if REQUIREMENT.match(entry):
            assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]
    # What builds the appliance's wheel offline is locked too.
    assert {"setuptools", "wheel"} <= set(pins)


def test_the_build_tools_the_lock_may_hold_can_build_the_appliance() -> None:
    """The installer builds the appliance's wheel without build isolation, with the lock's
    setuptools (pip checks no build-system bound then): pi-build.in allowed setuptools
    70.1, which refuses pyproject's SPDX license ("project.license must be valid exactly by
    one definition"), so a lock made at its lowest left every Pi unable to install."""
    import tomllib

    from packaging.requirements import Requirement

    needed = {Requirement(spec).name: Requirement(spec).specifier
              for spec in tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]}
    lines = (REQUIREMENTS / "pi-build.in").read_text().splitlines()
    for allowed in (Requirement(line) for line in lines if line and not line.startswith("#")):
        lowest = [s.version for s in allowed.specifier if s.operator == ">="]
        if allowed.name in needed:
            assert lowest and needed[allowed.name].contains(lowest[0]), (allowed, needed)


@pytest.mark.parametrize(("python", "major"), [("311", 1), ("313", 2)])
def test_the_lock_keeps_numpy_binary_compatible_with_apt(python: str, major: int) -> None:
    """The venv's numpy shadows apt's, which picamera2 and simplejpeg are built against:
    numpy 1.24 on Bookworm, 2.2 on Trixie."""
    assert int(locked(python)["numpy"].split(".")[0]) == major


def lock_for(python: str | None) -> subprocess.CompletedProcess[str]:
    """The installer's lock_file and check_python, on a system whose Python is ``python``
    (311, 313; None: this machine's /usr/bin/python3)."""
    pretend = f"python_tag() {{ echo {python}; }}; " if python else ""
    return subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(INSTALL))} && {pretend}lock_file && "
         "check_python"],
        capture_output=True, text=True, check=False,
    )


def test_the_lock_file_is_the_one_for_the_system_python() -> None:
    version = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    result = lock_for(None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{REQUIREMENTS}/pi-py{version}.txt"


@pytest.mark.parametrize("python", PYTHONS)
def test_bookworm_and_trixie_each_get_their_own_lock(python: str) -> None:
    result = lock_for(python)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{REQUIREMENTS}/pi-py{python}.txt"]


def test_a_python_without_a_lock_is_refused() -> None:
    """At the installer's first step (checking this system), before apt or pip run."""
    result = lock_for("312")
    assert result.returncode == 1
    assert "no lock file for /usr/bin/python3 (3.12): there are locks for 3.11 3.13" \
        in result.stderr
    assert INSTALL.read_text().index("  check_python\n") < INSTALL.read_text().index(
        "  install_packages\n")


def package_step(lines: list[str]) -> list[str]:
    line = next(line for line in lines if line.startswith("==> Debian packages: "))
    return line.split(": ", 1)[1].split()


def test_a_box_without_camera_or_pi_gpio_leaves_out_their_packages(
    view: SystemView, stand_ins: StandIns
) -> None:
    view.setup(FRESH)
    full = package_step(dry_run(view, stand_ins, INSTALL))
    assert {"python3-picamera2", "python3-lgpio"} <= set(full)
    lines = dry_run(view, stand_ins, INSTALL, "--no-camera", "--no-gpio")
    bare = package_step(lines)
    assert "python3-picamera2" not in bare and "python3-lgpio" not in bare
    assert set(full) - set(bare) == {"python3-picamera2", "python3-lgpio"}
    assert "  no camera (--no-camera): [camera] enabled = false" in lines


def test_the_pi_packages_point_at_the_option_when_apt_lacks_them(
    view: SystemView, stand_ins: StandIns
) -> None:
    """On plain Debian (this machine) apt has neither: the installer says which option
    a box without them takes."""
    options = {"python3-picamera2": "--no-camera", "python3-lgpio": "--no-gpio"}
    lacking = {p: option for p, option in options.items() if not installed(p) and not in_apt(p)}
    if not lacking:
        pytest.skip("apt here has the Pi packages")
    view.setup(FRESH)
    lines = dry_run(view, stand_ins, INSTALL)
    notes = [line for line in lines if line.startswith("  note: python3-")]
    for package, option in lacking.items():
        assert any(package in n and option in n for n in notes), notes


def in_apt(package: str) -> bool:
    """Whether this machine's apt sources offer `package` (the installer's own test)."""
    result = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, check=False
    )
    return re.search(r"Candidate: [^(]", result.stdout) is not None


def test_no_camera_turns_the_camera_off_in_a_new_config(
    tmp_path: Path, no_overrides: None
) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(EXAMPLE.read_text())
    # The same edit as install_config's, on a copy.
    script = "sed -i 's/^# enabled = true$/enabled = false/' \"$1\""
    body = INSTALL.read_text()
    assert "sed -i 's/^# enabled = true$/enabled = false/' \"$CONFIG\"" in body
    subprocess.run(["bash", "-c", script, "edit", str(config_file)], check=True)
    assert config.load(config_file).camera.enabled is False
    assert config.load(EXAMPLE).camera.enabled is True


def test_an_update_keeps_out_the_pi_packages_the_first_install_left_out(
    view: SystemView, stand_ins: StandIns
) -> None:
    """The README's update is `git pull && sudo scripts/install-pi.sh`, without the first
    install's --no-camera or --no-gpio: a box installed without a Pi package (plain
    Debian, a VM) must not be stopped by it, or have it added, on the update."""
    view.setup(INSTALLED)
    left_out = [p for p in ("python3-picamera2", "python3-lgpio") if not installed(p)]
    if not left_out:
        pytest.skip("this machine has both Pi packages")
    lines = dry_run(view, stand_ins, INSTALL)
    assert not any("a real run would stop here" in line for line in lines), "\n".join(lines)
    assert not set(left_out) & set(package_step(lines))
    for package in left_out:
        note = f"  {package}: left out, as at the last install"
        assert any(line.startswith(note) for line in lines)


# ---- an update over a key the service refuses, on a terminal ---------------------------

UPDATED_KEY_FILE = "/etc/live-appliance/api-key"


def install_key_on_a_terminal(view: SystemView, answers: list[str]) -> bytes:
    """The installer's install_key step, as a real (not dry) run from a terminal in the
    view, given `answers` one per key prompt; everything it wrote to the terminal."""
    step = f'source {shlex.quote(str(INSTALL))} && KEY_READY=0 && install_key "" ""'
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the pty is its terminal, /dev/tty included
        inside = f"{view.mounts()} && exec bash -c {shlex.quote(step)}"
        os.execvp(require("unshare", "util-linux"), ["unshare", "--mount", "sh", "-c", inside])
    return answer_on_the_terminal(pid, terminal, answers)[1]


def test_skipping_the_key_prompt_on_an_update_keeps_the_owners_key_file(
    view: SystemView,
) -> None:
    """An update that finds the kept key in quotation marks asks for it again, and
    Enter skips: the owner's key must still be there to fix with sudoedit, as the
    message says, not deleted before anything was typed."""
    view.setup(INSTALLED + f"\nprintf '\"owner-key\"\\n' > {UPDATED_KEY_FILE}\n")
    seen = install_key_on_a_terminal(view, [""])
    assert b"is in quotation marks" in seen, seen
    result = view.run(["cat", UPDATED_KEY_FILE])
    assert result.returncode == 0, f"the owner's key file is gone: {seen!r}"
    assert result.stdout == '"owner-key"\n'


def test_a_key_typed_at_that_prompt_replaces_the_refused_one_root_only(
    view: SystemView,
) -> None:
    view.setup(INSTALLED + f"\nprintf '\"owner-key\"\\n' > {UPDATED_KEY_FILE}\n")
    install_key_on_a_terminal(view, ["AIza-new-key-0123456789"])
    result = view.run(["stat", "-c", "%a %U", UPDATED_KEY_FILE])
    assert result.stdout.split() == ["600", "root"]
    assert view.run(["cat", UPDATED_KEY_FILE]).stdout == "AIza-new-key-0123456789\n"
    assert view.run(["ls", "/etc/live-appliance"]).stdout.split() == ["api-key", "config.toml"]


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


@pytest.mark.parametrize(("synced", "said"), [("no", True), ("yes", False)])
def test_apt_failing_before_the_clock_is_set_names_the_clock(synced: str, said: bool) -> None:
    """A Pi has no clock of its own: booted away from the network it starts at the image's
    date, apt refuses package lists "not valid yet", and the installer sent the owner to
    look for a network that was there. The clock is named when systemd says it is unset."""
    script = (f"source {shlex.quote(str(INSTALL))}\n"
              "package_installed() { return 1; }\npackage_available() { return 0; }\n"
              "timedatectl() { [[ $* == 'show -p NTPSynchronized --value' ]] && "
              f"echo {synced}; }}\n"
              'run() { [[ "$*" != *"apt-get update"* ]]; }\n'
              "install_packages\n")  # fmt: skip
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("the clock is not set yet" in result.stderr) is said, result.stderr
    assert ("sudo date -s" in result.stderr) is said, result.stderr


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


@pytest.mark.rig  # the installer, as tests/test_install_script.py runs it
def test_an_update_leaves_the_configuration_root_alone_may_change(tmp_path: Path) -> None:
    """A configuration the owner made group-writable (0664, to let the household edit it
    without sudo): any member of the live-appliance group could set [live] base_url to a
    server of their own, and the next `sudo live-appliance doctor` or `sudo live-appliance
    ask` sent them the root-only key. The update left it so, saying it kept the file."""
    view = SystemView(tmp_path / "view")
    view.setup(INSTALLED + "\nchmod 0664 /etc/live-appliance/config.toml\n")
    lines = [line.strip() for line in dry_run(view, StandIns(tmp_path), INSTALL)]
    assert "keeping your /etc/live-appliance/config.toml" in lines
    assert "+ chmod go-w /etc/live-appliance/config.toml" in lines, lines


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


def test_a_dry_run_missing_two_pi_packages_names_the_first_a_real_run_stops_at() -> None:
    """A real run stops at the first package apt does not have; the dry run's last line
    named the last one noted, sending the owner to a package the real run never reached."""
    script = (f"source {shlex.quote(str(INSTALL))}\nDRY_RUN=1\nWOULD_STOP=''\n"
              "package_installed() { return 1; }\npackage_available() { return 1; }\n"
              "run() { return 0; }\ninstall_packages\n"
              "printf 'stop: %s\\n' \"$WOULD_STOP\"\n")  # fmt: skip
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)  # fmt: skip
    notes = [line.split("note: ", 1)[1] for line in result.stdout.splitlines() if "note: " in line]
    assert len(notes) >= 2, result.stdout + result.stderr
    first = notes[0].removesuffix("; a real run would stop here")
    assert f"stop: {first}" in result.stdout.splitlines(), result.stdout


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
