"""The client: one training plan per method, chosen by the train message; one client
per node, built once and handed to every message as a fresh build would be."""

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

from fedprune import wire
from fedprune_flwr.clients import client_app
from fedprune_flwr.clients.client_app import client_from_context, node_client
from fedprune_flwr.clients.plans import PLANS, plan_for


@pytest.mark.parametrize("config, plan", [
    ({}, "masked"),
    ({wire.DST_ALPHA: 0.1}, "masked"),
    ({wire.FEDBT_TRAIN: ["0.weight"]}, "partial"),
    ({wire.PERSONAL_PRUNE: "lotteryfl"}, "lotteryfl"),
    ({wire.PERSONAL_PRUNE: "subfedavg"}, "subfedavg"),
    ({wire.PERSONAL_PRUNE: "prunefl-initial"}, "prunefl-initial"),
])
def test_the_train_message_names_the_plan(config, plan):
    assert plan_for(config) == plan and plan in PLANS


def test_an_unknown_plan_and_a_partial_personal_prune_are_refused(data_dir):
    with pytest.raises(ValueError, match="unknown personal-prune 'typo'"):
        plan_for({wire.PERSONAL_PRUNE: "typo"})
    client = node_client(_ctx(0), {"dataset": "mnist-mini", "data-dir": str(data_dir)})
    params = client.get_parameters({})
    with pytest.raises(ValueError, match="does not combine"):
        client.fit(params, {wire.FEDBT_TRAIN: ["0.weight"], wire.PERSONAL_PRUNE: "lotteryfl"})


def _ctx(node: int, run_id: int = 7) -> Context:
    return Context(run_id=run_id, node_id=node,
                   node_config={"partition-id": node, "num-partitions": 4},
                   state=RecordDict(), run_config={})


def test_a_node_builds_its_client_once_and_a_kept_client_trains_like_a_fresh_one(data_dir):
    cfg = {"dataset": "mnist-mini", "data-dir": str(data_dir), "model": "mlp",
           "max-client-samples": 64, "seed": 3}
    first = node_client(_ctx(1), cfg)
    assert node_client(_ctx(1), cfg) is first  # the same node, the same run: kept
    assert node_client(_ctx(2), cfg) is not first  # another node: its own client
    assert node_client(_ctx(1), {**cfg, "lr": 0.5}) is not first  # another config
    start = [p.copy() for p in first.get_parameters({})]  # (views of the model otherwise)
    torch.manual_seed(0)
    mask = {"1.weight": (torch.rand(first.model.state_dict()["1.weight"].shape) < 0.3).float()}

    def fit(client, rnd):
        client.masks = {k: m.clone() for k, m in mask.items()}
        params, n, metrics = client.fit([p.copy() for p in start],
                                        {wire.SERVER_ROUND: rnd, wire.DST_ALPHA: 0.2, wire.LR: 0.05})
        return [p.copy() for p in params], n, metrics

    kept = node_client(_ctx(1), cfg)
    a = fit(kept, 1)
    kept = node_client(_ctx(1), cfg)  # the next message: masks cleared, loaders restarted
    assert kept is first and kept.masks == {}
    b = fit(kept, 2)
    fresh = client_from_context(_ctx(1), cfg)  # what a client built for that message does
    c = fit(fresh, 2)
    assert all(np.array_equal(x, y) for x, y in zip(b[0], c[0], strict=True))
    assert b[2] == c[2]
    # the restart is what makes it so: the same client again without it shuffles anew
    d = fit(kept, 2)
    assert not all(np.array_equal(x, y) for x, y in zip(c[0], d[0], strict=True))
    assert a[1] == b[1] == c[1]


def test_at_most_keep_clients_are_kept(data_dir, monkeypatch):
    monkeypatch.setattr(client_app, "KEEP_CLIENTS", 2)
    cfg = {"dataset": "mnist-mini", "data-dir": str(data_dir)}
    c0 = node_client(_ctx(0, run_id=11), cfg)
    node_client(_ctx(1, run_id=11), cfg)
    node_client(_ctx(2, run_id=11), cfg)  # evicts node 0, the least recently used
    assert node_client(_ctx(0, run_id=11), cfg) is not c0
    assert len(client_app._BUILT) <= 2
