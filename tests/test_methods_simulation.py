"""Every method and ablation in conf/ runs 2 rounds as a Flower ServerApp and ClientApps.

They run in-process (``local_grid.py``): these tests check what each method sends
and learns, and the Ray transport is covered by ``test_simulation.py`` and
``test_fedprune_simulation.py``, which would cost 10-15 s more per run here.
"""

import pytest

from fedprune_lab.experiments import load_experiment

from conftest import ROOT
from local_grid import simulate_local

pytestmark = pytest.mark.integration

SMALL = {"num-server-rounds": 2, "local-epochs": 1, "fraction-train": 0.75, "seed": 5}
DENSE_BYTES = 261_840 * 4
FIXED_SPARSE = {"fedprune", "feddst", "static-magnitude", "static-random"}
DENSE = {"fedavg", "flower-fedavg", "fedavgm", "fedprox"}
CONFS = sorted(p.stem for p in (ROOT / "conf").glob("*.yaml")
               if p.stem not in ("feddst-paper-mnist", "dirichlet-noisy-mnist"))


@pytest.mark.parametrize("name", CONFS)
def test_two_rounds(name, tmp_path):
    exp = load_experiment(ROOT / "conf" / f"{name}.yaml", SMALL)
    res = simulate_local(4, exp.overrides, tmp_path)
    rounds = res["rounds"]
    method = exp.overrides["strategy"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert res["config"]["strategy"] == method
    for r in rounds[1:]:
        assert r["rejected"] == {} and r["bytes_up"] > 0 and r["clients"] >= 1
    assert rounds[2]["accuracy"] > rounds[0]["accuracy"] + 0.2
    up = [r["bytes_up"] / r["clients"] for r in rounds[1:]]  # per client
    if method in DENSE:
        assert up == [DENSE_BYTES, DENSE_BYTES] and rounds[1]["clients"] == 3
    elif method in FIXED_SPARSE:
        assert max(up) < 0.25 * DENSE_BYTES and rounds[1]["clients"] == 3
        assert rounds[2]["density"] == pytest.approx(0.2, abs=0.003)
    elif method == "small-dense":
        assert up[0] == up[1] < 0.22 * DENSE_BYTES
    elif method == "prunefl":
        # round 1: initial pruning, one client trains the dense model and prunes it to
        # the budgets (10 epochs, 30% per step) before it uploads; then sparse
        assert rounds[1]["clients"] == 1 and up[0] < 0.25 * DENSE_BYTES
        assert up[1] < 0.25 * DENSE_BYTES and rounds[2]["density"] == pytest.approx(0.2, abs=0.003)
    elif method in ("lotteryfl", "subfedavg"):
        # clients start dense: full masks cost their 2-byte header (4 prunable tensors)
        assert rounds[1]["bytes_down"] == 3 * (DENSE_BYTES + 2 * 4)
        assert rounds[2]["client_accuracy_mean"] > 0.2  # personalised evaluation ran
        if method == "subfedavg":  # prunes after local training: the upload shrinks at once
            assert up[0] < 0.85 * DENSE_BYTES
    elif method == "fedmp":
        assert up[0] < 0.15 * DENSE_BYTES  # the bandit tries its sparsest arm first
        assert set(rounds[1]["fedmp_arms"]) and up[1] > up[0]
    else:
        pytest.fail(f"no expectation for {method}")


def test_feddst_paper_setting_runs(tmp_path, data_dir):
    # the paper's split and protocol; fewer rounds and epochs to fit a test
    exp = load_experiment(ROOT / "conf" / "feddst-paper-mnist.yaml",
                          {"num-server-rounds": 2, "local-epochs": 2, "data-dir": str(data_dir)})
    res = simulate_local(exp.num_supernodes, exp.overrides, tmp_path)
    first, last = res["rounds"][0], res["rounds"][-1]
    assert last["clients"] == 20 and last["evaluated_clients"] == 20
    assert last["bytes_up"] < 20 * 0.25 * DENSE_BYTES and last["density"] == pytest.approx(0.2, abs=0.003)
    assert 0.0 < last["client_accuracy_mean"] <= 1.0 and last["accuracy"] > first["accuracy"]


def test_server_reference_trains_on_root_data_and_scores_sign_flippers_down(tmp_path):
    # 2 of 4 clients sign-flip their updates: half of every round. CGSV against the
    # server's own update on 100 root examples gives them phi < 0 from round 1 on
    over = {"strategy": "fedprune", "num-server-rounds": 2, "local-epochs": 1, "seed": 4,
            "fraction-train": 1.0, "cgsv-reference": "server", "cgsv-root-samples": 100,
            "attack": "sign-flip", "attack-fraction": 0.5}
    rounds = simulate_local(4, over, tmp_path)["rounds"]
    for r in rounds[1:]:
        bad = set(map(str, r["attacker_clients"]))
        assert len(bad) == 2 and r["clients"] == 4
        phis = {c: v["phi"] for c, v in r["contributions"].items()}
        assert max(phis[c] for c in bad) < 0 < min(v for c, v in phis.items() if c not in bad)
        assert r["attacker_weight"] < 0.6 * r["lambda_t"] + 0.01  # their data share at most
    assert rounds[2]["accuracy"] > rounds[0]["accuracy"] + 0.2
