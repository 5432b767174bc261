import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedprune import wire
from fedprune_flwr.strategies.common import ClientDirectory
from fedprune_flwr.strategies.fedavg import FedAvg
from fedprune_flwr.strategies.results import RoundRecorder

from flower_helpers import FakeGrid, config, reply


def _strategy(n_nodes=8, **kw):
    rec = RoundRecorder(None, {}, 3)
    kw.setdefault("fraction_train", 1.0)  # every node is sent work, so every test reply counts
    return FedAvg(recorder=rec, seed=7, **kw), rec, FakeGrid(n_nodes)


def _arrays(v=0.0):
    return {"w": np.full((2, 3), v, np.float32), "b": np.full((3,), v, np.float32)}


def test_sampling_is_reproducible_by_client_id_and_without_replacement():
    s, _, grid = _strategy(10, fraction_train=0.3, min_train_clients=2)
    a = [m.metadata.dst_node_id for m in s.configure_train(4, ArrayRecord(), config(), grid)]
    b = [m.metadata.dst_node_id for m in s.configure_train(4, ArrayRecord(), config(), grid)]
    c = [m.metadata.dst_node_id for m in s.configure_train(5, ArrayRecord(), config(), grid)]
    assert a == b and len(a) == 3 == len(set(a)) and a != c
    assert grid.queries == 10  # each node asked its id once
    # another strategy with reversed node order picks the same *clients*
    d = ClientDirectory(seed=7)
    grid2 = FakeGrid(10)
    grid2.nodes.reverse()
    assert [n - 100 for n in d.sample(grid2, 4, 0.3, 2)] == [n - 100 for n in a]


def test_node_without_id_is_not_sampled():
    d = ClientDirectory(seed=0)
    grid = FakeGrid(4, silent=(2,))
    nodes = d.sample(grid, 1, 1.0, 1)
    assert sorted(n - 100 for n in nodes) == [0, 1, 3]


def test_aggregate_equals_weighted_reference():
    s, rec, grid = _strategy()
    s.configure_train(1, ArrayRecord({k: Array(v) for k, v in _arrays().items()}), config(), grid)
    vals, ns = [1.0, 2.0, 5.0], [10, 30, 60]
    replies = [reply(100 + i, _arrays(v), {wire.NUM_EXAMPLES: n, wire.TRAIN_LOSS: v})
               for i, (v, n) in enumerate(zip(vals, ns, strict=True))]
    arrays, metrics = s.aggregate_train(1, replies)
    ref = np.average(vals, weights=ns)
    assert np.allclose(arrays["w"].numpy(), ref) and arrays["w"].numpy().dtype == np.float32
    assert metrics[wire.TRAIN_LOSS] == ref
    assert rec.rounds[1]["clients"] == 3 and rec.rounds[1]["bytes_up"] == 3 * (6 + 3) * 4
    assert rec.rounds[1]["noisy_clients"] == [] and rec.rounds[1]["noisy_weight"] == 0.0


def test_noisy_and_attacking_clients_are_recorded_with_their_data_size_weight():
    s, rec, grid = _strategy()
    s.configure_train(1, ArrayRecord({k: Array(v) for k, v in _arrays().items()}), config(), grid)
    extra = [{wire.NOISE_RATE: 0.8}, {wire.NOISE_RATE: 0.0}, {wire.ATTACKER: 1}]
    replies = [reply(100 + i, _arrays(1.0), {wire.NUM_EXAMPLES: n, wire.TRAIN_LOSS: 0.5, **e})
               for i, (n, e) in enumerate(zip([10, 30, 60], extra, strict=True))]
    s.aggregate_train(1, replies)
    assert rec.rounds[1]["noisy_clients"] == [0] and rec.rounds[1]["noisy_weight"] == 0.1
    assert rec.rounds[1]["attacker_clients"] == [2] and rec.rounds[1]["attacker_weight"] == 0.6


def test_bad_replies_are_rejected_with_reasons_and_the_round_goes_on():
    s, rec, grid = _strategy()
    s.configure_train(1, ArrayRecord({k: Array(v) for k, v in _arrays().items()}), config(), grid)
    nan = _arrays(1.0)
    nan["w"][0, 0] = np.nan
    wrong = {"w": np.ones((3, 2), np.float32), "b": np.ones(3, np.float32)}
    replies = [
        reply(100, _arrays(4.0), {wire.NUM_EXAMPLES: 10}),
        reply(101, nan, {wire.NUM_EXAMPLES: 10}),
        reply(102, wrong, {wire.NUM_EXAMPLES: 10}),
        reply(103, _arrays(1.0), {}),
        reply(104, error="ValueError: boom"),
        reply(100, _arrays(9.0), {wire.NUM_EXAMPLES: 10}),
        reply(105, {"w": wrong["w"]}, {wire.NUM_EXAMPLES: 10}),
        reply(106, _arrays(1.0) | {"b": np.ones(3, np.float64)}, {wire.NUM_EXAMPLES: 10}),
    ]
    arrays, _ = s.aggregate_train(1, replies)
    assert np.allclose(arrays["w"].numpy(), 4.0)  # only the first reply survives
    rej = rec.rounds[1]["rejected"]
    assert "non-finite" in rej["1"] and "shape" in rej["2"] and "num-examples" in rej["3"]
    assert "boom" in rej["4"] and any("duplicate" in r for r in rej.values())
    assert any("keys differ" in r for r in rej.values()) and any("dtype" in r for r in rej.values())
    assert rec.rounds[1]["clients"] == 1


def test_no_valid_reply_leaves_model_unchanged():
    s, rec, grid = _strategy()
    s.configure_train(1, ArrayRecord({k: Array(v) for k, v in _arrays().items()}), config(), grid)
    assert s.aggregate_train(1, [reply(100, error="dead")]) == (None, None)


def test_every_clients_noise_rate_is_recorded_even_if_never_sampled():
    s, rec, grid = _strategy(6, fraction_train=0.1, min_train_clients=1)
    msgs = list(s.configure_train(1, ArrayRecord(), config(), grid))
    assert len(msgs) == 1
    assert rec.noise_rates == {str(i): 0.5 * (i % 2) for i in range(6)}


def test_too_few_valid_replies_skip_the_round():
    s, rec, grid = _strategy(min_replies=2)
    s.configure_train(1, ArrayRecord({k: Array(v) for k, v in _arrays().items()}), config(), grid)
    out = s.aggregate_train(1, [reply(100, _arrays(3.0), {wire.NUM_EXAMPLES: 10}),
                                reply(101, error="timeout")])
    assert out == (None, None) and rec.rounds[1]["skipped"] is True
    assert "timeout" in rec.rounds[1]["rejected"]["1"]


def test_oversized_payloads_are_rejected_and_the_model_is_built_from_the_rest():
    s, rec, grid = _strategy()
    s.configure_train(1, ArrayRecord({k: Array(v) for k, v in _arrays().items()}), config(), grid)
    huge = {"w": np.ones((2000, 2000), np.float32), "b": np.ones(3, np.float32)}  # 16 MB
    extra = _arrays(1.0) | {"smuggled": np.ones(1_000_000, np.float32)}
    replies = [
        reply(100, _arrays(2.0), {wire.NUM_EXAMPLES: 10}),
        reply(101, huge, {wire.NUM_EXAMPLES: 10}),
        reply(102, extra, {wire.NUM_EXAMPLES: 10}),
    ]
    arrays, _ = s.aggregate_train(1, replies)
    assert np.allclose(arrays["w"].numpy(), 2.0) and arrays["w"].numpy().shape == _arrays()["w"].shape
    rej = rec.rounds[1]["rejected"]
    assert "shape" in rej["1"] and "keys differ" in rej["2"]
    assert rec.rounds[1]["clients"] == 1


def test_no_node_reporting_its_id_is_a_clear_error_not_a_silent_empty_round():
    s, _, _ = _strategy(n_nodes=3)
    arrays = ArrayRecord({k: Array(v) for k, v in _arrays().items()})
    with pytest.raises(RuntimeError, match="none of the 3 nodes reported its client id.*no query"):
        s.configure_train(1, arrays, config(), FakeGrid(3, silent=(0, 1, 2)))


def test_batchnorm_scalar_buffers_keep_their_shape_on_the_wire():
    # FedAvg expects the ArrayRecord(state_dict) shapes; num_batches_tracked is 0-d
    import torch

    from fedprune_flwr.clients.numpy_client import FedPruneClient

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    expected = {k: (tuple(v.shape), np.dtype(v.numpy().dtype))
                for k, v in ArrayRecord(model.state_dict()).items()}
    assert expected["1.num_batches_tracked"][0] == ()
    params = FedPruneClient(model, [], []).get_parameters({})
    wire.check_dense(dict(zip(model.state_dict(), params, strict=True)), expected)


def test_fedavg_aggregates_a_batchnorm_model_through_flower_records():
    import torch

    from fedprune_flwr.clients.numpy_client import FedPruneClient

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    s, rec, grid = _strategy(n_nodes=2, fraction_train=1.0, min_train_clients=2)
    s.configure_train(1, ArrayRecord(model.state_dict()), config(), grid)
    params = FedPruneClient(model, [], []).get_parameters({})
    state = dict(zip(model.state_dict(), params, strict=True))
    out, _ = s.aggregate_train(1, [reply(100 + i, state, {wire.NUM_EXAMPLES: 5, wire.TRAIN_LOSS: 1.0})
                                   for i in range(2)])
    assert out["1.num_batches_tracked"].numpy().shape == () and rec.rounds[1]["rejected"] == {}
