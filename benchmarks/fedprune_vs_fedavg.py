"""FedPrune (80% sparsity) vs dense FedAvg on real MNIST, clean and with noisy clients.

    python benchmarks/fedprune_vs_fedavg.py [--rounds 30] [--out benchmarks/results/fedprune_vs_fedavg]

Setting: MNIST (``$FEDPRUNE_DATA_DIR`` or ``../shared/data``), Dirichlet(0.3)
label skew over 100 clients, 10 sampled per round, 2 local epochs, the FedDST
CNN; the same rounds for both methods. The noisy variant gives 40% of the
clients 80% symmetric label noise. Each run is a separate in-process Flower
simulation (subprocess, fresh Ray) writing ``<out>/<run>/results.json``; runs
whose complete results exist with the same run-config are skipped, so an
interrupted benchmark resumes; results made with another run-config (a default
changed since) are kept as ``results.stale.json`` and run again. The table at
the end is read from those files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import _env  # noqa: F401  (loopback Ray, private FLWR_HOME)

ROOT = Path(__file__).resolve().parents[1]
NOISE = {"noise-type": "symmetric", "noise-fraction": 0.4, "noise-rate-min": 0.8,
         "noise-rate-max": 0.8}
RUNS = {
    "fedavg": {"strategy": "fedavg"},
    "fedprune": {"strategy": "fedprune"},
    "fedavg-noisy": {"strategy": "fedavg", **NOISE},
    "fedprune-noisy": {"strategy": "fedprune", **NOISE},
}


def base(rounds: int, data_dir: str) -> dict:
    return {"dataset": "mnist", "data-dir": data_dir, "partitioner": "dirichlet",
            "dirichlet-alpha": 0.3, "num-server-rounds": rounds, "fraction-train": 0.1,
            "min-train-clients": 10, "local-epochs": 2, "lr": 0.01, "batch-size": 32,
            "sparsity": 0.8, "eval-batch-size": 2000, "seed": 0}


def run_one(name: str, overrides: dict, out: Path) -> None:
    code = (
        "import sys, json; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/benchmarks']\n"
        "import _env\n"
        "from fedprune_lab.simulation import simulate\n"
        "simulate(100, json.loads(sys.argv[2]), sys.argv[3])\n"
    )
    print(f"== {name}: running ({json.dumps(overrides)})", flush=True)
    subprocess.run([sys.executable, "-c", code, str(ROOT), json.dumps(overrides), str(out)],
                   check=True)


def mb_to_reach(rounds: list[dict], target: float) -> float | None:
    """Cumulative upload MB when the accuracy first reaches ``target``."""
    up = 0
    for r in rounds:
        up += r["bytes_up"]
        if r["accuracy"] is not None and r["accuracy"] >= target:
            return up / 1e6
    return None


def accuracy_within(rounds: list[dict], budget_mb: float) -> float:
    """Best accuracy reached with at most ``budget_mb`` MB uploaded."""
    up, best = 0, 0.0
    for r in rounds:
        up += r["bytes_up"]
        if up / 1e6 > budget_mb + 1e-9:
            break
        best = max(best, r["accuracy"] or 0.0)
    return best


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def summarise(out: Path) -> None:
    res = {n: json.loads((out / n / "results.json").read_text())
           for n in RUNS if (out / n / "results.json").exists()}
    print(f"\n{'run':<16} {'rounds':>6} {'final acc':>9} {'best acc':>8} {'dense acc':>9} "
          f"{'up MB':>8} {'down MB':>8} {'MB->95%':>8} {'MB->97%':>8} {'noisy w':>8}")
    for name, r in res.items():
        s, rounds = r["summary"], r["rounds"]
        noisy = [x["noisy_weight"] for x in rounds if x.get("noisy_clients")]
        print(f"{name:<16} {s['rounds_completed']:>6} {s['final_accuracy']:>9.4f} "
              f"{s['best_accuracy']:>8.4f} {_fmt(rounds[-1].get('dense_accuracy'), '.4f'):>9} "
              f"{s['total_bytes_up'] / 1e6:>8.2f} {s['total_bytes_down'] / 1e6:>8.2f} "
              f"{_fmt(mb_to_reach(rounds, 0.95), '.1f'):>8} {_fmt(mb_to_reach(rounds, 0.97), '.1f'):>8} "
              f"{_fmt(sum(noisy) / len(noisy) if noisy else None, '.3f'):>8}")
    for clean, sparse in (("fedavg", "fedprune"), ("fedavg-noisy", "fedprune-noisy")):
        if clean in res and sparse in res:
            budget = res[sparse]["summary"]["total_bytes_up"] / 1e6
            print(f"at {sparse}'s total upload ({budget:.1f} MB): {clean} best accuracy "
                  f"{accuracy_within(res[clean]['rounds'], budget):.4f}, {sparse} "
                  f"{accuracy_within(res[sparse]['rounds'], budget):.4f}")
    for name in ("fedprune-noisy",):
        if name in res:
            rounds = res[name]["rounds"][1:]
            share = [len(x["noisy_clients"]) / x["clients"] for x in rounds if x["clients"]]
            noisy = [x["noisy_weight"] for x in rounds if x.get("noisy_clients")]
            if share and noisy:
                print(f"{name}: noisy clients were {sum(share) / len(share):.3f} of the sampled "
                      f"clients per round on average and got {sum(noisy) / len(noisy):.3f} of the "
                      f"aggregation weight in the rounds they took part in")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fedprune_vs_fedavg")
    p.add_argument("--only", nargs="*", default=list(RUNS))
    args = p.parse_args()
    from fedprune_lab.study import is_complete, overrides_drift  # after _env: it imports Flower

    data_dir = os.environ.get("FEDPRUNE_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    out = args.out.resolve()
    for name in args.only:
        target, overrides = out / name, {**base(args.rounds, data_dir), **RUNS[name]}
        old = target / "results.json"
        if old.exists():
            drift = overrides_drift(old, overrides)
            if not drift and is_complete(old, args.rounds):
                print(f"== {name}: done, skipped")
                continue
            if drift:  # made with another config (e.g. a default changed since): kept aside
                print(f"== {name}: stored results differ in {', '.join(drift)}; kept as "
                      "results.stale.json", flush=True)
                old.replace(target / "results.stale.json")
            else:  # an interrupted run starts over (a new run refuses to write over it)
                old.unlink()
        run_one(name, overrides, target)
    summarise(out)


if __name__ == "__main__":
    main()
