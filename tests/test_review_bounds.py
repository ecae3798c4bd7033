"""The releases of the box's packages that pyproject.toml accepts, on the box's hardware."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: lgpio, as far as opening and closing a chip goes: the chips opened, in order.
FAKE_LGPIO = '''
opened = []


def gpiochip_open(chip):
    opened.append(chip)
    return 1


def gpiochip_close(handle):
    pass


def __getattr__(name):  # the constants gpiozero reads at import
    return 0
'''
#: The revision code of a Raspberry Pi 5 (8 GB): its processor is type 0x17.
PI_5 = 0xD04170
OPEN_ON_A_PI_5 = f"""
import lgpio
from gpiozero.pins.lgpio import LGPIOFactory

LGPIOFactory._get_revision = lambda self: {PI_5:#x}
LGPIOFactory().close()
print(lgpio.opened)
"""


@pytest.mark.skipif(os.path.exists("/dev/gpiochip4"), reason="this kernel has a gpiochip4")
def test_a_pi_5_opens_its_header_on_the_chip_its_kernel_names(tmp_path: Path) -> None:
    """Raspberry Pi's kernel names a Pi 5's header gpiochip0 since 6.6.45 (August 2024), and
    has no gpiochip4 any more. gpiozero 2.0 and 2.0.1, which pyproject accepted, open
    chip 4 on any Pi 5: "can not open gpiochip", and the button and LEDs had no pin
    driver; 2.0.1.post1 and post2 look for gpiochip4 without importing os (NameError)."""
    (tmp_path / "lgpio.py").write_text(FAKE_LGPIO)
    result = subprocess.run(
        [sys.executable, "-c", OPEN_ON_A_PI_5], env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.split() == ["[0]"]
