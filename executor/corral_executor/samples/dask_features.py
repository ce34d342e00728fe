"""A plain Dask program: per-user spending features from synthetic transactions.

It imports nothing from Corral: it is the kind of script a data scientist already has,
and the example of a ``kind: dask`` job (``examples/dask-features.yaml``). Under Corral,
``distributed.Client()`` finds the job's scheduler through ``DASK_SCHEDULER_ADDRESS``.

    python -m corral_executor.samples.dask_features --out DIR [--partitions 64]
        [--rows 5000] [--delay 0] [--linger 0]     # with Dask (a Client())
    python -m corral_executor.samples.dask_features --out DIR --local
                                                    # pandas in one process, no Dask
    python -m corral_executor.samples.dask_features compare DIR_A DIR_B

The data: ``--partitions`` partitions of ``--rows`` transactions (user, category,
amount), each from its own seeded generator, so every run builds the same data. The
features, per user: transaction count, total, mean and largest amount, and the number
of distinct categories; plus one ``dask.array`` figure (the sum of squared amounts).
``--delay`` adds that many seconds of (sleeping) work to loading each partition, to
stand for reading and parsing real files; ``--linger`` keeps the client connected that
long after the result is written. The result goes to ``DIR/features.json``; ``compare`` checks two
results agree (exact counts, sums to 1e-9 relative).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

USERS = 1000
CATEGORIES = ("food", "travel", "rent", "fun", "other")


def partition(i: int, rows: int, delay: float = 0.0) -> pd.DataFrame:
    """Transactions of partition ``i``: the same every time (``delay``: simulated cost of
    reading and parsing it)."""
    if delay > 0:
        time.sleep(delay)
    rng = np.random.default_rng(1000 + i)
    return pd.DataFrame({
        "user": rng.integers(0, USERS, rows, dtype=np.int64),
        "category": rng.integers(0, len(CATEGORIES), rows, dtype=np.int64),
        "amount": np.round(rng.lognormal(3.0, 1.0, rows), 2),
    })


def featurize(df: pd.DataFrame) -> pd.DataFrame:
    """Per-user partial aggregates of one partition."""
    g = df.groupby("user")
    return pd.DataFrame({
        "count": g["amount"].count(),
        "total": g["amount"].sum(),
        "largest": g["amount"].max(),
        "categories": g["category"].agg(lambda s: int(np.bitwise_or.reduce(1 << s.values))),
    })


def combine(parts: pd.DataFrame) -> pd.DataFrame:
    """Merge per-partition aggregates (rows indexed by user, possibly repeated)."""
    g = parts.groupby(level=0)
    return pd.DataFrame({
        "count": g["count"].sum(),
        "total": g["total"].sum(),
        "largest": g["largest"].max(),
        "categories": g["categories"].agg(lambda s: int(np.bitwise_or.reduce(s.values))),
    })


def result_doc(features: pd.DataFrame, squares: float, partitions: int,
               rows: int) -> dict[str, Any]:
    features = features.sort_index()
    return {
        "partitions": partitions, "rows": rows,
        "users": len(features),
        "count": features["count"].astype(int).tolist(),
        "total": [float(x) for x in features["total"]],
        "mean": [float(t / c) for t, c in zip(features["total"], features["count"],
                                              strict=True)],
        "largest": [float(x) for x in features["largest"]],
        "distinct_categories": [bin(int(m)).count("1") for m in features["categories"]],
        "sum_of_squares": float(squares),
    }


def run_local(partitions: int, rows: int) -> dict[str, Any]:
    parts = [partition(i, rows) for i in range(partitions)]
    features = combine(pd.concat([featurize(p) for p in parts]))
    squares = sum(float(np.sum(p["amount"].to_numpy() ** 2)) for p in parts)
    return result_doc(features, squares, partitions, rows)


def run_dask(client: Any, partitions: int, rows: int, delay: float) -> dict[str, Any]:
    import dask.dataframe as dd

    df = dd.from_map(partition, range(partitions), rows=rows, delay=delay,
                     meta=partition(0, 1).iloc[:0])
    partial = df.map_partitions(featurize, meta=featurize(partition(0, 1)))
    # A tree reduction: per-partition aggregates are combined four at a time on workers.
    features = partial.reduction(_identity, aggregate=combine, combine=combine,
                                 split_every=4, meta=featurize(partition(0, 1)))
    # A dask.array of every amount (chunk sizes unknown: fine for a sum), from the same
    # partitions built again without the --delay cost.
    amounts = dd.from_map(partition, range(partitions), rows=rows,
                          meta=partition(0, 1).iloc[:0])["amount"].values
    f = client.compute(features, sync=True)
    squares = client.compute((amounts ** 2).sum(), sync=True)
    return result_doc(f, float(squares), partitions, rows)


def _identity(df: pd.DataFrame) -> pd.DataFrame:
    return df


def compare(a: Path, b: Path) -> tuple[bool, str]:
    try:
        x = json.loads((a / "features.json").read_text())
        y = json.loads((b / "features.json").read_text())
    except (OSError, ValueError) as exc:
        return False, f"cannot read a result: {exc}"
    for key in ("partitions", "rows", "users", "count", "distinct_categories"):
        if x[key] != y[key]:
            return False, f"{key} differs"
    for key in ("total", "mean", "largest"):
        if len(x[key]) != len(y[key]) or not all(
                math.isclose(p, q, rel_tol=1e-9) for p, q in zip(x[key], y[key], strict=True)):
            return False, f"{key} differs"
    if not math.isclose(x["sum_of_squares"], y["sum_of_squares"], rel_tol=1e-9):
        return False, "sum_of_squares differs"
    return True, f"OK: {x['users']} users' features identical"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        if len(argv) != 3:
            print("usage: dask_features compare DIR_A DIR_B", file=sys.stderr)
            return 2
        ok, why = compare(Path(argv[1]), Path(argv[2]))
        print(why)
        return 0 if ok else 1
    p = argparse.ArgumentParser(prog="python -m corral_executor.samples.dask_features")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--partitions", type=int, default=64)
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--linger", type=float, default=0.0)
    p.add_argument("--local", action="store_true", help="pandas in this process, no Dask")
    args = p.parse_args(argv)
    if args.partitions < 1 or args.rows < 1:
        print("--partitions and --rows must be at least 1", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    if args.local:
        write(args.out, run_local(args.partitions, args.rows), t0)
        return 0
    from distributed import Client

    with Client() as client:
        print(f"connected to {client.scheduler.address}", flush=True)
        write(args.out, run_dask(client, args.partitions, args.rows, args.delay), t0)
        time.sleep(max(0.0, args.linger))
    return 0


def write(out: Path, doc: dict[str, Any], t0: float) -> None:
    doc["wall_seconds"] = round(time.monotonic() - t0, 3)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".features.json.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(out / "features.json")
    print(f"wrote {out / 'features.json'}: {doc['users']} users, "
          f"{doc['wall_seconds']:.1f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
