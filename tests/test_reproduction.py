"""Six methods re-run in-process must reproduce their recorded rounds exactly.

Refactors and hardening must not change what a method computes. Each case runs
three rounds of one method on the embedded data (in-process grid, no Ray) and
compares every recorded round metric, at full float precision (torch on one
thread), with
``tests/data/reproduction.json``; the centralized loss over 2,000 test images
moves with any bit of the model. Timings are left out.

Re-record (only when a change is *meant* to alter results, and say so in the
commit): ``python tests/test_reproduction.py --record``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RECORD = HERE / "data" / "reproduction.json"
BASE = {"dataset": "mnist-mini", "model": "mlp", "num-server-rounds": 3, "local-epochs": 1,
        "fraction-train": 0.5, "min-train-clients": 3, "seed": 5, "max-client-samples": 150,
        "lr": 0.05, "readjust-interval": 1, "alpha0": 0.3}
CASES = {
    "fedprune": {"strategy": "fedprune"},
    "feddst": {"strategy": "feddst"},
    "static-magnitude": {"strategy": "static-magnitude"},
    "prunefl": {"strategy": "prunefl", "prunefl-initial-epochs": 1, "reconfig-interval": 2},
    "lotteryfl": {"strategy": "lotteryfl", "lottery-threshold": 0.0},
    "fedbt": {"strategy": "fedbt"},
}
TIMING = {"wall_s", "aggregate_s"}
NODES = 6


def _run(name: str, out: Path) -> list[dict]:
    import torch

    from local_grid import simulate_local

    # float sums depend on torch's intra-op thread count: one thread on every machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = simulate_local(NODES, {**BASE, **CASES[name]}, out)
    finally:
        torch.set_num_threads(before)
    return [{k: v for k, v in r.items() if k not in TIMING} for r in res["rounds"]]


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_method_reproduces_its_recorded_rounds(name, tmp_path):
    recorded = json.loads(RECORD.read_text())[name]
    rounds = json.loads(json.dumps(_run(name, tmp_path)))  # the same JSON round trip
    assert len(rounds) == len(recorded) == BASE["num-server-rounds"] + 1
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"]  # a run that learned
    for got, want in zip(rounds, recorded, strict=True):
        assert got == want, f"{name} round {want['round']} differs"


if __name__ == "__main__":  # python tests/test_reproduction.py --record
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(__doc__)
    sys.path.insert(0, str(HERE))
    import conftest  # noqa: F401  (the test environment: Ray and Flower on loopback)

    out = {}
    for case in sorted(CASES):
        with tempfile.TemporaryDirectory() as d:
            out[case] = _run(case, Path(d))
        print(case, [r["accuracy"] for r in out[case]])
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(out, indent=1) + "\n")
