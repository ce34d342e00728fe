"""``corral sim``: run a simulator scenario on Corral's scheduler core and print its report.

    corral sim SCENARIO [--policy NAME | --compare] [--seed N] [--json]
                        [--horizon SECONDS] [--timing]

SCENARIO is a path or the name of a shipped scenario (``contention``, ``spot-mix``...).
``--policy`` picks the policy plugged into the core (``corral``, the default, or a
baseline); ``--compare`` runs every policy on the same scenario and seed and prints them
side by side. ``--json`` prints the deterministic report as JSON (same seed,
byte-identical output); wall-clock figures are added only with ``--timing``. Bad input
gives a one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from corral.sim.baselines import POLICIES
from corral.sim.engine import run_scenario
from corral.sim.scenario import ScenarioError, load_scenario, shipped_scenarios


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ScenarioError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="corral sim",
                description="Run a scenario on Corral's scheduler core against a "
                            "simulated Mesos cluster.")
    p.add_argument("scenario", help="scenario YAML path, or a shipped scenario name: "
                   + ", ".join(shipped_scenarios()))
    p.add_argument("--seed", type=int, default=None, help="random seed (default: scenario's)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--policy", choices=POLICIES, default="corral",
                       help="the policy plugged into the core (default %(default)s)")
    which.add_argument("--compare", action="store_true",
                       help="run every policy on the same scenario and seed, side by side")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--horizon", type=float, default=None,
                   help="stop earlier than the scenario's horizon (seconds)")
    p.add_argument("--timing", action="store_true",
                   help="include wall-clock timing in JSON (makes output non-reproducible)")
    return p


def resolve(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path
    shipped = shipped_scenarios()
    if name in shipped:
        return shipped[name]
    raise ScenarioError(f"no scenario file {name!r} (shipped: {', '.join(shipped)})")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(list(argv) if argv is not None else None)
        sc = load_scenario(resolve(args.scenario))
        if args.horizon is not None:
            if args.horizon <= 0:
                raise ScenarioError("--horizon must be positive")
            sc = sc.shortened(args.horizon)
        if args.seed is not None and args.seed < 0:
            raise ScenarioError("--seed must be >= 0")
        policies = POLICIES if args.compare else (args.policy,)
        reports = {}
        for name in policies:
            t0 = time.perf_counter()
            reports[name] = run_scenario(sc, name, args.seed)
            reports[name]["timing"]["wall_seconds"] = time.perf_counter() - t0
    except ScenarioError as e:
        print(f"error: {e}", file=err)
        return 2
    if args.json:
        if not args.timing:
            for r in reports.values():
                r.pop("timing")
        doc: Any = reports if args.compare else reports[args.policy]
        out.write(json.dumps(doc, sort_keys=True, indent=1) + "\n")
    elif args.compare:
        out.write(format_compare(reports))
    else:
        out.write(format_text(reports[args.policy]))
    return 0


def format_text(r: dict[str, Any]) -> str:
    """A short human summary of one report."""
    d, f, c, t = r["deadlines"], r["fairness"], r["cost"], r["timing"]
    lines = [
        f"scenario {r['scenario']}  policy {r['policy']}  seed {r['seed']}  "
        f"horizon {r['horizon_s']:g}s  agents {r['agents']}  roles {r['roles']}",
        f"jobs: {r['jobs']['arrived']} arrived, {r['jobs']['finished']} finished, "
        f"mean completion {_num(r['jobs']['mean_completion_s'], 's')}",
        f"utilization: {r['utilization']:.1%}",
        f"cost: {c['total']:.2f} vs all-on-demand {c['all_on_demand']:.2f} "
        f"(ratio {_num(c['ratio_to_on_demand'])}; spot share of cpu {c['spot_cpu_fraction']:.1%})",
        f"fairness: Jain mean {_num(f['jain_mean'])} min {_num(f['jain_min'])}; "
        f"{_new_roles(f['cycles_to_fair_new_roles'])}",
        f"deadlines: {d['met']} met, {d['missed']} missed, {d['unresolved']} unresolved "
        f"(met fraction {_num(d['met_fraction'])})",
        f"policy: {r['preemptions']['count']} preempted ({r['preemptions']['per_hour']:g}/h), "
        f"{r['retired']} retired; new workers at "
        f"{_num(r['rightsizing']['cpus_per_worker_vs_spec'])} of the cpus they ask for",
        f"spot: {r['spot']['terminations']} terminations ({r['spot']['with_notice']} with "
        f"notice), {r['spot']['revocations']} revocations",
        f"work: done {r['work']['done']:.0f}, lost {r['work']['lost']:.0f} "
        f"({r['work']['lost_fraction']:.3%})",
        f"timing: {t['wall_seconds']:.1f}s wall, {r['mesos']['core_events']} events into "
        f"the core ({t['core_seconds']:.1f}s in Scheduler.handle)",
    ]
    return "\n".join(lines) + "\n"


def _new_roles(cycles: dict[str, int | None]) -> str:
    """How many allocation cycles each role arriving mid-run took to get its fair share."""
    if not cycles:
        return "no role arrived mid-run"
    parts = [f"{role} {'never' if c is None else f'after {c} cycle' + ('' if c == 1 else 's')}"
             for role, c in sorted(cycles.items())]
    return "new roles fair: " + ", ".join(parts)
_ROWS: tuple[tuple[str, Any], ...] = (
    ("jobs finished", lambda r: f"{r['jobs']['finished']}/{r['jobs']['arrived']}"),
    ("mean completion s", lambda r: _num(r["jobs"]["mean_completion_s"])),
    ("utilization", lambda r: f"{r['utilization']:.3f}"),
    ("deadlines met", lambda r: f"{r['deadlines']['met']}/"
     f"{r['deadlines']['met'] + r['deadlines']['missed']}"),
    ("cost / all-on-demand", lambda r: _num(r["cost"]["ratio_to_on_demand"])),
    ("spot share of cpu", lambda r: f"{r['cost']['spot_cpu_fraction']:.3f}"),
    ("Jain mean", lambda r: _num(r["fairness"]["jain_mean"])),
    ("new role fair (cycles)", lambda r: _cycles(r["fairness"]["cycles_to_fair_new_roles"])),
    ("preempted", lambda r: str(r["preemptions"]["count"])),
    ("retired", lambda r: str(r["retired"])),
    ("work lost", lambda r: f"{r['work']['lost_fraction']:.4f}"),
    ("cpus/worker vs spec", lambda r: _num(r["rightsizing"]["cpus_per_worker_vs_spec"])),
    ("wall s", lambda r: f"{r['timing']['wall_seconds']:.1f}"),
)


def format_compare(reports: dict[str, dict[str, Any]]) -> str:
    """Every policy's figures side by side, one column per policy."""
    first = next(iter(reports.values()))
    head = (f"scenario {first['scenario']}  seed {first['seed']}  horizon "
            f"{first['horizon_s']:g}s  agents {first['agents']}  roles {first['roles']}")
    rows = [["", *reports]]
    for label, get in _ROWS:
        rows.append([label, *(get(r) for r in reports.values())])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                                for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
                      for row in rows]
    return "\n".join(lines) + "\n"


def _cycles(c: dict[str, int | None]) -> str:
    if not c:
        return "-"
    return ", ".join(f"{role} {'never' if n is None else n}" for role, n in sorted(c.items()))


def _num(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:g}{unit}"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
