"""The in-process grid the method tests run on behaves as Flower's simulation does."""

import pytest

from faulty_app import RAISES, WRONG_SHAPES, faulty_client
from local_grid import simulate_local

pytestmark = pytest.mark.integration

BASE = {"dataset": "mnist-mini", "model": "mlp", "num-server-rounds": 2, "local-epochs": 1,
        "fraction-train": 0.5, "min-train-clients": 3, "min-replies": 3, "seed": 1,
        "strategy": "fedavg", "max-client-samples": 200}


def test_a_raising_client_becomes_an_error_reply_and_the_run_goes_on(tmp_path):
    rounds = simulate_local(6, {**BASE, "round-retries": 3}, tmp_path, faulty_client)["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["clients"] == 3 for r in rounds[1:])
    rejected = {int(c): why for r in rounds[1:] for c, why in r["rejected"].items()}
    assert rejected, "seed 1 samples a faulty client; expected a rejection"
    assert set(rejected) <= {RAISES, WRONG_SHAPES}
    if RAISES in rejected:  # the exception's text travels in the error reply
        assert "injected failure" in rejected[RAISES]


def test_same_seed_same_run(tmp_path):
    over = {**BASE, "strategy": "fedprune", "sparsity": 0.8, "readjust-interval": 1,
            "readjust-end": 4, "alpha0": 0.3, "lr": 0.05}
    a = simulate_local(4, over, tmp_path / "a")["rounds"]
    b = simulate_local(4, over, tmp_path / "b")["rounds"]
    keys = ("accuracy", "loss", "bytes_up", "mask_changes", "contributions")
    assert [[r.get(k) for k in keys] for r in a] == [[r.get(k) for k in keys] for r in b]
    # the mask moved and the model learned: the comparison is not between two idle runs
    assert all(r["mask_changes"] > 0 for r in a[1:]) and a[-1]["accuracy"] > a[0]["accuracy"] + 0.1
