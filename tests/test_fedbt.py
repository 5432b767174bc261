"""FedBT-style partial training: layer groups, schedules, frozen training, FLOPs, the strategies."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedprune import codec, wire
from fedprune.config import ConfigError, RunConfig
from fedprune.data import load_dataset
from fedprune.data.loader import TensorLoader
from fedprune.flops import forward_order, layer_macs, partial_training_flops, training_flops
from fedprune.masks import layer_budgets, magnitude_masks, prunable_names
from fedprune.models import TextEncoder, build_model
from fedprune.partial import (
    PartialSchedule,
    frozen_except,
    layer_groups,
    progressive_index,
)
from fedprune.training import TrainConfig, train
from fedprune_flwr.clients.client_app import reply_record
from fedprune_flwr.clients.numpy_client import FedPruneClient
from fedprune_flwr.strategies.fedbt import FedBT, FedBTPrune
from fedprune_flwr.strategies.results import RoundRecorder

from flower_helpers import FakeGrid, config, reply

VOCAB, SEQ = 200, 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices on a busy two-core machine: one intra-op thread is faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _bert(seed=0, width=1.0):
    return build_model("bert-tiny", (SEQ,), 4, seed=seed, width=width, vocab_size=VOCAB)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                               torch.nn.ReLU(), torch.nn.Linear(8, 2))


# -- layer groups ----------------------------------------------------------------------


@pytest.mark.parametrize("name, shape, blocks", [("vit", (1, 28, 28), 4), ("bert-tiny", (SEQ,), 2)])
def test_transformers_group_into_stem_blocks_and_head(name, shape, blocks):
    kw = {"vocab_size": VOCAB} if name == "bert-tiny" else {}
    m = build_model(name, shape, 4, **kw)
    g = layer_groups(m)
    assert g.names == ("stem", *(f"blocks.{i}" for i in range(blocks)), "head")
    assert g.blocks == tuple(range(1, blocks + 1))
    keys = [k for t in g.tensors for k in t]
    assert keys == list(m.state_dict())  # every tensor once, in state_dict order
    stem, head = set(g.tensors[0]), set(g.tensors[-1])
    assert "pos_embed" in stem and ({"tok_embed.weight"} <= stem or {"cls_token"} <= stem)
    assert head == {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    assert all(k.startswith("blocks.1.") for k in g.tensors[2])


def test_other_models_group_by_module_prefix():
    g = layer_groups(build_model("cnn-mnist", (1, 28, 28), 10))
    assert g.names == ("conv1", "conv2", "fcs.0", "fcs.1") and g.blocks == (0, 1, 2)
    # a norm layer of 1-D tensors joins the layer before it; the last layer is the head
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 3))
    g = layer_groups(net)
    assert g.names == ("0", "4") and g.blocks == (0,)
    assert set(g.tensors[0]) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                 "1.running_var", "1.num_batches_tracked"}


# -- schedules -------------------------------------------------------------------------


def test_progressive_index_follows_fedbt():
    # FedBT's example: I = 10 -> 0,0,0,0,0,1,1,1,... (half the rounds, then half the rest, ...)
    assert [progressive_index(i, 10) for i in range(10)] == [0, 0, 0, 0, 0, 1, 1, 1, 2, 3]
    for T in (1, 2, 3, 7, 16, 50):
        seq = [progressive_index(i, T) for i in range(T)]
        assert seq[: -(-T // 2)] == [0] * (-(-T // 2))  # the first ceil(T/2) rounds at 0
        assert all(b - a in (0, 1) for a, b in zip(seq, seq[1:], strict=False))  # up by steps of 1


def _deep_encoder(depth=12):
    return TextEncoder(4, 10, 2, dim=8, depth=depth, heads=2, hidden=8)


def test_finetune_schedule_is_fedbts_cyclic_decreasing():
    g = layer_groups(_deep_encoder())
    s = PartialSchedule(g, "finetune", 10)  # c = ceil(12/2) = 6, FedBT's c for 12 layers
    lowest = []
    for t in range(1, 11):
        chosen = s.groups_for(t)
        blocks = [g.names[c] for c in chosen if c in g.blocks]
        lowest.append(int(blocks[0].split(".")[1]))
        assert blocks == [f"blocks.{i}" for i in range(lowest[-1], 12)]  # [l, top]
        assert g.names[chosen[-1]] == "head" and g.names[0] not in [g.names[c] for c in chosen]
    assert lowest == [11, 10, 9, 8, 7, 6, 11, 10, 9, 8]  # FedBT's example, I = 10


def test_pretrain_schedule_moves_a_window_up_and_is_deterministic():
    g = layer_groups(_deep_encoder())
    s = PartialSchedule(g, "pretrain", 10)
    firsts = [g.names[s.groups_for(t)[0]] for t in range(1, 11)]
    assert firsts == [f"blocks.{i}" for i in (0, 0, 0, 0, 0, 1, 1, 1, 2, 3)]
    assert all(len(s.groups_for(t)) == 2 for t in range(1, 11))  # one block + the head
    wide = PartialSchedule(g, "pretrain", 10, layers=3, top=2)
    last = wide.groups_for(10)  # window capped at the top; head and last block always
    assert [g.names[c] for c in last] == ["blocks.3", "blocks.4", "blocks.5", "blocks.11", "head"]
    assert [wide.tensors_for(t) for t in range(1, 11)] == [
        PartialSchedule(g, "pretrain", 10, layers=3, top=2).tensors_for(t) for t in range(1, 11)]
    # a short run on bert-tiny: round 1 the bottom block, round 2 the top one
    b = layer_groups(_bert())
    two = PartialSchedule(b, "pretrain", 2)
    assert [[b.names[c] for c in two.groups_for(t)] for t in (1, 2)] == [
        ["blocks.0", "head"], ["blocks.1", "head"]]


def test_bad_schedules_and_config_values_are_clear_errors():
    g = layer_groups(_bert())
    with pytest.raises(ValueError, match="mode must be one of"):
        PartialSchedule(g, "sideways", 3)
    with pytest.raises(ValueError, match=r"layers must be in \[0, 2\]"):
        PartialSchedule(g, "pretrain", 3, layers=3)
    with pytest.raises(ValueError, match="top must be in"):
        PartialSchedule(g, "finetune", 3, top=5)
    with pytest.raises(ConfigError, match="fedbt-mode"):
        RunConfig.from_mapping({"fedbt-mode": "sideways"})
    with pytest.raises(ConfigError, match="fedbt-layers"):
        RunConfig.from_mapping({"fedbt-layers": -1})
    with pytest.raises(ConfigError, match="fedbt-top"):
        RunConfig.from_mapping({"fedbt-top": -2})
    from fedprune_flwr.strategies.server_app import build_strategy

    cfg = RunConfig.from_mapping({"strategy": "fedbt", "model": "bert-tiny",
                                  "dataset": "tokens-synthetic", "fedbt-layers": 5})
    with pytest.raises(ConfigError, match="fedbt-layers=5.*bert-tiny.*2 blocks"):
        build_strategy(cfg, RoundRecorder(None, {}, 3), _bert())


# -- client side -----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_no_backward_below_the_lowest_trained_layer():
    m = _mlp()
    calls = {0: 0, 2: 0, 4: 0}
    for i in calls:
        m[i].register_full_backward_hook(lambda mod, gi, go, i=i: calls.__setitem__(i, calls[i] + 1))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with frozen_except(m, ["4.weight", "4.bias"]) as frozen:
        assert frozen == ["0.weight", "0.bias", "2.weight", "2.bias"]
        train(m, [(x, y)] * 3, TrainConfig(epochs=1, lr=0.1, weight_decay=1e-3))
    assert calls[4] == 3 and calls[0] == calls[2] == 0  # autograd stopped at the trained layer
    after = m.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in frozen)
    assert not torch.equal(after["4.weight"], before["4.weight"])
    assert all(p.requires_grad for p in m.parameters())  # restored
    with pytest.raises(ValueError, match="lacks"), frozen_except(m, ["nope.weight"]):
        pass


def _token_loader(n=48, batch=16):
    data = load_dataset("tokens-synthetic")
    return TensorLoader(data.x_train[:n], data.y_train[:n], data.mean, data.std, batch, shuffle=True,
                        seed=0)


@pytest.mark.parametrize("sparse", [False, True])
def test_client_trains_and_uploads_only_the_scheduled_tensors(sparse):
    model = _bert(width=0.5)
    client = FedPruneClient(model, _token_loader(), input_shape=(SEQ,), seed=1)
    groups = layer_groups(model)
    trained = PartialSchedule(groups, "pretrain", 4).tensors_for(1)  # blocks.0 + head
    keys = list(model.state_dict())
    params = [p.copy() for p in client.get_parameters({})]  # (views of the model otherwise)
    if sparse:  # the client receives the sparse model: W on the global mask
        p = dict(model.named_parameters())
        names = prunable_names(model)
        budgets = layer_budgets({k: tuple(p[k].shape) for k in names}, 0.3, "erk")
        masks = magnitude_masks({k: p[k] for k in names}, budgets)
        params = [v * masks[k].numpy() if k in masks else v for k, v in zip(keys, params, strict=True)]
        client.masks = {k: m.float() for k, m in masks.items()}
        masks_before = {k: m.clone() for k, m in client.masks.items()}
    cfg = {wire.FEDBT_TRAIN: trained, wire.SERVER_ROUND: 1, wire.LR: 0.05, wire.LOCAL_EPOCHS: 1}
    if sparse:
        cfg[wire.DST_ALPHA] = 0.3
    out, n, metrics = client.fit(params, cfg)
    before, after = dict(zip(keys, params, strict=True)), dict(zip(keys, out, strict=True))
    frozen = [k for k in keys if k not in trained]
    assert all(np.array_equal(after[k], before[k]) for k in frozen)
    assert all(not np.array_equal(after[k], before[k]) for k in trained if k.endswith("weight"))
    assert metrics[wire.TRAIN_FLOPS] < metrics[wire.DENSE_FLOPS]
    arrays = reply_record(client, out, metrics, n)[wire.ARRAYS]
    uploaded = {codec_tensor(k) for k in arrays}
    assert uploaded == set(trained)
    if sparse:  # frozen masks untouched, the trained ones readjusted; masked uploads sparse
        assert all(torch.equal(client.masks[k], masks_before[k]) for k in client.masks if k in frozen)
        assert metrics[wire.DST_MOVED] > 0
        assert "blocks.0.attn.q.weight#mask" in arrays and "head.weight#values" in arrays
    else:
        assert set(arrays) == set(trained)
    # a later round without the key trains everything again
    _, _, metrics = client.fit(out, {wire.SERVER_ROUND: 2, wire.LOCAL_EPOCHS: 1})
    assert client.trainable is None


def codec_tensor(key: str) -> str:
    from fedprune_flwr.strategies.fedbt import tensor_of

    return tensor_of(key)


# -- FLOPs -----------------------------------------------------------------------------


def test_partial_training_flops_by_hand():
    m = _mlp()  # Linear 4->8 (32 MACs), 8->8 (64), 8->2 (16); forward = 2 * 112 = 224 FLOPs
    macs = layer_macs(m, (1, 4))  # one example of shape (1, 4): one position per Linear
    assert macs == {"0.weight": 32, "2.weight": 64, "4.weight": 16}
    order = forward_order(m, (1, 4))
    assert order == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    everything = [n for n, _ in m.named_parameters()]
    assert partial_training_flops(macs, 10, order, everything) == training_flops(macs, 10) == 6720
    # top layer only: forward 224 + its input gradient 32 + its weight gradient 32
    assert partial_training_flops(macs, 1, order, ["4.weight", "4.bias"]) == 288
    # middle layer: forward 224 + input gradients of layers 2 and 4 (128 + 32) + weight 128
    assert partial_training_flops(macs, 1, order, ["2.weight", "2.bias"]) == 512
    # only the first bias: the backward pass runs through layers 2 and 4, no weight gradient
    assert partial_training_flops(macs, 1, order, ["0.bias"]) == 224 + 160
    # masked: layer 2 at density 0.5 -> 64 MACs become 32 in all three terms
    mask = {"2.weight": torch.cat([torch.ones(32), torch.zeros(32)]).reshape(8, 8)}
    assert partial_training_flops(macs, 1, order, ["2.weight", "2.bias"], mask) == 160 + 96 + 64
    assert partial_training_flops(macs, 1, order, []) == 224  # nothing trained: forward only


def test_bert_partial_flops_order_and_schedules():
    m = _bert()
    order = forward_order(m, (SEQ,))
    assert order[:2] == ["pos_embed", "tok_embed.weight"] and order[-2:] == ["head.weight", "head.bias"]
    assert order.index("blocks.0.norm1.weight") < order.index("blocks.1.attn.q.weight")
    macs, g = layer_macs(m, (SEQ,)), layer_groups(m)
    dense = training_flops(macs, 1)
    bottom = partial_training_flops(macs, 1, order, PartialSchedule(g, "pretrain", 2).tensors_for(1))
    top = partial_training_flops(macs, 1, order, PartialSchedule(g, "finetune", 2).tensors_for(1))
    fwd = dense / 3
    # bottom block: forward + backward through both blocks + the weights of one block (of two)
    assert top < bottom < dense and bottom == pytest.approx(fwd * (2 + 0.5), rel=0.02)
    assert top == pytest.approx(fwd * (1 + 2 * 0.5), rel=0.02)


# -- server side -----------------------------------------------------------------------


def _schedule(model, mode="pretrain", rounds=10):
    return PartialSchedule(layer_groups(model), mode, rounds)


def test_fedbt_averages_the_trained_tensors_and_rejects_wrong_uploads():
    m = _mlp()  # groups 0, 2 (blocks), 4 (head); round 1 of pretrain trains 0.* and 4.*
    state = wire.state_to_numpy(m.state_dict())
    rec = RoundRecorder(None, {}, 10)
    s = FedBT(recorder=rec, schedule=_schedule(m), fraction_train=1.0, min_train_clients=2)
    msgs = list(s.configure_train(1, ArrayRecord({k: Array(v) for k, v in state.items()}),
                                  config(), FakeGrid(4)))
    trained = ["0.weight", "0.bias", "4.weight", "4.bias"]
    assert list(msgs[0].content[wire.CONFIG][wire.FEDBT_TRAIN]) == trained
    assert rec.rounds[1]["fedbt_layers"] == ["0", "4"]

    def upload(node, shift, n, keys=trained):
        return reply(node, {k: state[k] + shift for k in keys},
                     {wire.NUM_EXAMPLES: n, wire.TRAIN_LOSS: 1.0})

    replies = [upload(100, 1.0, 10), upload(101, 4.0, 30),
               upload(102, 0.0, 10, trained + ["2.weight"]),  # a frozen tensor too
               upload(103, 0.0, 10, trained[:-1])]  # one trained tensor missing
    out, _ = s.aggregate_train(1, replies)
    rejected = rec.rounds[1]["rejected"]
    assert "not asked to train" in rejected["2"] and "2.weight" in rejected["2"]
    assert "lacks ['4.bias']" in rejected["3"]
    new = {k: v.numpy() for k, v in out.items()}
    assert list(new) == list(state)
    for k in state:
        want = np.average([state[k] + 1.0, state[k] + 4.0], axis=0, weights=[10, 30]) \
            if k in trained else state[k]
        assert np.allclose(new[k], want, atol=1e-6)
        if k not in trained:
            assert np.array_equal(new[k], state[k])


def _fedbt_prune(m, **kw):
    rec = RoundRecorder(None, {}, 10)
    s = FedBTPrune(recorder=rec, schedule=_schedule(m), initial_state=wire.state_to_numpy(m.state_dict()),
                   prunable=prunable_names(m), num_rounds=10, sparsity=0.5, seed=1, fraction_train=1.0,
                   min_train_clients=2, readjust_interval=1, **kw)
    return s, rec


def test_fedbt_prune_keeps_frozen_layers_exactly_and_rejects_wrong_uploads():
    m = _mlp()
    s, rec = _fedbt_prune(m)
    W0 = {k: v.copy() for k, v in s.W.items()}
    M0 = {k: v.copy() for k, v in s.M.items()}
    msgs = list(s.configure_train(1, ArrayRecord(), config(), FakeGrid(5)))
    trained = ["0.weight", "0.bias", "4.weight", "4.bias"]
    sent = msgs[0].content[wire.ARRAYS]
    assert "2.weight#values" in sent and "2.weight#mask" in sent  # frozen layers travel sparse too

    def upload(node, shift=0.1, keys=trained, mutate=None):
        st = {k: np.where(s.M[k], s.W[k] + shift, 0).astype(np.float32) if k in s.M
              else s.W[k] + shift for k in keys}
        arrays = codec.encode_state(st, {k: s.M[k] for k in keys if k in s.M})
        if mutate:
            mutate(arrays)
        return reply(node, arrays, {wire.NUM_EXAMPLES: 20, wire.TRAIN_LOSS: 1.0})

    frozen_extra = lambda a: a.update(codec.encode_state({"2.weight": W0["2.weight"]},  # noqa: E731
                                                         {"2.weight": M0["2.weight"]}))
    dense_prunable = lambda a: (a.pop("4.weight#values"), a.pop("4.weight#mask"),  # noqa: E731
                                a.__setitem__("4.weight", W0["4.weight"]))
    replies = [upload(100), upload(101), upload(102, mutate=frozen_extra),
               upload(103, keys=trained[1:]), upload(104, mutate=dense_prunable)]
    out, _ = s.aggregate_train(1, replies)
    rejected = rec.rounds[1]["rejected"]
    assert set(rejected) == {"2", "3", "4"}
    assert "not asked to train" in rejected["2"] and "lacks ['0.weight']" in rejected["3"]
    assert "differ from the prunable" in rejected["4"]
    for k in ("2.weight", "2.bias"):  # frozen: bit for bit, values and mask
        assert np.array_equal(s.W[k], W0[k])
    assert np.array_equal(s.M["2.weight"], M0["2.weight"])
    for k in ("0.weight", "4.weight"):  # trained: moved by 0.1 on the kept positions
        keep = M0[k] & s.M[k]
        assert np.allclose(s.W[k][keep], W0[k][keep] + 0.1, atol=1e-6)
    assert np.allclose(s.W["4.bias"], W0["4.bias"] + 0.1, atol=1e-6)
    assert out is not None and set(rec.rounds[1]["contributions"]) == {"0", "1"}


# -- the whole app ---------------------------------------------------------------------


@pytest.mark.integration
def test_fedbt_and_fedbt_prune_through_flower(tmp_path):
    """Two rounds of each as a Flower ServerApp and ClientApps (in-process, see
    local_grid.py) on bert-tiny: only the scheduled layers change, uploads and client
    FLOPs are below dense FedAvg's."""
    from fedprune.checkpoint import load_checkpoint, split
    from fedprune.models import model_from_config

    from local_grid import simulate_local as simulate

    base = {"model": "bert-tiny", "dataset": "tokens-synthetic", "num-server-rounds": 2,
            "fraction-train": 1.0, "min-train-clients": 2, "local-epochs": 1, "lr": 0.05,
            "max-client-samples": 48, "eval-samples": 100, "checkpoint-every": 2}
    cfg = RunConfig.from_mapping(base)
    initial = wire.state_to_numpy(model_from_config(cfg, (SEQ,), 4).state_dict())
    fedavg_up = 2 * sum(v.nbytes for v in initial.values())  # 2 clients upload everything
    g = layer_groups(model_from_config(cfg, (SEQ,), 4))
    scheduled = set(PartialSchedule(g, "pretrain", 2).tensors_for(1)) | set(
        PartialSchedule(g, "pretrain", 2).tensors_for(2))
    for strategy in ("fedbt", "fedbt-prune"):
        out = tmp_path / strategy
        res = simulate(2, {**base, "strategy": strategy, "sparsity": 0.5}, out)
        rounds = res["rounds"]
        assert [r["clients"] for r in rounds[1:]] == [2, 2]
        assert all(not r["rejected"] for r in rounds)
        assert [r["fedbt_layers"] for r in rounds[1:]] == [["blocks.0", "head"], ["blocks.1", "head"]]
        for r in rounds[1:]:
            assert r["bytes_up"] < 0.5 * fedavg_up
            assert r["client_flops"] < r["dense_client_flops"]
        arrays, _ = load_checkpoint(out / "checkpoint.npz")
        final = split(split(arrays, "state"), "W") if strategy == "fedbt-prune" else split(arrays, "model")
        changed = {k for k in initial if not np.array_equal(final[k], initial[k])}
        assert changed and changed <= scheduled, changed - scheduled
        assert {"tok_embed.weight", "pos_embed"}.isdisjoint(changed)  # the stem never trains
        assert np.isfinite(rounds[-1]["loss"])
