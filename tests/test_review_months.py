"""Review: a box left alone for months: a full or read-only card, a clock that steps."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from device.persist import StateFile


def test_a_card_that_fills_up_mid_write_leaves_the_old_volume_and_no_half_file(
    tmp_path: Path,
) -> None:
    """The SD card full (a journal that grew, a log of another program): the write of the
    new volume stops part way. The old file stays whole, and no half-written file is left
    beside it in the state directory."""
    path = tmp_path / "state.json"
    path.write_text('{"volume": 0.3}\n')
    script = textwrap.dedent(
        """
        import logging, resource, signal, sys
        from pathlib import Path
        from device.persist import StateFile
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the bound fails EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (8, resource.RLIM_INFINITY))
        StateFile(Path(sys.argv[1])).save(volume=0.9, note="x" * 100)
        print("saved")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "cannot keep settings" in done.stdout  # said, not raised
    assert json.loads(path.read_text()) == {"volume": 0.3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
