"""The reply validation boundary's parts (strategies/replies.py, fedprune.wire)."""

import copy

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, MessageType

from fedprune import wire
from fedprune.config import RunConfig
from fedprune.data import load_dataset
from fedprune.data.loader import client_data
from fedprune.data.noise import noise_plan
from fedprune.masks import prunable_names
from fedprune_flwr.clients.client_app import fedprune_train, load_payload, reply_record
from fedprune_flwr.clients.numpy_client import FedPruneClient
from fedprune_flwr.strategies.fedavg import FedAvg
from fedprune_flwr.strategies.fedprune import FedPrune
from fedprune_flwr.strategies.flower_baselines import FlowerFedMedian
from fedprune_flwr.strategies.replies import received_bytes
from fedprune_flwr.strategies.results import RoundRecorder
from fedprune_flwr.strategies.server_app import partition_cap

from flower_helpers import FakeGrid, config, reply, set_task_identity


def test_npy_decoding_checks_the_data_against_its_metadata_before_allocating():
    a = Array(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(wire.decode_npy(a.data, a.dtype, a.shape), np.arange(6).reshape(2, 3))
    out = wire.decode_npy(a.data, a.dtype, a.shape)
    out[0, 0] = 9.0  # a writable copy, not a view of the message's bytes
    big = Array(np.ones(4, ">f4"))  # byte-swapped
    cases = [(b"", a.dtype, a.shape, "no data"), (a.data[:-1], a.dtype, a.shape, "needs 24"),
             (a.data + b"\0", a.dtype, a.shape, "needs 24"), (a.data, "float64", a.shape, "differs"),
             (a.data, "not-a-dtype", a.shape, "not a NumPy dtype"),
             (a.data, a.dtype, (2**30,), "shape"), (a.data, a.dtype, (-6,), "shape"),
             (b"garbage" * 20, a.dtype, a.shape, "not a valid .npy"),
             (big.data, big.dtype, big.shape, "not allowed")]
    for data, dtype, shape, why in cases:
        with pytest.raises(wire.InvalidUpdate, match=why):
            wire.decode_npy(data, dtype, shape)
    scalar = Array(np.asarray(3, np.int64).reshape(()))
    assert wire.decode_npy(scalar.data, scalar.dtype, scalar.shape).shape == ()


def test_metrics_must_be_finite_numbers_in_range_and_num_examples_capped():
    ok = wire.check_metrics({wire.TRAIN_LOSS: 0.5, wire.DST_MOVED: 3, wire.CLIENT_ID: 2.0, "x": 1})
    assert ok == {wire.TRAIN_LOSS: 0.5, wire.DST_MOVED: 3, wire.CLIENT_ID: 2, "x": 1}
    for bad in [{wire.TRAIN_LOSS: [1.0]}, {wire.NOISE_RATE: 1.5}, {wire.CLIENT_ID: float("nan")},
                {wire.DST_MOVED: float("inf")}, {wire.DST_MOVED: 2.5}, {wire.ATTACKER: 2},
                {"x": [1, 2]}, {"x": float("nan")}]:
        with pytest.raises(wire.InvalidUpdate):
            wire.check_metrics(bad)
    assert wire.check_num_examples(40, cap=40) == 40 and wire.check_num_examples(40.0) == 40
    for bad in [float("inf"), float("nan"), 1e300, 2**62, 0, -3, 2.5, True, [4], None]:
        with pytest.raises(wire.InvalidUpdate):
            wire.check_num_examples(bad, cap=10**6)


def test_uploaded_bytes_never_exceed_what_arrived():
    honest = reply(100, {"w": np.ones((2, 3), np.float32)}, {wire.NUM_EXAMPLES: 1})
    assert received_bytes(honest) == 24  # element count x item size, as results count it
    lie = reply(100, {}, {wire.NUM_EXAMPLES: 1})
    arr = Array(np.ones(3, np.float32))
    lie.content[wire.ARRAYS]["w"] = Array(dtype="float32", shape=(2**30,), stype=arr.stype,
                                          data=arr.data)
    assert received_bytes(lie) == len(arr.data)  # not 4.3 GB


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_the_num_examples_cap_is_the_largest_client_training_set(partitioner):
    cfg = RunConfig.from_mapping({"dataset": "mnist-mini", "partitioner": partitioner,
                                  "dirichlet-alpha": 0.3, "seed": 1})
    data = load_dataset("mnist-mini")
    plan = noise_plan(6, "none", 0.0, 0.0, 0.0, 1)
    sizes = [client_data(data, cfg.partition_spec(6), c, test_fraction=cfg.test_fraction,
                         noise=plan, batch_size=32, eval_batch_size=100, seed=1).num_train
             for c in range(6)]
    assert partition_cap(cfg, data)(6) == max(sizes)


def _fedprune():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    s = FedPrune(recorder=RoundRecorder(None, {}, 4), initial_state=wire.state_to_numpy(m.state_dict()),
                 prunable=prunable_names(m), num_rounds=4, sparsity=0.5, fraction_train=1.0,
                 min_train_clients=2)
    return s, m


def test_a_malformed_client_reply_is_refused_for_its_claimed_size_and_its_shapes():
    s, model = _fedprune()
    msgs = list(s.configure_train(1, ArrayRecord(), config(), FakeGrid(2)))
    data = torch.utils.data.TensorDataset(torch.randn(16, 8), torch.randint(0, 3, (16,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    replies = []
    for msg, attack in zip(msgs, ["none", "malformed"], strict=True):
        client = FedPruneClient(model, loader, loader, attack=attack, metrics={})
        params, n, metrics = client.fit(load_payload(msg.content[wire.ARRAYS], client),
                                        dict(msg.content[wire.CONFIG]))
        content = reply_record(client, params, metrics, n)
        replies.append(reply(msg.metadata.dst_node_id, {k: v.numpy() for k, v in
                                                        content[wire.ARRAYS].items()},
                             dict(content[wire.METRICS])))
    uncapped = copy.deepcopy(s)
    s.max_num_examples = 16
    s.aggregate_train(1, replies)
    assert s.recorder.rounds[1]["clients"] == 1
    assert "exceeds the cap 16" in s.recorder.rounds[1]["rejected"]["1"]
    uncapped.aggregate_train(1, replies)  # no cap: its tensor one element too long is refused
    assert uncapped.recorder.rounds[1]["clients"] == 1
    assert "0.bias: shape (7,), expected (6,)" in uncapped.recorder.rounds[1]["rejected"]["1"]


@pytest.mark.parametrize("flower", [False, True])
def test_unusable_evaluation_replies_are_dropped_not_fatal(flower):
    s = (FlowerFedMedian(recorder=RoundRecorder(None, {}, 2), fraction_evaluate=1.0,
                         min_available_nodes=1) if flower
         else FedAvg(recorder=RoundRecorder(None, {}, 2), fraction_evaluate=1.0))
    good = {wire.NUM_EXAMPLES: 10, "accuracy": 0.5, "loss": 1.0}
    replies = [reply(100, metrics=good, mtype=MessageType.EVALUATE),
               reply(101, metrics={**good, "accuracy": [0.9]}, mtype=MessageType.EVALUATE),
               reply(102, metrics={**good, wire.NUM_EXAMPLES: float("inf")}, mtype=MessageType.EVALUATE),
               reply(103, metrics={**good, "accuracy": 7.0}, mtype=MessageType.EVALUATE),
               reply(104, metrics={**good, "extra": 1.0}, mtype=MessageType.EVALUATE)]
    out = s.aggregate_evaluate(1, replies)
    assert out["accuracy"] == pytest.approx(0.5) and s.recorder.rounds[1]["evaluated_clients"] == (
        1 if flower else 2)


def test_a_query_reply_with_a_bad_client_id_leaves_that_node_unsampled():
    class Grid(FakeGrid):
        def send_and_receive(self, messages, timeout=None):
            out = super().send_and_receive(messages, timeout)
            for r in out:
                bad = {101: float("nan"), 102: [1, 2]}.get(r.metadata.src_node_id)
                if bad is not None:
                    r.content[wire.METRICS][wire.CLIENT_ID] = bad
            return out

    s, _ = _fedprune()
    msgs = list(s.configure_train(1, ArrayRecord(), config(), Grid(4)))
    assert sorted(m.metadata.dst_node_id for m in msgs) == [100, 103]


def test_nodes_without_a_query_handler_are_known_by_node_id_until_a_reply_names_them():
    """Another app's ClientApp answers training with fedprune_train and has no query
    handler: its nodes are sampled by their Flower node id, and each takes the client-id
    its first valid train reply reports, unless another node holds that id."""
    class Grid(FakeGrid):  # nodes 100-102 have no query handler; 103 is fedprune's (id 3)
        def send_and_receive(self, messages, timeout=None):
            out = super().send_and_receive(messages, timeout)
            return [reply(r.metadata.src_node_id, mtype=MessageType.QUERY,
                          error="No query function registered with name 'default'")
                    if r.metadata.src_node_id < 103 else r for r in out]

    s, model = _fedprune()
    msgs = list(s.configure_train(1, ArrayRecord(), config(), Grid(4)))
    assert sorted(m.metadata.dst_node_id for m in msgs) == [100, 101, 102, 103]
    assert s.directory.client_of == {100: 100, 101: 101, 102: 102, 103: 3}
    data = torch.utils.data.TensorDataset(torch.randn(16, 8), torch.randint(0, 3, (16,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    ids = {100: 0, 101: 3, 102: None, 103: 3}  # 101 claims 103's id; 102 states none
    set_task_identity()
    replies = [fedprune_train(m, copy.deepcopy(model), loader, client_id=ids[m.metadata.dst_node_id])
               for m in msgs]
    s.aggregate_train(1, replies)
    assert s.recorder.rounds[1]["clients"] == 4 and not s.recorder.rounds[1].get("rejected")
    assert s.directory.client_of == {100: 0, 101: 101, 102: 102, 103: 3}
    assert s.directory.by_node_id == {101, 102}
    assert sorted(s.recorder.rounds[1]["contributions"]) == ["0", "101", "102", "3"]
    # a node with a checked id still may not report another one
    msgs = list(s.configure_train(2, ArrayRecord(), config(), Grid(4)))
    lie = next(m for m in msgs if m.metadata.dst_node_id == 100)
    s.aggregate_train(2, [fedprune_train(lie, copy.deepcopy(model), loader, client_id=7)])
    assert "registered as client 0" in s.recorder.rounds[2]["rejected"]["0"]
