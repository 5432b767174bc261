"""Does CGSV weighting favour clients whose classes the model has recently been given?

Reads the per-round client weights that FedPrune stores in results.json
(``contributions``), rebuilds each seed's partition to know the class distribution
of every client, and compares the weight of a client with the weight its classes
received over the previous K rounds. Prints, per run, the relative weight
(weight x clients in the round; 1.0 = an equal share) of the quarter of
client-rounds whose classes got the least recent weight against the quarter
whose classes got the most, how often each quarter was in the trusted half, and
the correlation over all client-rounds; and per round, how many classes the
trusted half holds between them and the entropy of the class weights the round
applied (log2 10 = 3.32 bits for ten equally weighted classes).

    python -m fedprune_lab.class_weight docs/results/runs/compare-mnist \\
        fedprune__pathological-2 fedprune-clip3-hist0.9__pathological-2 --window 5

Used for docs/results.md, (b). Needs the data set the runs used
(FEDPRUNE_DATA_DIR or --data-dir).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from fedprune.config import RunConfig
from fedprune.data.datasets import load_dataset
from fedprune.data.partition import cached_partition_indices


def class_mass(contributions: dict, shares: np.ndarray) -> np.ndarray:
    """A round's class weights: sum over its clients of weight x class distribution."""
    return sum(v["weight"] * shares[int(c)] for c, v in contributions.items())


def class_bias(rounds: list[dict], shares: np.ndarray, window: int) -> np.ndarray:
    """Rows (recent class weight, relative weight, trusted) per client-round after ``window``.

    ``shares[c]`` is client c's class distribution (rows sum to 1). A round gives
    class k the weight sum over its clients of weight x share of k (the class
    weights of a round sum to 1); a client's ``recent class weight`` is its class
    distribution dotted with the mean class weight of the previous ``window``
    rounds.
    """
    applied: list[np.ndarray] = []
    rows = []
    for r in rounds:
        con = r.get("contributions")
        if not con:
            continue
        mass = class_mass(con, shares)
        if len(applied) >= window:
            recent = np.mean(applied[-window:], axis=0)
            trusted = set(r.get("trusted_clients", []))
            for c, v in con.items():
                rows.append((float(shares[int(c)] @ recent),
                             v["weight"] * len(con), float(int(c) in trusted)))
        applied.append(mass)
    return np.array(rows).reshape(-1, 3)


def round_class_stats(rounds: list[dict], shares: np.ndarray) -> np.ndarray:
    """Rows (classes the trusted clients hold, entropy in bits of the round's class weights).

    A round's class weights (:func:`class_mass`) are normalised to 1; rounds without a
    trusted set give NaN in the first column.
    """
    rows = []
    for r in rounds:
        con = r.get("contributions")
        if not con:
            continue
        trusted = [int(c) for c in r.get("trusted_clients", [])]
        held = float((shares[trusted].sum(axis=0) > 0).sum()) if trusted else float("nan")
        mass = class_mass(con, shares)
        p = mass[mass > 0] / mass.sum()
        rows.append((held, float(-(p * np.log2(p)).sum())))
    return np.array(rows).reshape(-1, 2)


def class_shares(config: dict, num_partitions: int, data_dir: str) -> np.ndarray:
    """(clients, classes): each client's class distribution, its partition rebuilt."""
    cfg = RunConfig.from_mapping(config, allow_extra=True)
    data = load_dataset(cfg.dataset, data_dir)
    y = data.y_train.numpy()
    parts = cached_partition_indices(y, cfg.partition_spec(num_partitions), data.writers_train)
    counts = np.stack([np.bincount(y[p], minlength=data.num_classes) for p in parts])
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path, help="a study's folder of runs")
    p.add_argument("runs", nargs="+", help="run names inside it")
    p.add_argument("--window", type=int, default=5, help="rounds of class history (K)")
    p.add_argument("--clients", type=int, default=100, help="clients in the federation")
    p.add_argument("--data-dir", default=os.environ.get("FEDPRUNE_DATA_DIR", ""))
    args = p.parse_args(argv)
    print("| run | seeds | client-rounds | least recent weight: rel. weight, trusted "
          "| most recent weight: rel. weight, trusted | corr | classes the trusted hold "
          "| class-weight entropy (bits) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        rows, seeds, per_round = [], [], []
        for path in sorted((args.study / run).glob("seed-*/results.json")):
            res = json.loads(path.read_text())
            if not any(r.get("contributions") for r in res["rounds"]):
                raise SystemExit(f"{path} holds no per-client weights (a run restored from "
                                 "docs/results/studies keeps scalar metrics only): run its "
                                 "study again for them")
            shares = class_shares(res["config"], args.clients, args.data_dir)
            rows.append(class_bias(res["rounds"], shares, args.window))
            per_round.append(round_class_stats(res["rounds"], shares))
            seeds.append(res["config"]["seed"])
        if not rows:
            raise SystemExit(f"no results.json under {args.study / run}")
        a = np.concatenate(rows)
        b = np.concatenate(per_round)
        lo, hi = a[:, 0] <= np.quantile(a[:, 0], 0.25), a[:, 0] >= np.quantile(a[:, 0], 0.75)
        print(f"| {run} | {len(seeds)} | {len(a)} | {a[lo, 1].mean():.3f}, {a[lo, 2].mean():.2f} "
              f"| {a[hi, 1].mean():.3f}, {a[hi, 2].mean():.2f} "
              f"| {np.corrcoef(a[:, 0], a[:, 1])[0, 1]:+.3f} "
              f"| {np.nanmean(b[:, 0]):.2f} | {b[:, 1].mean():.3f} |")


if __name__ == "__main__":
    main()
