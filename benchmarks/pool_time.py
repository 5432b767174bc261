"""The FedDST CNNs' stride-1 max-pool: PyTorch's kernel vs ``fedprune.models.max_pool_s1``.

    python benchmarks/pool_time.py [--models cnn-mnist cnn-cifar10] [--steps 30]

Both pools give the same values and gradients bit for bit (checked here on every
model: parameters after ``--steps`` SGD steps and the evaluation logits must be
equal, or the script exits with an error), so the only difference is time. Timed
side by side in one run, best of 3 after a warm-up: a training step (forward,
backward, SGD with momentum) at batch 16 (the study's) and 32, and an evaluation
forward under ``torch.no_grad`` at batch 1000 (the default ``eval-batch-size``).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch

import fedprune.models as models

SHAPES = {"cnn-mnist": (1, 28, 28), "cnn-cifar10": (3, 32, 32)}


def native(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(x, k, stride=1)


def with_pool(pool: Callable, fn: Callable):
    """Run ``fn`` with the CNNs' pool set to ``pool``."""
    saved = models.max_pool_s1
    models.max_pool_s1 = pool
    try:
        return fn()
    finally:
        models.max_pool_s1 = saved


def train_steps(name: str, batch: int, steps: int) -> tuple[float, list[torch.Tensor]]:
    """Best seconds per step of 3 runs, and the parameters after the last run."""
    shape = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(steps)]
    best, params = float("inf"), []
    for rep in range(4):  # the first is the warm-up
        model = models.build_model(name, shape, 10, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        t = time.perf_counter()
        for x, y in data:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        if rep:
            best = min(best, (time.perf_counter() - t) / steps)
        params = [p.detach().clone() for p in model.parameters()]
    return best, params


def eval_forward(name: str, batch: int) -> tuple[float, torch.Tensor]:
    shape = SHAPES[name]
    model = models.build_model(name, shape, 10, seed=0).eval()
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    best = float("inf")
    with torch.no_grad():
        out = model(x)
        for _ in range(3):
            t = time.perf_counter()
            out = model(x)
            best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fast = models.max_pool_s1
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} steps per run, best of 3")
    print(f"{'model':<12} {'what':<22} {'native ms':>10} {'fedprune ms':>11} {'speed-up':>8}  identical")
    for name in args.models:
        rows = [(f"train step, batch {b}", functools.partial(train_steps, name, b, args.steps))
                for b in (16, 32)]
        rows.append(("eval forward, b 1000", functools.partial(eval_forward, name, 1000)))
        for what, fn in rows:
            t_nat, r_nat = with_pool(native, fn)
            t_fast, r_fast = with_pool(fast, fn)
            same = (all(torch.equal(a, b) for a, b in zip(r_nat, r_fast, strict=True))
                    if isinstance(r_nat, list) else torch.equal(r_nat, r_fast))
            print(f"{name:<12} {what:<22} {t_nat * 1e3:>10.2f} {t_fast * 1e3:>11.2f} "
                  f"{t_nat / t_fast:>7.2f}x  {same}", flush=True)
            if not same:
                raise SystemExit(f"{name}, {what}: the pools disagree")


if __name__ == "__main__":
    main()
