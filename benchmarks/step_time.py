"""Masked (sparse) local training step time vs dense, on the same model.

    python benchmarks/step_time.py [--models cnn-mnist cnn-cifar10 resnet18] [--steps 20]

fedprune trains sparse sub-networks with dense PyTorch kernels and masks
(weights, gradients and momentum outside the mask are zeroed every step), so
a masked step costs the dense step plus the masking; the savings are in the
bytes sent and in the FLOPs a sparse kernel would need, which the last
columns give (:mod:`fedprune.flops`). Timed: ``fedprune.training.train`` over
``--steps`` batches of 32 random inputs, best of 3, after one warm-up run.
"""

from __future__ import annotations

import argparse
import time

import torch

from fedprune.flops import layer_macs, training_flops
from fedprune.masks import layer_budgets, magnitude_masks, prunable_names
from fedprune.models import build_model
from fedprune.training import TrainConfig, train

SHAPES = {"cnn-mnist": (1, 28, 28), "mlp": (1, 28, 28), "vit": (1, 28, 28),
          "cnn-cifar10": (3, 32, 32), "resnet18": (3, 32, 32)}


def time_steps(model: torch.nn.Module, batches: list, masks: dict | None, repeat: int = 3) -> float:
    """Best seconds per step over ``repeat`` runs of ``train`` on ``batches``."""
    cfg = TrainConfig(epochs=1, lr=0.01)
    train(model, batches[:2], cfg, masks=masks, seed=0)  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        train(model, batches, cfg, masks=masks, seed=0)
        best = min(best, (time.perf_counter() - t) / len(batches))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cnn-mnist", "cnn-cifar10", "resnet18"])
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch 32, {args.steps} steps")
    print(f"{'model':<12} {'params':>10} {'sparsity':>8} {'dense ms':>9} {'masked ms':>9} "
          f"{'time ratio':>10} {'FLOP ratio':>10}")
    for name in args.models:
        shape = SHAPES.get(name, (1, 28, 28))
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randn(32, *shape, generator=g), torch.randint(0, 10, (32,), generator=g))
                   for _ in range(args.steps)]
        model = build_model(name, shape, 10, seed=0)
        n = sum(p.numel() for p in model.parameters())
        macs = layer_macs(model, shape)
        dense = time_steps(model, batches, None)
        for s in args.sparsity:
            model = build_model(name, shape, 10, seed=0)
            params = dict(model.named_parameters())
            names = prunable_names(model)
            budgets = layer_budgets({k: tuple(params[k].shape) for k in names}, 1 - s, "erk")
            masks = magnitude_masks({k: params[k] for k in names}, budgets)
            masked = time_steps(model, batches, masks)
            ratio = training_flops(macs, 1, masks) / training_flops(macs, 1)
            print(f"{name:<12} {n:>10,} {s:>8.2f} {dense * 1e3:>9.1f} {masked * 1e3:>9.1f} "
                  f"{masked / dense:>10.2f} {ratio:>10.3f}", flush=True)


if __name__ == "__main__":
    main()
