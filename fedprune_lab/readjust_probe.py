"""What a readjustment costs: accuracy on readjustment rounds and the round after,
against the same round of a run with a fixed mask.

For each run (a folder of ``seed-*/results.json``) it prints, averaged over the seeds
it shares with the reference run (the static mask, same seeds, so the same clients
every round), the accuracy gain of each readjustment round (``alpha`` > 0: acc(t) -
acc(t-1)), the same gain in the reference, and the gap to the reference after the
round (acc(t+1) - ref(t+1)). A readjustment that costs nothing leaves the gain and the
gap where the reference has them.

    python -m fedprune_lab.readjust_probe docs/results/runs/scoreboard-mnist \\
        fedprune-static__pathological-2 fedprune__pathological-2 \\
        fedprune-server-readjust__pathological-2

Used for docs/results.md ("Where a readjustment is decided").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def seed_rounds(run: Path) -> dict[str, list[dict]]:
    """seed folder name -> the run's rounds (complete runs only: round 0 and every round)."""
    out = {}
    for f in sorted(run.glob("seed-*/results.json")):
        d = json.loads(f.read_text())
        if d.get("summary", {}).get("rounds_completed", 0) >= len(d["rounds"]) - 1 > 0:
            out[f.parent.name] = d["rounds"]
    return out


def readjust_rounds(rounds: list[dict]) -> list[int]:
    """The rounds whose alpha (readjustment fraction, or growth votes) was > 0."""
    return [r["round"] for r in rounds if (r.get("alpha") or 0) > 0]


def probe(run: dict[str, list[dict]], ref: dict[str, list[dict]]) -> list[tuple[int, float, float, float]]:
    """Per readjustment round t: (t, mean gain at t, the reference's mean gain at t, mean
    gap to the reference at t + 1), over the seeds both runs have."""
    seeds = sorted(set(run) & set(ref))
    if not seeds:
        raise ValueError("the run and the reference share no complete seed")
    acc = np.array([[r["accuracy"] for r in run[s]] for s in seeds])
    base = np.array([[r["accuracy"] for r in ref[s]] for s in seeds])
    out = []
    for t in readjust_rounds(run[seeds[0]]):
        if t < 1 or t + 1 >= acc.shape[1]:
            continue
        out.append((t, float(np.mean(acc[:, t] - acc[:, t - 1])),
                    float(np.mean(base[:, t] - base[:, t - 1])),
                    float(np.mean(acc[:, t + 1] - base[:, t + 1]))))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fedprune_lab.readjust_probe",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="a study's runs folder")
    ap.add_argument("reference", help="the fixed-mask run (e.g. fedprune-static__<point>)")
    ap.add_argument("runs", nargs="+", help="runs with a moving mask")
    args = ap.parse_args(argv)
    ref = seed_rounds(args.study / args.reference)
    for name in args.runs:
        rows = probe(seed_rounds(args.study / name), ref)
        print(f"{name} (against {args.reference}):")
        for t, gain, ref_gain, gap in rows:
            print(f"  round {t:3d}: gain {gain:+.3f} (fixed mask {ref_gain:+.3f}); "
                  f"round {t + 1} vs fixed mask {gap:+.3f}")


if __name__ == "__main__":
    main()
