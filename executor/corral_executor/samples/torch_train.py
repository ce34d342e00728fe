"""A plain elastic PyTorch training script (no Corral import), for ``kind: torch`` jobs.

    torchrun ... -m corral_executor.samples.torch_train --out DIR --ckpt URL [--steps 300]
        [--step-delay 0.02]

Data-parallel (DDP, gloo on the CPU) linear regression on a fixed synthetic data set:
each rank trains on its share of the rows. The script is written for elastic runs:
rank 0 saves a checkpoint (``torch.save`` to an fsspec URL, written then renamed) every
``--ckpt-every`` steps, and every (re)start resumes from it, because a membership change
restarts all training processes with a new world size. When done, rank 0 writes
``DIR/result.json``: the learned weights, the true ones, the steps run and the world
sizes the run went through.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

FEATURES = 8
ROWS = 2048


def data() -> tuple[Any, Any, Any]:
    import torch

    g = torch.Generator().manual_seed(7)
    x = torch.randn(ROWS, FEATURES, generator=g)
    w = torch.arange(1, FEATURES + 1, dtype=torch.float32) / FEATURES
    y = x @ w + 0.5 + 0.01 * torch.randn(ROWS, generator=g)
    return x, y, w


def load(url: str) -> dict[str, Any] | None:
    import fsspec
    import torch

    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return torch.load(fh, weights_only=False)


def save(url: str, state: dict[str, Any]) -> None:
    import fsspec
    import torch

    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(fs._parent(path), exist_ok=True)
    with fs.open(path + ".tmp", "wb") as fh:
        torch.save(state, fh)
    fs.mv(path + ".tmp", path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="torch_train")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ckpt", required=True, help="checkpoint URL (fsspec), e.g. file:///x.pt")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ckpt-every", type=int, default=10)
    p.add_argument("--step-delay", type=float, default=0.0)
    args = p.parse_args(argv)

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    state = load(args.ckpt) or {"step": 0, "worlds": []}
    if "model" in state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    worlds = [*state["worlds"], world]
    ddp = DDP(model)
    x, y, w_true = data()
    xs, ys = x[rank::world], y[rank::world]
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    print(f"rank {rank}/{world} from step {state['step']} (restart {restart})", flush=True)
    step = state["step"]
    while step < args.steps:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(xs).squeeze(1), ys)
        loss.backward()
        opt.step()
        step += 1
        if args.step_delay > 0:
            time.sleep(args.step_delay)
        if rank == 0 and (step % args.ckpt_every == 0 or step == args.steps):
            save(args.ckpt, {"step": step, "model": model.state_dict(),
                             "opt": opt.state_dict(), "worlds": worlds})
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        doc = {"steps": step, "worlds": worlds,
               "weights": [round(float(v), 6) for v in model.weight.detach().flatten()],
               "bias": round(float(model.bias.detach()[0]), 6),
               "true_weights": [round(float(v), 6) for v in w_true], "true_bias": 0.5,
               "loss": round(float(loss.detach()), 8)}
        (args.out / "result.json").write_text(json.dumps(doc))
        print(f"done: {json.dumps(doc)}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
