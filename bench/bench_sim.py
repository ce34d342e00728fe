"""Benchmark the policy in the simulator against the baselines (fifo, adaptive, drf).

Runs the shipped scenarios under every policy with the same seed and prints figures and
ratios; writes docs/img/fairness.png, docs/img/sla.png and docs/img/spot.png (needs the
``bench`` extra, matplotlib).

    python bench/bench_sim.py [--quick] [--scale]

* Fairness (contention, new-role-arrival): Jain's index among equal-weight roles, cycles
  for a new role to reach 90% of its entitlement, preemptions per hour vs the budget.
* SLA (deadlines-80pct-load): % of deadlines met at 80% offered load.
* Spot (spot-mix): cost vs all-on-demand, with the deadline attainment it came with.
* ``--scale``: scale-10k under corral, decisions per second (wall clock).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "framework"))

from corral.sim.engine import run_scenario  # noqa: E402
from corral.sim.policies import POLICIES  # noqa: E402
from corral.sim.scenario import load_scenario, shipped_scenarios  # noqa: E402

IMG = ROOT / "docs" / "img"
QUICK = {"contention": 2400, "new-role-arrival": 2400, "deadlines-80pct-load": 5400,
         "spot-mix": 5400}


def run_all(name: str, quick: bool) -> dict[str, dict]:
    sc = load_scenario(shipped_scenarios()[name])
    if quick:
        sc = sc.shortened(QUICK[name])
    out = {}
    for p in POLICIES:
        t0 = time.perf_counter()
        out[p] = run_scenario(sc, p)
        out[p]["wall_s"] = time.perf_counter() - t0
    out["_scenario"] = {"policy": dict(sc.policy), "roles": len(sc.roles),
                        "horizon_s": sc.horizon_s}
    return out


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shortened horizons")
    ap.add_argument("--scale", action="store_true", help="also run scale-10k (about 30 s)")
    a = ap.parse_args(argv)
    res = {n: run_all(n, a.quick) for n in QUICK}

    print("== fairness: contention among 4 equal-weight roles ==")
    c = res["contention"]
    for p in POLICIES:
        f = c[p]["fairness"]
        print(f"  {p:9} Jain mean {f['jain_mean']:.4f}  min {f['jain_min']:.4f}  "
              f"utilization {c[p]['utilization']:.3f}")
    print(f"  corral Jain mean vs drf {ratio(c['corral']['fairness']['jain_mean'], c['drf']['fairness']['jain_mean'])}, "  # noqa: E501
          f"vs adaptive {ratio(c['corral']['fairness']['jain_mean'], c['adaptive']['fairness']['jain_mean'])}"  # noqa: E501
          f" (target >= 0.99: {'met' if c['corral']['fairness']['jain_mean'] >= 0.99 else 'NOT met'})")  # noqa: E501

    print("== fairness: a new role arrives into a full cluster ==")
    n = res["new-role-arrival"]
    budget = n["_scenario"]["policy"].get("preemption_budget", 20)
    for p in POLICIES:
        cyc = n[p]["fairness"]["cycles_to_fair_new_roles"].get("newcomer")
        print(f"  {p:9} cycles to fair share: {cyc if cyc is not None else 'never'}  "
              f"preemptions {n[p]['preemptions']['count']} "
              f"({n[p]['preemptions']['per_hour']:.0f}/h; budget {budget:g} per role per hour,"
              f" {budget * 3:g}/h over the 3 victim roles)  work lost "
              f"{n[p]['work']['lost_fraction']:.3%}")
    cyc = n["corral"]["fairness"]["cycles_to_fair_new_roles"].get("newcomer")
    print(f"  target: new role fair within 2 cycles: "
          f"{'met' if cyc is not None and cyc <= 2 else 'NOT met'}")

    print("== SLA: deadlines at 80% offered load ==")
    d = res["deadlines-80pct-load"]
    for p in POLICIES:
        dd = d[p]["deadlines"]
        print(f"  {p:9} met {dd['met']}/{dd['met'] + dd['missed']} ({(dd['met_fraction'] or 0):.1%})"  # noqa: E501
              f"  utilization {d[p]['utilization']:.3f}")
    mc = d["corral"]["deadlines"]["met_fraction"]
    print("  corral vs " + ", ".join(
        f"{p} {ratio(mc, d[p]['deadlines']['met_fraction'])}" for p in POLICIES[1:]
    ) + f" (target >= 99%: {'met' if (mc or 0) >= 0.99 else 'NOT met'})")

    print("== spot: cost vs all-on-demand ==")
    s = res["spot-mix"]
    for p in POLICIES:
        cc, dd = s[p]["cost"], s[p]["deadlines"]
        print(f"  {p:9} cost {cc['total']:.2f} = {cc['ratio_to_on_demand']:.3f} of on-demand "
              f"({cc['spot_cpu_fraction']:.1%} on spot); deadlines {dd['met']}/"
              f"{dd['met'] + dd['missed']}; work lost {s[p]['work']['lost_fraction']:.3%}")
    r = s["corral"]["cost"]["ratio_to_on_demand"]
    print("  corral cost vs " + ", ".join(
        f"{p} {ratio(s['corral']['cost']['total'], s[p]['cost']['total'])}" for p in POLICIES[1:]
    ) + f" (target <= 40% of on-demand: {'met' if r <= 0.40 else 'NOT met'})")

    if a.scale:
        sc = load_scenario(shipped_scenarios()["scale-10k"])
        t0 = time.perf_counter()
        rep = run_scenario(sc, "corral")
        t = rep["timing"]
        print("== scale-10k: 10,000 agents, 200 roles, 1,000 jobs ==")
        print(f"  {rep['ticks']} ticks in {time.perf_counter() - t0:.1f} s wall; "
              f"{t['decisions_per_second']:,.0f} job decisions/s; "
              f"{t['tasks_placed_per_second']:,.0f} tasks placed/s; Jain mean "
              f"{rep['fairness']['jain_mean']}")
    plot(res)
    return 0


def plot(res: dict[str, dict]) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: pip install -e '.[bench]' for plots)")
        return
    IMG.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for p in POLICIES:
        ser = res["contention"][p]["fairness"]["series"]
        ax1.plot([t / 60 for t, _ in ser], [j for _, j in ser], label=p)
        ser = res["new-role-arrival"][p]["fairness"]["series"]
        ax2.plot([t / 60 for t, _ in ser], [j for _, j in ser], label=p)
    ax1.set_title("contention: Jain's index over time")
    ax2.set_title("new role arrives at 30 min: Jain's index")
    for ax in (ax1, ax2):
        ax.set_xlabel("minutes")
        ax.set_ylabel("Jain's index")
        ax.set_ylim(0.5, 1.01)
        ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "fairness.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    vals = [100 * (res["deadlines-80pct-load"][p]["deadlines"]["met_fraction"] or 0)
            for p in POLICIES]
    ax.bar(POLICIES, vals, color="#228833")
    ax.axhline(99, color="red", linestyle="--", label="target 99%")
    ax.set_ylabel("% deadlines met")
    ax.set_title("deadlines at 80% offered load")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "sla.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    s = res["spot-mix"]
    vals = [100 * s[p]["cost"]["ratio_to_on_demand"] for p in POLICIES]
    bars = ax.bar(POLICIES, vals, color="#ccbb44")
    for b, p in zip(bars, POLICIES, strict=True):
        dd = s[p]["deadlines"]
        ax.annotate(f"{dd['met']}/{dd['met'] + dd['missed']} deadlines",
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.axhline(40, color="red", linestyle="--", label="target 40%")
    ax.set_ylabel("cost, % of all-on-demand")
    ax.set_title("spot-mix: cost and deadline attainment")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "spot.png", dpi=90)
    plt.close(fig)
    print(f"plots: {IMG}/fairness.png, sla.png, spot.png")


if __name__ == "__main__":
    raise SystemExit(main())
