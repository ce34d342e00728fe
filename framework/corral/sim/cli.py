"""``corral sim``: run a simulator scenario and print its report.

    corral sim SCENARIO.yaml [--seed N] [--policy corral|fifo|adaptive|drf] [--json]
                             [--horizon SECONDS] [--timing]

SCENARIO is a path or the name of a shipped scenario (``contention``, ``spot-mix``...).
``--json`` prints the deterministic report as JSON (same seed, byte-identical output);
wall-clock figures (decisions per second) are added only with ``--timing``. Bad input
gives a one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from corral.sim.engine import run_scenario
from corral.sim.policies import POLICIES
from corral.sim.scenario import ScenarioError, load_scenario, shipped_scenarios


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ScenarioError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="corral sim", description="Run a Corral simulator scenario.")
    p.add_argument("scenario", help="scenario YAML path, or a shipped scenario name: "
                   + ", ".join(shipped_scenarios()))
    p.add_argument("--seed", type=int, default=None, help="random seed (default: scenario's)")
    p.add_argument("--policy", choices=POLICIES, default="corral")
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
        report = run_scenario(sc, args.policy, args.seed)
    except ScenarioError as e:
        print(f"error: {e}", file=err)
        return 2
    if args.json:
        if not args.timing:
            report.pop("timing")
        out.write(json.dumps(report, sort_keys=True, indent=1) + "\n")
    else:
        out.write(format_text(report))
    return 0


def format_text(r: dict[str, Any]) -> str:
    """A short human summary of a report."""
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
        f"(met fraction {_num(d['met_fraction'])}); risk flags {d['risk_flags']}",
        f"preemptions: {r['preemptions']['count']} ({r['preemptions']['per_hour']}/h); "
        f"spot terminations {r['spot_terminations']}; retired gracefully "
        f"{r['retired_gracefully']}",
        f"work: done {r['work']['done']:.0f}, lost {r['work']['lost']:.0f} "
        f"({r['work']['lost_fraction']:.3%})",
    ]
    if t["decisions_per_second"]:
        lines.append(f"timing: {t['decisions_per_second']:.0f} job decisions/s, "
                     f"{t['tasks_placed_per_second'] or 0:.0f} tasks placed/s (wall clock)")
    return "\n".join(lines) + "\n"


def _new_roles(cycles: dict[str, int | None]) -> str:
    """How many allocation cycles each role arriving mid-run took to get its fair share."""
    if not cycles:
        return "no role arrived mid-run"
    parts = [f"{role} {'never' if c is None else f'after {c} cycle' + ('' if c == 1 else 's')}"
             for role, c in sorted(cycles.items())]
    return "new roles fair: " + ", ".join(parts)


def _num(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:g}{unit}"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
