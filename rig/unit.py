"""The systemd unit's settings that shape how the daemon runs, read from the unit file.

Whatever starts the daemon as systemd would (the benchmark) gives it what the unit
gives it, from the one file the installer copies to the box: its environment
(`Environment=`). Nothing is copied by hand, so a setting changed in the unit is
measured as it is.
"""

from __future__ import annotations

import shlex
from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "live-appliance.service"


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values, in order; an empty assignment resets the list (as systemd)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def service_directives(unit: Path = UNIT) -> dict[str, list[str]]:
    """The [Service] section: key -> values in order."""
    return directives(unit.read_text()).get("Service", {})


def environment(unit: Path = UNIT) -> dict[str, str]:
    """The unit's `Environment=` variables, except those naming a directory through a
    specifier (`%t`: e.g. LG_WD, lgpio's FIFOs in a runtime directory only systemd
    makes; the rig's pins are mock ones)."""
    variables: dict[str, str] = {}
    for value in service_directives(unit).get("Environment", []):
        for assignment in shlex.split(value):
            name, _, setting = assignment.partition("=")
            if "%" not in setting:
                variables[name] = setting
    return variables
