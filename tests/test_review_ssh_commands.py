"""The commands an owner types over SSH, piped into scripts: what they print and their
exit codes when the input is wrong or the reader of their output has gone."""

from __future__ import annotations

import pytest
from helpers import with_reader_gone

from device.cli import EXIT_PIPE


@pytest.mark.parametrize("command", [[], ["doctor"], ["ctl", "text"]], ids=" ".join)
async def test_help_piped_into_head_ends_quietly(command: list[str]) -> None:
    """`live-appliance doctor --help | head -3`: help is printed while the arguments are
    parsed, before the guard of the commands' own output, and a reader gone left argparse's
    BrokenPipeError traceback and exit status 1."""
    assert await with_reader_gone(*command, "--help") == (EXIT_PIPE, "")
