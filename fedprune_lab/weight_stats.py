"""How FedPrune's aggregation weights behaved over a run, per seed and pooled.

Reads the per-round ``contributions`` (client weights) and ``clipped_clients``
that FedPrune stores in results.json and prints, for each run, mean +- std over
seeds of: last-5 accuracy, clients clipped per round, the effective share of
clients (1 / sum of squared weights, over the clients of the round: 1.0 when
all weights are equal), the largest client weight, the mean round-to-round
accuracy change (absolute), the number of rounds in which accuracy fell by more
than 10 points from the round before, and the lowest accuracy of the last 10 rounds.

    python -m fedprune_lab.weight_stats \\
        docs/results/runs/compare-mnist/fedprune__pathological-2,docs/results/runs/history-mnist/fedprune

A comma joins folders whose seeds are pooled into one row (a run whose seeds
live in two studies). Used for docs/results.md ("Adversarial clients").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedprune_lab.report import _ms, last_mean

COLUMNS = ("last-5 acc", "clipped / round", "effective share", "max weight",
           "mean |acc change|", "drops > 10 pts", "lowest of last 10")


def seed_stats(rounds: list[dict]) -> tuple[float, ...]:
    """The :data:`COLUMNS` of one seed's rounds (those that aggregated client weights)."""
    rs = [r for r in rounds if r.get("contributions")]
    if len(rs) < 2:
        raise ValueError("fewer than two rounds with client weights (a run restored from "
                         "docs/results/studies keeps no per-client weights: run its study "
                         "again for them)")
    acc = np.array([r["accuracy"] for r in rs], float)
    w = [np.array([c["weight"] for c in r["contributions"].values()], float) for r in rs]
    return (last_mean(rounds),
            float(np.mean([len(r.get("clipped_clients", [])) for r in rs])),
            float(np.mean([1.0 / np.sum(x * x) / len(x) for x in w])),
            float(np.mean([x.max() for x in w])),
            float(np.mean(np.abs(np.diff(acc)))),
            float(np.sum(np.diff(acc) < -0.10)),
            float(acc[-10:].min()))


def run_rows(folders: list[Path], stats: Callable[[list[dict]], tuple[float, ...]] = seed_stats
             ) -> list[tuple[float, ...]]:
    """One ``stats`` row (default :func:`seed_stats`) per results.json under ``folders``'
    seed-* folders."""
    paths = [p for f in folders for p in sorted(f.glob("seed-*/results.json"))]
    if not paths:
        raise SystemExit(f"no results.json under {', '.join(map(str, folders))}")
    return [stats(json.loads(p.read_text())["rounds"]) for p in paths]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders; DIR,DIR pools their seeds in one row")
    args = p.parse_args(argv)
    print("| run | seeds | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for spec in args.runs:
        folders = [Path(s) for s in spec.split(",")]
        rows = run_rows(folders)
        cells = [_ms(col, ".3f") for col in zip(*rows, strict=True)]
        print(f"| {folders[0].name} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
