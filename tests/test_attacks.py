"""Adversarial clients: the attacks themselves, who attacks, and what CGSV makes of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Context, RecordDict
from torch.utils.data import DataLoader, TensorDataset

from fedprune import codec, wire
from fedprune.attacks import attack_update, attackers, flip_labels
from fedprune.data.noise import noise_plan
from fedprune.masks import prunable_names
from fedprune_flwr.clients.client_app import client_from_context
from fedprune_flwr.clients.numpy_client import FedPruneClient
from fedprune_flwr.strategies.fedavg import FedAvg
from fedprune_flwr.strategies.fedprune import FedPrune
from fedprune_flwr.strategies.results import RoundRecorder

from flower_helpers import FakeGrid, config, reply

RNG = np.random.default_rng(0)
W0 = {"w": RNG.standard_normal((4, 5)).astype(np.float32), "b": RNG.standard_normal(4).astype(np.float32),
      "count": np.array(7, np.int64)}
W1 = {"w": W0["w"] + 0.1 * RNG.standard_normal((4, 5)).astype(np.float32),
      "b": W0["b"] + 0.2, "count": np.array(8, np.int64)}


def test_sign_flip_and_scale_invert_and_amplify_the_update():
    flip = attack_update(W0, W1, "sign-flip")
    big = attack_update(W0, W1, "scale", scale=10.0)
    for k in ("w", "b"):
        np.testing.assert_allclose(flip[k] - W0[k], -(W1[k] - W0[k]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(big[k] - W0[k], 10 * (W1[k] - W0[k]), rtol=1e-5, atol=1e-5)
    assert flip["count"] == 8 and flip["w"].dtype == np.float32  # integer buffers pass through


def test_noise_attack_keeps_the_update_norm_and_the_mask():
    mask = {"w": RNG.random((4, 5)) < 0.4}
    w0 = {"w": np.where(mask["w"], W0["w"], 0).astype(np.float32), "b": W0["b"]}
    w1 = {"w": np.where(mask["w"], W1["w"], 0).astype(np.float32), "b": W1["b"]}
    out = attack_update(w0, w1, "noise", masks=mask, seed=3)
    for k in ("w", "b"):
        assert np.linalg.norm(out[k] - w0[k]) == pytest.approx(np.linalg.norm(w1[k] - w0[k]), rel=1e-4)
        assert not np.allclose(out[k], w1[k])
    assert np.all(out["w"][~mask["w"]] == 0)  # a sparse client stays sparse
    again = attack_update(w0, w1, "noise", masks=mask, seed=3)
    assert np.array_equal(again["w"], out["w"])  # seeded


def test_attackers_are_seeded_and_independent_of_the_noisy_clients():
    a = attackers(100, 0.2, seed=0)
    assert len(a) == 20 and a == attackers(100, 0.2, seed=0) and a != attackers(100, 0.2, seed=1)
    assert attackers(100, 0.0, seed=0) == frozenset()
    noisy = set(noise_plan(100, "symmetric", 0.2, 0.8, 0.8, seed=0).rates)
    assert noisy != set(a)
    assert np.array_equal(flip_labels(np.array([0, 3, 9]), 10), [9, 6, 0])


def _tiny_client(attack: str) -> FedPruneClient:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=g)
    data = DataLoader(TensorDataset(x, x[:, :3].argmax(1)), batch_size=16)
    return FedPruneClient(model, data, seed=5, attack=attack)


def test_a_sign_flipping_client_uploads_the_mirror_of_its_honest_model():
    honest, evil = _tiny_client("none"), _tiny_client("sign-flip")
    start = [p.copy() for p in honest.get_parameters({})]
    good, _, _ = honest.fit([p.copy() for p in start], {wire.SERVER_ROUND: 1})
    bad, _, _ = evil.fit([p.copy() for p in start], {wire.SERVER_ROUND: 1})
    for s, g, b in zip(start, good, bad, strict=True):
        np.testing.assert_allclose(b, 2 * s - g, atol=1e-5)
    with pytest.raises(ValueError, match="attack"):
        _tiny_client("label-flip")  # a data attack: client_from_context flips the labels


def test_label_flipping_clients_train_on_flipped_labels(data_dir):
    run = {"dataset": "mnist-mini", "data-dir": str(data_dir), "attack": "label-flip",
           "attack-fraction": 0.5, "seed": 0}
    bad = sorted(attackers(4, 0.5, seed=0))
    good = sorted(set(range(4)) - set(bad))

    def client(pid: int, cfg: dict) -> FedPruneClient:
        ctx = Context(run_id=1, node_id=pid, node_config={"partition-id": pid, "num-partitions": 4},
                      state=RecordDict(), run_config={})
        return client_from_context(ctx, cfg)

    for pid in bad:
        c, clean = client(pid, run), client(pid, {**run, "attack": "none"})
        assert c.metrics[wire.ATTACKER] == 1 and c.attack == "none"
        assert torch.equal(c.trainloader.y, 9 - clean.trainloader.y)
    assert client(good[0], run).metrics[wire.ATTACKER] == 0  # same keys for every client


def _fedprune(n_nodes: int) -> FedPrune:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    return FedPrune(recorder=RoundRecorder(None, {}, 10), initial_state=wire.state_to_numpy(m.state_dict()),
                    prunable=prunable_names(m), num_rounds=10, sparsity=0.8, seed=1, fraction_train=1.0,
                    min_train_clients=2, readjust_interval=100, lambda0=0.5)


def _reply(s: FedPrune, node: int, direction: np.ndarray | dict, attacker: bool,
           rnd: int = 1) -> object:
    state = s.sparse_state()
    out = {}
    for k, v in state.items():
        out[k] = (v + direction[k]).astype(np.float32)
        if k in s.M:
            out[k] = np.where(s.M[k], out[k], 0).astype(np.float32)
    metrics = {wire.NUM_EXAMPLES: 50, wire.TRAIN_LOSS: 1.0}
    if attacker:
        metrics[wire.ATTACKER] = 1
    return reply(node, codec.encode_state(out, {k: m.copy() for k, m in s.M.items()}), metrics,
                 rnd=rnd)


def test_cgsv_gives_a_sign_flipping_client_far_less_weight_than_data_size_would():
    s = _fedprune(4)
    grid = FakeGrid(4)
    rng = np.random.default_rng(0)
    true = {k: 0.05 * rng.standard_normal(v.shape) for k, v in s.sparse_state().items()}
    for rnd in (1, 2, 3):
        s.configure_train(rnd, ArrayRecord(), config(), grid)
        replies = []
        for i in range(4):
            noise = {k: 0.01 * rng.standard_normal(v.shape) for k, v in true.items()}
            d = {k: (-1 if i == 3 else 1) * (true[k] + noise[k]) for k in true}
            replies.append(_reply(s, 100 + i, d, attacker=i == 3, rnd=rnd))
        s.aggregate_train(rnd, replies)
    last = s.recorder.rounds[3]
    w = {int(c): v["weight"] for c, v in last["contributions"].items()}
    assert last["attacker_clients"] == [3]
    assert last["attacker_weight"] == pytest.approx(w[3])
    assert w[3] < 0.5 * min(w[0], w[1], w[2])  # data size alone would give it 0.25
    assert w[3] < 0.2


def test_fedavg_records_the_data_size_weight_of_attackers():
    rec = RoundRecorder(None, {}, 3)
    s, grid = FedAvg(recorder=rec, seed=7, fraction_train=1.0, min_train_clients=2), FakeGrid(3)
    arrays = {"w": np.zeros((2, 3), np.float32)}
    from flwr.app import Array
    s.configure_train(1, ArrayRecord({k: Array(v) for k, v in arrays.items()}), config(), grid)
    s.aggregate_train(1, [reply(100, arrays, {wire.NUM_EXAMPLES: 10}),
                          reply(101, arrays, {wire.NUM_EXAMPLES: 30, wire.ATTACKER: 1})])
    assert rec.rounds[1]["attacker_clients"] == [1]
    assert rec.rounds[1]["attacker_weight"] == pytest.approx(0.75)
