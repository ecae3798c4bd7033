"""Small helpers for running commands on the host and saying what happens."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

START = time.monotonic()


def say(text: str) -> None:
    """One progress line, with the seconds since the start."""
    print(f"hil [{time.monotonic() - START:6.1f}s] {text}", flush=True)


class Failed(Exception):
    """A step failed; the message says which and why, for one line on stderr."""


def run(
    argv: list[str | Path], *, log: Path | None = None, check: bool = True,
    input: str | None = None, env: dict[str, str] | None = None, timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; its output goes to ``log`` (appended) or is captured."""
    args = [str(a) for a in argv]
    if log is not None:
        with log.open("a") as out:
            out.write(f"$ {shlex.join(args)}\n")
            out.flush()
            result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    input=input, env=env, timeout=timeout, check=False)
    else:
        result = subprocess.run(args, capture_output=True, text=True, input=input, env=env,
                                timeout=timeout, check=False)
    if check and result.returncode != 0:
        where = f" (see {log})" if log is not None else f": {result.stderr.strip()[-2000:]}"
        raise Failed(f"{shlex.join(args[:4])}... exited with {result.returncode}{where}")
    return result


def fail(message: str, code: int = 1) -> None:
    print(f"hil: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
