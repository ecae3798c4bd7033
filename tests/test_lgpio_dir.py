"""lgpio's FIFOs go to a private directory, never where an owner ran `sudo ... doctor`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

SHOW = "import os, device.hw; print(os.environ['LG_WD'])"


def lg_wd(cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "LG_WD"}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=cwd, env={**clean, "PYTHONPATH": str(root), **env},
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def test_without_lg_wd_the_adapters_give_lgpio_a_private_directory(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    first = lg_wd(tmp_path, TMPDIR=str(tmp_path / "tmp"))  # a tmp of its own: no other run's
    info = os.lstat(first)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid() and Path(first).parent == tmp_path / "tmp"
    assert lg_wd(tmp_path, TMPDIR=str(tmp_path / "tmp")) == first, "the same one each run"
    assert list(tmp_path.iterdir()) == [tmp_path / "tmp"], "nothing where it was started"


def test_a_directory_of_that_name_someone_else_could_use_is_not_taken(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    planted = tmp_path / "tmp" / f"live-appliance-lgpio-{os.geteuid()}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    chosen = lg_wd(tmp_path, TMPDIR=str(tmp_path / "tmp"))
    assert chosen != str(planted) and stat.S_IMODE(os.lstat(chosen).st_mode) == 0o700


def test_the_units_lg_wd_is_kept(tmp_path: Path) -> None:
    assert lg_wd(tmp_path, LG_WD="/run/live-appliance") == "/run/live-appliance"


def test_lgpios_own_error_is_said_in_words_not_as_its_class() -> None:
    """On the Pi a pin another program holds fails with lgpio.error, whose text is
    quoted: the journal and the doctor read "error: 'GPIO busy'"."""
    from device.hw import gpio_failure

    class error(Exception):  # lgpio's own name, as lgpio.py defines it
        def __str__(self) -> str:
            return repr(self.args[0])

    error.__module__ = "lgpio"
    said = gpio_failure(error("GPIO busy"))
    assert said.startswith("lgpio: GPIO busy (another program holds the pin"), said
    assert "gpioinfo" in said and "'" not in said
    assert gpio_failure(error("bad GPIO number")) == "lgpio: bad GPIO number"
