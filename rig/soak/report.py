"""The soak's verdict and its figures: lines for people, one JSON document for comparing runs.

The must-be-zero figures decide the exit status: a stuck state, a leaked task,
thread or descriptor, a daemon that exited by itself or not cleanly at SIGTERM,
a watchdog that would have fired, a fault the box did not survive, and a turn
lost with no fault and no word from the service to explain it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rig.bench.report import machine
from rig.soak.run import WATCHDOG_S, Life, Result


def failures(result: Result) -> list[str]:
    """Every must-be-zero figure that is not, in words; empty when the run passed."""
    tally, out = result.tally, []
    if tally.stuck:
        out.append(f"{len(tally.stuck)} stuck state(s)")
    for life in result.lives:
        name = f"daemon {life.pid} ({life.mode})"
        for what, n in (life.leaks() or {}).items():
            if n:
                out.append(f"{name} leaked {n} {what}" + _which(life, what))
        if life.ended == "exited":
            out.append(f"{name} exited by itself with status {life.exit_status}")
        elif life.exit_status != 0:
            out.append(f"{name} ended with status {life.exit_status} at SIGTERM")
        if life.watchdog_gap_s > WATCHDOG_S:
            out.append(f"{name} went {life.watchdog_gap_s:.0f} s without feeding the watchdog")
    if tally.not_survived:
        out.append(f"{len(tally.not_survived)} fault(s) not survived")
    if lost := tally.lost():
        out.append(f"{len(lost)} turn(s) lost with no fault to explain it")
    return out


def document(result: Result, before: dict[str, Any]) -> dict[str, Any]:
    """Everything the run found, as JSON: enough to replay it (the seed) and to judge it."""
    o, tally = result.options, result.tally
    return {
        "date": before["date"],
        "machine": {**{k: v for k, v in before.items() if k != "date"},
                    "loadavg_after": machine()["loadavg"]},
        "seed": o.seed,
        "modes": [str(m) for m in o.modes],
        "wall_minutes": round(result.wall_s / 60, 1),
        "time_scale": o.time_scale,
        "service_minutes": round(result.wall_s * o.time_scale / 60, 1),
        "turns": {
            "all": tally.turns(),
            **{str(m): tally.turns(m) for m in o.modes},
        },
        "faults": tally.faults(),
        "connections": result.connections,
        "go_aways_of_the_service": result.go_aways - sum(
            n for (_, f), n in tally.struck.items() if f == "go_away"
        ),
        "stuck": tally.stuck,
        "not_survived": tally.not_survived,
        "lost": [a.as_dict() for a in tally.lost()],
        "daemons": [life.as_dict() for life in result.lives],
        "failures": failures(result),
    }


def text(doc: dict[str, Any]) -> str:
    """The figures in lines a person reads."""
    m = doc["machine"]
    lines = [
        f"soak {doc['date']}, seed {doc['seed']}: {doc['wall_minutes']} min on the clock, "
        f"{doc['service_minutes']} min of the service's time (time scale {doc['time_scale']:g})",
        f"machine: {m['cpus']} CPUs ({m['processor']}), load average "
        f"{' '.join(m['loadavg'])} before, {' '.join(m['loadavg_after'])} after",
        "",
        "turns            asked  answered  let pass  cut by a fault  cut by service  lost",
    ]
    for name, t in doc["turns"].items():
        lines.append(
            f"  {name:<14} {t['asked']:>5}  {t['answered']:>8}  {t['let_pass']:>8}  "
            f"{t['cut_by_a_fault']:>14}  {t['cut_by_the_service']:>14}  {t['lost']:>4}"
        )
    lines += ["", "faults                   struck  survived  not survived  missed"]
    for kind, f in doc["faults"].items():
        lines.append(
            f"  {kind:<23} {f['struck']:>6}  {f['survived']:>8}  {f['not_survived']:>12}  "
            f"{f['missed']:>6}"
        )
    lines += [
        f"  the service's own goAways (connection lifetimes): {doc['go_aways_of_the_service']}; "
        f"connections: {doc['connections']}",
        "",
        f"stuck states: {len(doc['stuck'])}",
        "",
        "daemons  mode          episodes  tasks  threads  fds  workers  "
        "RSS after warm-up -> end (peak)  watchdog gap  ended",
    ]
    for d in doc["daemons"]:
        leaks = d["leaks"] or {}
        b, f = d["baseline"] or {}, d["final"] or {}
        rss = (
            f"{b['rss_mb']:.1f} -> {f['rss_mb']:.1f} MB ({f['rss_mb'] - b['rss_mb']:+.1f})"
            if b and f else "-"
        )
        peak = f" (peak {d['peak_rss_mb']:.1f})" if d["peak_rss_mb"] else ""
        workers = f"{b['workers']} -> {f['workers']}" if b and f else "-"
        lines.append(
            f"  {d['pid']:<6} {d['mode']:<13} {d['episodes']:>8}  "
            f"{_leak(leaks, 'tasks'):>5}  {_leak(leaks, 'threads'):>7}  {_leak(leaks, 'fds'):>3}  "
            f"{workers:>7}  {rss}{peak}  {d['watchdog_gap_s']:.0f} s  "
            f"{d['ended']}, status {d['exit_status']}"
            + (f" in {d['stop_s']} s" if d["stop_s"] is not None else "")
        )
    lines.append("")
    lines += [f"FAILED: {f}" for f in doc["failures"]] or ["passed: every must-be-zero figure is 0"]
    return "\n".join(lines)


def _which(life: Life, what: str) -> str:
    """The leaked descriptors' kinds, where both readings named them."""
    if what != "fds" or life.baseline is None or life.final is None:
        return ""
    kinds = life.baseline.fds_beyond(life.final)
    return f" ({', '.join(kinds)})" if kinds else ""


def _leak(leaks: dict[str, int], what: str) -> str:
    return str(leaks[what]) if what in leaks else "-"


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")

