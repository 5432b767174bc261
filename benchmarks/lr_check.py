"""A small learning-rate check per model: centralized training for a fixed number of
steps at each learning rate of a grid, with the model's own optimizer
(``optimizer = "auto"``), printed side by side.

It picks the order of magnitude of a model's ``lr`` before a federated study
spends hours on it; it is not a tuning of the federated run (local steps, client
drift and sparsity all move the best value), so a study still states its lr.

    python benchmarks/lr_check.py --model gpt-char --dataset shakespeare \
        --lrs 3e-4 1e-3 3e-3 1e-2 --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from fedprune.config import RunConfig, resolved_optimizer
from fedprune.data import load_dataset
from fedprune.data.loader import TensorLoader, seeded_subset
from fedprune.data.loader import test_loader as central_test_loader
from fedprune.models import model_from_config
from fedprune.training import evaluate, train, train_config_of


def check(model: str, dataset: str, lrs: list[float], steps: int, batch: int, seed: int,
          optimizer: str, eval_samples: int) -> list[dict[str, float]]:
    """Train ``model`` for ``steps`` batches at each lr; the test loss and accuracy of each."""
    data = load_dataset(dataset)
    rows = []
    for lr in lrs:
        cfg = RunConfig.from_mapping({"model": model, "dataset": dataset, "lr": lr,
                                      "optimizer": optimizer, "seed": seed, "local-epochs": 1})
        net = model_from_config(cfg, data.input_shape, data.num_classes)
        keep = seeded_subset(len(data.y_train), steps * batch, seed)
        loader = TensorLoader(data.x_train[keep], data.y_train[keep], data.mean, data.std, batch,
                              shuffle=True, seed=seed)
        t0 = time.perf_counter()
        res = train(net, loader, dataclasses.replace(train_config_of(cfg), epochs=1), seed=seed)
        secs = time.perf_counter() - t0
        loss, acc, _ = evaluate(net, central_test_loader(data, 500, eval_samples, seed))
        rows.append({"lr": lr, "train_loss_last": res.last_loss, "test_loss": loss,
                     "test_acc": acc, "seconds": secs})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--lrs", type=float, nargs="+", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="auto")
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    opt = resolved_optimizer(a.optimizer, a.model)
    print(f"{a.model} on {a.dataset}, {opt}, {a.steps} steps of {a.batch_size}, seed {a.seed}")
    print("| lr | last-epoch train loss | test loss | test accuracy | seconds |")
    print("|---|---|---|---|---|")
    for r in check(a.model, a.dataset, a.lrs, a.steps, a.batch_size, a.seed, a.optimizer,
                   a.eval_samples):
        print(f"| {r['lr']:g} | {r['train_loss_last']:.3f} | {r['test_loss']:.3f} | "
              f"{r['test_acc']:.3f} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
