"""A plain distributed-training program: LightGBM on Dask (no Corral import).

    python -m corral_executor.samples.lightgbm_dask --out DIR [--rows 40000]
        [--partitions 8] [--trees 40]

It builds a fixed synthetic binary classification set as Dask arrays (``--partitions``
blocks of rows, each from its own seeded generator), trains
``lightgbm.DaskLGBMClassifier`` on the first 80% of the blocks across the Dask workers
(LightGBM's own network between them), predicts the rest, and writes
``DIR/result.json``: accuracy on the held-out rows, how many workers trained, and the
model's size. Under Corral ``distributed.Client()`` connects through
``DASK_SCHEDULER_ADDRESS``.

LightGBM fixes its worker network when ``fit`` starts: keep such a job at a fixed size
(``workers.min == workers.max``), or a worker retired mid-fit fails the fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 10


def block(i: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of block ``i``: features and labels, the same every time."""
    rng = np.random.default_rng(500 + i)
    x = rng.normal(size=(rows, FEATURES))
    w = np.linspace(-1.0, 1.0, FEATURES)
    score = x @ w + 0.5 * np.sin(3 * x[:, 0]) + 0.3 * rng.normal(size=rows)
    return x, (score > 0).astype(np.int32)


def dataset(rows: int, partitions: int) -> tuple[Any, Any]:
    import dask
    import dask.array as da

    per = max(1, rows // partitions)
    parts = [dask.delayed(block)(i, per) for i in range(partitions)]
    xs = [da.from_delayed(p[0], shape=(per, FEATURES), dtype=float) for p in parts]
    ys = [da.from_delayed(p[1], shape=(per,), dtype=np.int32) for p in parts]
    return da.concatenate(xs), da.concatenate(ys)


def train(client: Any, rows: int, partitions: int, trees: int) -> dict[str, Any]:
    import lightgbm as lgb

    x, y = dataset(rows, partitions)
    cut = (partitions * 4 // 5) * (rows // partitions)
    x_train, y_train = client.persist([x[:cut], y[:cut]])
    model = lgb.DaskLGBMClassifier(n_estimators=trees, num_leaves=15, learning_rate=0.2,
                                   client=client, verbose=-1, n_jobs=1)
    model.fit(x_train, y_train)
    pred = model.predict(x[cut:])
    accuracy = float((pred == y[cut:]).mean().compute())
    return {"accuracy": round(accuracy, 4), "train_rows": int(cut),
            "test_rows": int(x.shape[0] - cut), "trees": trees,
            "workers": len(client.scheduler_info()["workers"]),
            "model_bytes": len(model.booster_.model_to_string())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m corral_executor.samples.lightgbm_dask")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=int, default=40000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--trees", type=int, default=40)
    p.add_argument("--workers", type=int, default=1,
                   help="wait until this many Dask workers are connected (default 1)")
    args = p.parse_args(argv)
    if args.rows < args.partitions or args.partitions < 2 or args.trees < 1:
        print("need --partitions >= 2, --rows >= --partitions and --trees >= 1",
              file=sys.stderr)
        return 2
    from distributed import Client

    t0 = time.monotonic()
    with Client() as client:
        client.wait_for_workers(args.workers, timeout=300)
        doc = train(client, args.rows, args.partitions, args.trees)
    doc["wall_seconds"] = round(time.monotonic() - t0, 3)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(doc))
    print(f"accuracy {doc['accuracy']:.3f} on {doc['test_rows']} held-out rows, "
          f"{doc['workers']} workers, {doc['wall_seconds']:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
