"""Policy figures from the simulator on Corral's real scheduler core, beside four baselines.

Every shipped policy scenario runs under every policy (``corral`` and the baselines
``fifo``, ``drf``, ``dask-adaptive``, ``uniform-progress``) with the scenario's seed, in
one run; each simulation drives ``corral.core.scheduler.Scheduler`` against the fake
Mesos of ``corral.sim``. Prints the figures with their targets and writes
docs/img/fairness.png, sla.png and spot.png (needs the ``bench`` extra, matplotlib).

    python bench/bench_sim.py [--quick] [--scale] [--scale-horizon SECONDS]

* Fairness: Jain's index among equal-weight roles with equal demand (contention); the
  allocation cycles until a role arriving into a full cluster holds 90% of its
  entitlement (new-role-arrival).
* Deadlines met at 80% offered load (deadlines-80pct-load).
* Spot: cost against all-on-demand, with the deadlines each policy met beside it
  (spot-mix, spot-heavy).
* ``--scale``: the 10,000-agent day-10k scenario under Corral for ``--scale-horizon``
  simulated seconds (default one hour; 86400 for the whole day): wall time, time inside
  ``Scheduler.handle``, and the simulator's own share.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "framework"))
sys.path.insert(0, str(ROOT / "executor"))

from corral.sim.baselines import POLICIES  # noqa: E402
from corral.sim.engine import run_scenario  # noqa: E402
from corral.sim.scenario import load_scenario, shipped_scenarios  # noqa: E402

IMG = ROOT / "docs" / "img"
QUICK = {"new-role-arrival": 2400, "contention": 2400, "deadlines-80pct-load": 5400,
         "spot-mix": 5400, "spot-heavy": 5400}


def run_all(name: str, quick: bool) -> dict[str, Any]:
    sc = load_scenario(shipped_scenarios()[name])
    if quick:
        sc = sc.shortened(QUICK[name])
    out: dict[str, Any] = {}
    for p in POLICIES:
        t0 = time.perf_counter()
        out[p] = run_scenario(sc, p)
        out[p]["wall_s"] = time.perf_counter() - t0
    out["_scenario"] = {"policy": dict(sc.policy), "horizon_s": sc.horizon_s}
    return out


def met(r: dict[str, Any]) -> str:
    d = r["deadlines"]
    return f"{d['met']}/{d['met'] + d['missed']}"


def fraction(r: dict[str, Any]) -> float:
    return r["deadlines"]["met_fraction"] or 0.0


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shortened horizons")
    ap.add_argument("--scale", action="store_true", help="also run day-10k under corral")
    ap.add_argument("--scale-horizon", type=float, default=3600.0,
                    help="simulated seconds of day-10k for --scale (default 3600)")
    a = ap.parse_args(argv)
    t_all = time.perf_counter()
    res = {n: run_all(n, a.quick) for n in QUICK}

    c = res["contention"]
    print("== fairness: 4 equal-weight roles with equal demand (contention) ==")
    for p in POLICIES:
        f = c[p]["fairness"]
        print(f"  {p:17} Jain mean {f['jain_mean']:.4f}  min {f['jain_min']:.4f}  "
              f"utilization {c[p]['utilization']:.3f}  mean completion "
              f"{c[p]['jobs']['mean_completion_s'] or 0:.0f}s  preempted "
              f"{c[p]['preemptions']['count']}")
    jm = c["corral"]["fairness"]["jain_mean"]
    print(f"  target Jain >= 0.99: {verdict(jm >= 0.99)} ({jm:.4f})")

    n = res["new-role-arrival"]
    budget = n["_scenario"]["policy"].get("preemption_budget", 20)
    print("== fairness: a new role arrives into a full cluster (new-role-arrival) ==")
    for p in POLICIES:
        cyc = n[p]["fairness"]["cycles_to_fair_new_roles"].get("newcomer")
        print(f"  {p:17} cycles to 90% of its share: {cyc if cyc is not None else 'never'}  "
              f"preempted {n[p]['preemptions']['count']} (budget {budget:g} per role per "
              f"hour)  work lost {n[p]['work']['lost_fraction']:.3%}")
    cyc = n["corral"]["fairness"]["cycles_to_fair_new_roles"].get("newcomer")
    print(f"  target: new role fair within 2 allocation cycles: "
          f"{verdict(cyc is not None and cyc <= 2)}")

    d = res["deadlines-80pct-load"]
    print("== deadlines at 80% offered load (deadlines-80pct-load) ==")
    for p in POLICIES:
        print(f"  {p:17} met {met(d[p])} ({fraction(d[p]):.1%})  utilization "
              f"{d[p]['utilization']:.3f}  jobs finished {d[p]['jobs']['finished']}/"
              f"{d[p]['jobs']['arrived']}  mean completion "
              f"{d[p]['jobs']['mean_completion_s'] or 0:.0f}s")
    print(f"  target >= 99%: {verdict(fraction(d['corral']) >= 0.99)}")

    for name in ("spot-mix", "spot-heavy"):
        s = res[name]
        print(f"== spot: cost against all-on-demand ({name}) ==")
        for p in POLICIES:
            cc = s[p]["cost"]
            print(f"  {p:17} cost {cc['ratio_to_on_demand']:.3f} of all-on-demand "
                  f"({cc['spot_cpu_fraction']:.1%} of cpu on spot); deadlines {met(s[p])}; "
                  f"work lost {s[p]['work']['lost_fraction']:.3%}; terminations "
                  f"{s[p]['spot']['terminations']} ({s[p]['spot']['with_notice']} noticed); "
                  f"cpus/worker {s[p]['rightsizing']['cpus_per_worker_vs_spec'] or 1:.2f}")
        ours = s["corral"]
        same = [p for p in POLICIES[1:] if s[p]["deadlines"]["met"] ==
                ours["deadlines"]["met"] and s[p]["deadlines"]["missed"] ==
                ours["deadlines"]["missed"]]
        r = ours["cost"]["ratio_to_on_demand"]
        print(f"  target <= 40% of all-on-demand at equal deadline hits: {verdict(r <= 0.40)}"
              f" ({r:.3f}; baselines with the same deadline hits: "
              f"{', '.join(same) or 'none'})")
    print(f"(policy runs: {time.perf_counter() - t_all:.0f} s wall)")
    if a.scale:
        scale(a.scale_horizon)
    plot(res)
    return 0


def scale(horizon: float) -> None:
    sc = load_scenario(shipped_scenarios()["day-10k"]).shortened(horizon)
    t0 = time.perf_counter()
    rep = run_scenario(sc, "corral")
    wall = time.perf_counter() - t0
    core = rep["timing"]["core_seconds"]
    print(f"== scale: day-10k, 10,000 agents, {horizon:g} simulated seconds ==")
    print(f"  {wall:.0f} s wall ({horizon / wall:.0f} simulated s per wall s); "
          f"{core:.0f} s inside Scheduler.handle ({rep['mesos']['core_events']:,} events, "
          f"{rep['timing']['core_events_per_second']:,.0f}/s); the simulator's own "
          f"{wall - core:.0f} s ({(wall - core) / wall:.0%})")
    print(f"  jobs {rep['jobs']['finished']}/{rep['jobs']['arrived']} finished; deadlines "
          f"{met(rep)}; utilization {rep['utilization']:.3f}; cost "
          f"{rep['cost']['ratio_to_on_demand']} of all-on-demand; Jain "
          f"{rep['fairness']['jain_mean']}; {rep['spot']['terminations']} spot terminations")


def plot(res: dict[str, Any]) -> None:
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
    ax1.set_title("contention: Jain's index (fifo under uniform-progress)")
    ax2.set_title("new role arrives at 30 min: Jain's index")
    for ax in (ax1, ax2):
        ax.set_xlabel("minutes")
        ax.set_ylabel("Jain's index")
        ax.set_ylim(0.2, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "fairness.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    d = res["deadlines-80pct-load"]
    bars = ax.bar(POLICIES, [100 * fraction(d[p]) for p in POLICIES], color="#228833")
    for b, p in zip(bars, POLICIES, strict=True):
        ax.annotate(met(d[p]), (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.axhline(99, color="red", linestyle="--", label="target 99%")
    ax.set_ylabel("% deadlines met")
    ax.set_title("deadlines at 80% offered load")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "sla.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("spot-mix", "spot-heavy"), strict=True):
        s = res[name]
        bars = ax.bar(POLICIES, [100 * s[p]["cost"]["ratio_to_on_demand"] for p in POLICIES],
                      color="#ccbb44")
        for b, p in zip(bars, POLICIES, strict=True):
            ax.annotate(f"{met(s[p])} deadlines", (b.get_x() + b.get_width() / 2,
                                                   b.get_height()),
                        ha="center", va="bottom", fontsize=7)
        ax.axhline(40, color="red", linestyle="--", label="target 40%")
        ax.set_ylabel("cost, % of all-on-demand")
        ax.set_title(f"{name}: cost and deadlines met")
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(IMG / "spot.png", dpi=90)
    plt.close(fig)
    print(f"plots: {IMG}/fairness.png, sla.png, spot.png")


if __name__ == "__main__":
    raise SystemExit(main())
