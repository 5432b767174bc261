"""Every run with a results-dir leaves its final model (and FedPrune's restored dense one)."""

import json

import pytest
import torch

from fedprune.config import RunConfig
from fedprune.data import load_dataset
from fedprune.data.loader import test_loader as eval_loader
from fedprune.models import model_from_config
from fedprune.training import evaluate
from fedprune_flwr.strategies.server_app import FINAL_DENSE_MODEL, FINAL_MODEL

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("strategy", ["fedprune", "fedavg"])
def test_the_saved_final_model_scores_what_the_last_round_recorded(strategy, tmp_path):
    from local_grid import simulate_local

    over = {"strategy": strategy, "dataset": "mnist-mini", "model": "mlp",
            "num-server-rounds": 2, "local-epochs": 1, "max-client-samples": 100,
            "fraction-train": 1.0, "seed": 2, "eval-samples": 500}
    res = simulate_local(3, over, tmp_path)
    last = res["rounds"][-1]
    cfg = RunConfig.from_mapping(over)
    data = load_dataset("mnist-mini")
    loader = eval_loader(data, cfg.eval_batch_size, cfg.eval_samples, cfg.seed)
    files = {FINAL_MODEL: "accuracy"}
    if strategy == "fedprune":
        files[FINAL_DENSE_MODEL] = "dense_accuracy"
    else:
        assert not (tmp_path / FINAL_DENSE_MODEL).exists()
    for name, key in files.items():
        model = model_from_config(cfg, data.input_shape, data.num_classes)
        model.load_state_dict(torch.load(tmp_path / name))
        _, acc, _ = evaluate(model, loader)
        assert acc == pytest.approx(last[key], abs=1e-9), name
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["rounds_completed"] == 2
