"""End-to-end FedPrune through Flower's Simulation Engine, and the plug-in use."""

import json

import pytest
from flwr.simulation import run_simulation

from fedprune_lab.simulation import BACKEND, simulate

pytestmark = pytest.mark.integration

DENSE_MODEL_BYTES = 261_840 * 4


OVER = {"strategy": "fedprune", "num-server-rounds": 4, "local-epochs": 1,
        "fraction-train": 1.0, "seed": 3, "sparsity": 0.8, "readjust-interval": 1,
        "readjust-end": 4, "alpha0": 0.3}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return simulate(4, OVER, tmp_path_factory.mktemp("fedprune"))


def test_density_stays_at_target_every_round(run):
    for r in run["rounds"]:
        assert r["density"] == pytest.approx(0.2, abs=2e-3)


def test_global_mask_moves_on_readjustment_rounds_only(run):
    rounds = run["rounds"][1:]
    for r in rounds:
        if r["alpha"] > 0:
            assert r["mask_changes"] > 0 and r["dst_moved"] > 0
        else:
            assert r["mask_changes"] == 0 and r["dst_moved"] == 0
    assert [r["alpha"] > 0 for r in rounds] == [True, True, True, False]


def test_accuracy_rises_and_both_models_are_evaluated(run):
    first, last = run["rounds"][0], run["rounds"][-1]
    assert last["accuracy"] > first["accuracy"] + 0.3
    assert last["dense_accuracy"] is not None and last["dense_accuracy"] > 0.5
    assert set(last["contributions"]) == {"0", "1", "2", "3"}


def test_upload_is_close_to_density_of_dense_fedavg(run):
    for r in run["rounds"][1:]:
        ratio = r["bytes_up"] / (4 * DENSE_MODEL_BYTES)
        # 20% of the values, plus the Rice-coded masks and the dense biases
        assert 0.2 < ratio < 0.23
        assert r["bytes_down"] / (4 * DENSE_MODEL_BYTES) < 0.23


def test_same_seed_same_run(run, tmp_path):
    again = simulate(4, OVER, tmp_path / "again")
    keys = ("accuracy", "dense_accuracy", "mask_changes", "bytes_up", "contributions")
    assert [[r.get(k) for k in keys] for r in again["rounds"]] == \
        [[r.get(k) for k in keys] for r in run["rounds"]]


def test_plugin_app_uses_strategy_and_client_helper(tmp_path):
    import plugin_app

    run_simulation(server_app=plugin_app.server_app(str(tmp_path)),
                   client_app=plugin_app.client_app, num_supernodes=3, backend_config=BACKEND)
    res = json.loads((tmp_path / "results.json").read_text())
    rounds = res["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and rounds[2]["clients"] == 3
    assert rounds[2]["accuracy"] > rounds[0]["accuracy"]
    assert rounds[2]["density"] == pytest.approx(0.3, abs=0.02)
    # the restored dense model was scored by the same evaluate_fn
    assert all(r.get("dense_accuracy") is not None for r in rounds[1:])
