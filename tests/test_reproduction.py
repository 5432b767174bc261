"""Six methods (and FedPrune's candidate CGSV rule) re-run in-process must reproduce
their recorded rounds exactly.

Refactors and hardening must not change what a method computes. Each case runs
three rounds of one method on the embedded data (in-process grid, no Ray) and
compares every recorded round metric (torch on one thread) with
``tests/data/reproduction.json``: integers, names and client lists exactly,
floats to a relative 1e-6. Re-run on the machine that recorded them, the
numbers are bit-identical; another CPU or torch build moves the last digits
(the centralized loss over 2,000 test images by about 1e-8), while any change
to what a method computes moves them by orders of magnitude more. Timings are
left out.

Re-record (only when a change is *meant* to alter results, and say so in the
commit): ``python tests/test_reproduction.py --record [CASE ...]`` (only the named
cases; all without names).
"""

from __future__ import annotations

import json
import math
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
    # the candidate rule: CGSV weighs within the classes each client pushes
    "fedprune-classes": {"strategy": "fedprune", "cgsv-rule": "classes"},
    "feddst": {"strategy": "feddst"},
    "static-magnitude": {"strategy": "static-magnitude"},
    "prunefl": {"strategy": "prunefl", "prunefl-initial-epochs": 1, "reconfig-interval": 2},
    "lotteryfl": {"strategy": "lotteryfl", "lottery-threshold": 0.0},
    "fedbt": {"strategy": "fedbt"},
}
# timings, and bytes on the wire: those hold the run's random node ids
TIMING = {"wall_s", "aggregate_s", "wire_bytes_up", "wire_bytes_down"}
RTOL = 1e-6  # floats: another machine's last digits, never a change of method
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
        assert _same(got, want), f"{name} round {want['round']} differs: {got} != {want}"


def _same(got, want) -> bool:
    """Equal, floats to RTOL (recursively through dicts and lists)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(
            _same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            _same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(got, want, rel_tol=RTOL, abs_tol=1e-12)
    return type(got) is type(want) and got == want


def test_the_comparison_tolerates_last_digits_only():
    row = {"round": 1, "loss": 1.9412783813476562, "clients": [1, 3], "rejected": {}}
    assert _same({**row, "loss": 1.9412784423828124}, row)  # another CPU's last digits
    assert not _same({**row, "loss": 1.9413}, row)
    assert not _same({**row, "clients": [1, 4]}, row)
    assert not _same({k: v for k, v in row.items() if k != "rejected"}, row)


if __name__ == "__main__":  # python tests/test_reproduction.py --record [CASE ...]
    if sys.argv[1:2] != ["--record"] or not set(sys.argv[2:]) <= set(CASES):
        raise SystemExit(__doc__)
    sys.path.insert(0, str(HERE))
    import conftest  # noqa: F401  (the test environment: Ray and Flower on loopback)

    out = json.loads(RECORD.read_text()) if RECORD.exists() and sys.argv[2:] else {}
    for case in sys.argv[2:] or sorted(CASES):
        with tempfile.TemporaryDirectory() as d:
            out[case] = _run(case, Path(d))
        print(case, [r["accuracy"] for r in out[case]])
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(dict(sorted(out.items())), indent=1) + "\n")
