"""Scale: a FedPrune simulation with many clients; server peak memory and time per round.

    python benchmarks/scale.py [--clients 100 1000] [--per-round 10 100] [--rounds 3]

For every (clients N, clients per round K) pair, one Flower simulation (Ray,
in-process ServerApp) of FedPrune on real MNIST runs in a child process:
an IID split over N clients (60 examples each at N = 1,000; a Dirichlet(0.3)
split of MNIST over 1,000 clients cannot give every client the partitioner's
minimum of 10 examples), each training 1 epoch on at most
``--samples`` of its examples, ``--rounds`` rounds, 80% sparsity. The child
reports its peak resident memory (the ServerApp and the Ray driver live in it;
the ClientApps run in Ray's worker processes, which are not counted), the
server's own state (the dense model W, the global mask M, the contribution
scores, the client directory) and the wall time per round, the first round
apart (it includes asking every node for its client id).

The server's state is O(model + clients), not O(clients x model): it keeps
one dense model and a few numbers per client ever seen. A round holds the
replies of its K clients (sparse: about a fifth of the dense model each),
which Flower delivers together. So peak memory should grow with K, not N.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _env  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


def one(n: int, k: int, rounds: int, samples: int) -> dict:
    """Child process: run the simulation, return the measurements."""
    sys.path.insert(0, str(ROOT))
    from fedprune_flwr.strategies import fedprune as fp
    from fedprune_lab.simulation import simulate

    seen: dict = {}
    orig = fp.FedPruneCore.aggregate_train

    def spy(self, server_round, replies):  # measure the strategy's own state as it runs
        out = orig(self, server_round, replies)
        seen["state_bytes"] = (sum(v.nbytes for v in self.W.values())
                               + sum(v.nbytes for v in self.M.values()))
        seen["clients_known"] = len(self.directory.client_of)
        seen["scores"] = len(self.contributions.scores)
        return out

    fp.FedPruneCore.aggregate_train = spy
    overrides = {
        "strategy": "fedprune", "dataset": "mnist", "partitioner": "iid",
        "num-server-rounds": rounds, "fraction-train": k / n,
        "min-train-clients": k, "local-epochs": 1, "batch-size": 16, "lr": 0.05,
        "max-client-samples": samples, "eval-samples": 1000,
        "sparsity": 0.8, "seed": 0,
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        res = simulate(n, overrides, Path(tmp))
    wall = time.monotonic() - t0
    rounds_ = [r for r in res["rounds"] if r["round"] >= 1]
    return {
        "clients": n, "per_round": k, "rounds": len(rounds_), "wall_s": round(wall, 1),
        "first_round_s": rounds_[0]["wall_s"],
        "round_s": round(sum(r["wall_s"] for r in rounds_[1:]) / max(1, len(rounds_) - 1), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB, 1),
        "server_state_mb": round(seen.get("state_bytes", 0) / MB, 2),
        "clients_known": seen.get("clients_known"), "final_accuracy": res["summary"]["final_accuracy"],
        "up_mb_per_round": round(res["summary"]["total_bytes_up"] / MB / len(rounds_), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--per-round", type=int, nargs="+", default=[10, 100])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=32, help="max training examples per client")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    p.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(*args.one, args.rounds, args.samples)), flush=True)
        return
    rows = []
    print(f"{'clients':>8} {'per round':>9} {'first round s':>13} {'round s':>8} "
          f"{'peak RSS MB':>11} {'W+M MB':>7} {'known':>6} {'up MB/round':>11} {'acc':>6}", flush=True)
    for n in args.clients:
        for k in args.per_round:
            if k > n:
                continue
            cmd = [sys.executable, __file__, "--one", str(n), str(k), "--rounds", str(args.rounds),
                   "--samples", str(args.samples)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                print(f"{n:>8} {k:>9}  FAILED (exit {out.returncode}):\n{out.stderr[-2000:]}")
                continue
            r = json.loads(line[0][7:])
            rows.append(r)
            print(f"{n:>8} {k:>9} {r['first_round_s']:>13.1f} {r['round_s']:>8.2f} "
                  f"{r['peak_rss_mb']:>11.1f} {r['server_state_mb']:>7.2f} {r['clients_known']:>6} "
                  f"{r['up_mb_per_round']:>11.2f} {r['final_accuracy']:>6.3f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
