"""Review: a box in a home for months, power-cycled and updated (unclean stops, upgrades)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from device.persist import StateFile

ROOT = Path(__file__).resolve().parents[1]


def test_a_volume_kept_has_reached_the_card_before_it_replaces_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut in the half minute after "set the volume to 30 %" (the box unplugged to
    move it) left state.json empty: the kernel writes a new file's data back later than
    the rename that puts it in place. The volume was forgotten, and every start said so."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    real_replace = Path.replace

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        assert str(self) in synced, "renamed into place before its data was on the card"
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.3)
    assert StateFile(tmp_path / "state.json").load() == {"volume": 0.3}


def test_the_watchdogs_abort_leaves_where_the_daemon_was_stuck_in_the_journal(
    tmp_path: Path,
) -> None:
    """systemd aborts a daemon whose loop stopped feeding the watchdog (SIGABRT): the journal
    then said only "Watchdog timeout", and a hang that comes once a month was never found."""
    config = tmp_path / "config.toml"
    config.write_text(f'[control]\nsocket = "{tmp_path / "control.sock"}"\n')
    script = textwrap.dedent(
        f"""
        import os, signal
        from device import appliance, config

        class StuckInADriver:
            def __init__(self, cfg): pass
            async def run(self):
                os.kill(os.getpid(), signal.SIGABRT)  # what systemd sends

        appliance.Appliance = StuckInADriver
        appliance.run_daemon(config.load({str(config)!r}, key=False))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIVE_APPLIANCE_LOG_FORMAT": "text"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=60, check=False)  # fmt: skip
    assert result.returncode == -6
    assert "Fatal Python error: Aborted" in result.stderr, result.stderr
    assert "in run\n" in result.stderr  # the stack: where it was


def test_the_readme_says_an_os_upgrade_needs_the_installer_again() -> None:
    """Bookworm to Trixie: the venv's python is then 3.13 while the box's packages sit in
    lib/python3.11, and the service fails at every start ("No module named 'device'"),
    restarted by its timer every ten minutes, for good. The installer makes the venv afresh
    (test_install_script.py), but nothing told the owner to run it."""
    readme = (ROOT / "README.md").read_text()
    update = readme[readme.index("### Update, change, uninstall") :].split("\n## ")[0]
    upgrade = next((item for item in update.split("\n- ") if "Trixie" in item), "")
    assert "sudo scripts/install-pi.sh" in upgrade
    assert "No module named 'device'" in upgrade  # what the journal shows until then
