"""Reduced precision: float16 values on the wire (codec-dtype), mixed-precision local
training (amp), and the per-node device."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, RecordDict

from fedprune import codec, wire
from fedprune.config import ConfigError, RunConfig
from fedprune.masks import prunable_names
from fedprune.training import TrainConfig, train
from fedprune_flwr.clients.client_app import node_device, reply_record
from fedprune_flwr.clients.numpy_client import FedPruneClient
from fedprune_flwr.strategies.fedavg import FedAvg
from fedprune_flwr.strategies.fedprune import FedPrune
from fedprune_flwr.strategies.results import RoundRecorder
from fedprune_flwr.strategies.server_app import run

from flower_helpers import FakeGrid, config, reply


def _batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))


def test_float16_values_halve_the_value_bytes_and_round_trip_within_half_precision():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 50)).astype(np.float32)
    m = rng.random((64, 50)) < 0.2
    full, half = codec.encode(w, m), codec.encode(w, m, "float16")
    assert half.values.dtype == np.float16 and half.values.nbytes * 2 == full.values.nbytes
    assert np.array_equal(half.mask, full.mask)  # the mask encoding is the same
    out, mask = codec.decode(half, w.shape)
    assert out.dtype == np.float32 and np.array_equal(mask, m)
    assert np.array_equal(out[~m], np.zeros(int((~m).sum()), np.float32))
    assert np.allclose(out[m], w[m], rtol=1e-3, atol=1e-4)
    assert not np.array_equal(out[m], w[m])  # lossy: it really is float16


def test_encode_state_casts_only_float32_tensors_and_decode_widens_them():
    state = {"w": np.ones((4, 4), np.float32), "b": np.full(4, 0.1, np.float32),
             "count": np.array(7, np.int64)}
    arrays = codec.encode_state(state, {"w": np.eye(4, dtype=bool)}, "float16")
    assert arrays["w#values"].dtype == np.float16 and arrays["b"].dtype == np.float16
    assert arrays["count"].dtype == np.int64
    back, masks = codec.decode_state(arrays, {k: v.shape for k, v in state.items()})
    assert back["b"].dtype == np.float32 and back["count"].dtype == np.int64
    assert np.allclose(back["b"], 0.1, rtol=1e-3) and np.array_equal(masks["w"], np.eye(4, dtype=bool))
    with pytest.raises(ValueError, match="value dtype"):
        codec.encode_state(state, {}, "bfloat16")


def test_fedprune_sends_float16_and_accepts_float16_replies_but_rejects_overflow():
    m = _model()
    rec = RoundRecorder(None, {}, 5)
    s = FedPrune(recorder=rec, initial_state=wire.state_to_numpy(m.state_dict()),
                 prunable=prunable_names(m), num_rounds=5, sparsity=0.8, seed=1,
                 fraction_train=1.0, min_train_clients=2)
    s.value_dtype = "float16"
    msgs = list(s.configure_train(1, ArrayRecord(), config(), FakeGrid(3)))
    arrays = msgs[0].content[wire.ARRAYS]
    assert arrays["0.weight#values"].numpy().dtype == np.float16
    assert arrays["0.bias"].numpy().dtype == np.float16
    assert msgs[0].content[wire.CONFIG][wire.VALUE_DTYPE] == "float16"

    def client(node, scale=1.0):
        state = {k: (v + 0.1) * scale for k, v in s.sparse_state().items()}
        return reply(node, codec.encode_state(state, s.M, "float16"),
                     {wire.NUM_EXAMPLES: 10, wire.TRAIN_LOSS: 1.0})

    before = {k: v.copy() for k, v in s.W.items()}
    s.aggregate_train(1, [client(100), client(101), client(102, scale=1e6)])  # 1e6 > 65504
    assert "non-finite" in rec.rounds[1]["rejected"]["2"]
    assert {k: v.dtype for k, v in s.W.items()} == {k: v.dtype for k, v in before.items()}
    for k, mk in s.M.items():  # moved by about +0.1 where both honest clients trained
        held = mk & (before[k] != 0)
        assert np.allclose(s.W[k][held], before[k][held] + 0.1, atol=2e-3)


def test_dense_fedavg_downloads_float16_and_widens_replies():
    rec = RoundRecorder(None, {}, 5)
    s = FedAvg(recorder=rec, fraction_train=1.0, min_train_clients=2, seed=0)
    s.value_dtype = "float16"
    arrays = ArrayRecord({"w": Array(np.ones((3, 3), np.float32)),
                          "n": Array(np.array([2], np.int64))})
    msgs = list(s.configure_train(1, arrays, config(), FakeGrid(2)))
    sent = msgs[0].content[wire.ARRAYS]
    assert sent["w"].numpy().dtype == np.float16 and sent["n"].numpy().dtype == np.int64
    r = [reply(100 + i, {"w": np.full((3, 3), i, np.float16), "n": np.array([2], np.int64)},
               {wire.NUM_EXAMPLES: 10, wire.TRAIN_LOSS: 1.0}) for i in range(2)]
    out, _ = s.aggregate_train(1, r)
    assert out["w"].numpy().dtype == np.float32 and np.allclose(out["w"].numpy(), 0.5)


def test_client_replies_in_the_dtype_the_server_asked_for():
    m = _model()
    x, y = torch.randn(32, 20), torch.randint(0, 5, (32,))
    client = FedPruneClient(m, _batches(x, y, 16), _batches(x, y, 16))
    params = [v.numpy() for v in m.state_dict().values()]
    content: RecordDict = reply_record(client, params, {}, 32, "float16")
    assert {a.numpy().dtype for a in content[wire.ARRAYS].values()} == {np.dtype(np.float16)}


def test_mixed_precision_training_on_cpu_learns_and_keeps_masks():
    torch.manual_seed(0)
    x = torch.randn(256, 20)
    y = (x[:, 0] > 0).long()
    m = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 2))
    masks = {"0.weight": (torch.rand(30, 20) < 0.3).float()}
    res = train(m, _batches(x, y, 32), TrainConfig(epochs=5, lr=0.1, amp=True), masks=masks,
                seed=0)
    assert res.last_loss < 0.8 * res.first_loss
    w = m.state_dict()["0.weight"]
    assert w.dtype == torch.float32 and torch.all(w[masks["0.weight"] == 0] == 0)


def test_amp_off_is_bit_identical_to_the_default():
    torch.manual_seed(0)
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    a, b = _model(), _model()
    train(a, _batches(x, y, 16), TrainConfig(epochs=1), seed=3)
    train(b, _batches(x, y, 16), TrainConfig(epochs=1, amp=False), seed=3)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_node_config_device_overrides_the_run_config():
    cfg = RunConfig.from_mapping({"device": "auto"})
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2,
                                                    "device": "cpu"}, state=RecordDict(),
                  run_config={})
    assert node_device(ctx, cfg) == "cpu"
    ctx.node_config["device"] = "tpu"
    with pytest.raises(ValueError, match="node-config device"):
        node_device(ctx, cfg)
    del ctx.node_config["device"]
    assert node_device(ctx, cfg) == "auto"


def test_float16_with_a_flower_strategy_is_a_config_error(tmp_path):
    cfg = RunConfig.from_mapping({"strategy": "fedmedian", "codec-dtype": "float16",
                                  "results-dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="codec-dtype"):
        run(None, cfg)  # refused before any round: the grid is never used
    with pytest.raises(ConfigError, match="codec-dtype"):
        RunConfig.from_mapping({"codec-dtype": "int8"})
