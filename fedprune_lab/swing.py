"""How much a run's accuracy swings from round to round, and what is left at the end.

For each run folder (its ``seed-*/results.json``; a comma pools folders), mean +- std
over seeds of: last-5 accuracy, the mean absolute change of accuracy from one round to
the next over the last 15 rounds, the largest such drop, and the restored dense
model's last-5 accuracy. Reads scalar round metrics only, so archived runs
(docs/results/studies) serve. Used for docs/results.md ("Round averaging"):

    python -m fedprune_lab.swing docs/results/runs/compare-mnist/fedprune__pathological-2 \\
        docs/results/runs/scoreboard-mnist/fedprune__pathological-2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fedprune_lab.archive import restore_default
from fedprune_lab.weight_stats import run_rows

COLUMNS = ("last-5 acc", "mean |change|, last 15 rounds", "largest drop, last 15",
           "dense last-5")
WINDOW = 15


def seed_row(rounds: list[dict]) -> tuple[float, float, float, float]:
    acc = np.array([r["accuracy"] for r in rounds if r.get("round", 1) > 0], float)
    if len(acc) < 2:
        raise ValueError("fewer than two rounds")
    d = np.diff(acc[-WINDOW:])
    dense = [r["dense_accuracy"] for r in rounds[-5:] if r.get("dense_accuracy") is not None]
    return (float(acc[-5:].mean()), float(np.abs(d).mean()), float(max(0.0, -d.min())),
            float(np.mean(dense)) if dense else float("nan"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders; DIR,DIR pools their seeds in one row")
    args = p.parse_args(argv)
    print("| run | seeds | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for spec in args.runs:
        folders = [Path(f) for f in spec.split(",")]
        for f in folders:
            restore_default(f)
        rows = np.array(run_rows(folders, seed_row))
        cells = [f"{m:.4f} +- {s:.4f}" for m, s in zip(rows.mean(0), rows.std(0), strict=True)]
        print(f"| {spec} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
