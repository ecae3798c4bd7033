"""Hardware adapters: button, LEDs, camera.

lgpio (gpiozero's pin driver on Bookworm, the only one on a Pi 5) makes its
notification FIFOs in `$LG_WD`, by default the directory it was started in: `sudo
live-appliance doctor` left a root-owned `.lgd-nfy0` in the owner's home or
checkout, and in a directory it may not write the import failed and gpiozero fell
back to a driver that cannot work. The service sets LG_WD in its unit; anything
else that opens pins gets a private directory of its user's, set here, before any
adapter imports gpiozero.

Where a pin driver cannot load, gpiozero warns as it tries the next one: four
tracebacks' worth of lines on stderr (the journal, unstructured, at every start;
the doctor's output) before the one error that matters, which names the fix.
Those warnings are left out; `gpio_failure` says why lgpio did not load instead.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import warnings


def _private_dir() -> str | None:
    """A directory only this user can use, the same one every run (nothing piles up
    unless someone else holds that name); None where no temporary directory can be
    written (lgpio's own default then)."""
    try:
        path = os.path.join(tempfile.gettempdir(), f"live-appliance-lgpio-{os.geteuid()}")
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077:
            return path
        return tempfile.mkdtemp(prefix="live-appliance-lgpio-")  # someone else's: not that one
    except OSError:
        return None


def _give_lgpio_a_directory() -> None:
    if "LG_WD" not in os.environ and (path := _private_dir()):
        os.environ["LG_WD"] = path


def no_pin_driver(exc: BaseException) -> bool:
    """gpiozero found no pin driver at all: no pin number or wiring is the trouble."""
    return type(exc).__name__ == "BadPinFactory"


def gpio_failure(exc: BaseException) -> str:
    """Why pins could not be opened, in words; where no pin driver loaded, with why lgpio
    (the Pi's own, first tried) did not: the warning that said so is left out."""
    words = f"{type(exc).__name__}: {exc}"
    if type(exc).__module__ == "lgpio":  # lgpio.error, its text quoted: "error: 'GPIO busy'"
        text = str(exc).strip("'\"")
        held = " (another program holds the pin: gpioinfo shows which)" if "busy" in text else ""
        return f"lgpio: {text}{held}"
    if not no_pin_driver(exc):
        return words
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        LGPIOFactory().close()
    except Exception as lgpio_exc:
        return f"{words} (lgpio: {lgpio_exc})"
    return words


_give_lgpio_a_directory()
warnings.filterwarnings("ignore", message="Falling back from ", module=r"gpiozero\.")
