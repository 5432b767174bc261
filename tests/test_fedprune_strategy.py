import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from fedprune import codec, wire
from fedprune.masks import prunable_names
from fedprune_flwr.strategies.fedprune import FedPrune, shape_rule
from fedprune_flwr.strategies.results import RoundRecorder

from flower_helpers import FakeGrid, config, reply


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))


def _strategy(**kw):
    m = _model()
    rec = RoundRecorder(None, {}, 10)
    kw.setdefault("readjust_interval", 1)
    s = FedPrune(recorder=rec, initial_state=wire.state_to_numpy(m.state_dict()),
                 prunable=prunable_names(m), num_rounds=10, sparsity=0.8, seed=1,
                 fraction_train=1.0, min_train_clients=2, **kw)
    return s, rec, FakeGrid(3)


def _client_reply(s, node, shift=0.1, n=50, mutate=None, rnd=1):
    """A well-formed reply: the sent sparse model moved by ``shift`` on the client's mask."""
    state = {k: v + shift * (k not in s.M) for k, v in s.sparse_state().items()}
    masks = {k: m.copy() for k, m in s.M.items()}
    for k in masks:
        state[k] = np.where(masks[k], state[k] + shift, 0).astype(np.float32)
    arrays = codec.encode_state(state, masks)
    if mutate:
        mutate(arrays)
    return reply(node, arrays, {wire.NUM_EXAMPLES: n, wire.TRAIN_LOSS: 1.0}, rnd=rnd)


def test_sent_payload_is_sparse_and_density_is_on_target():
    s, rec, grid = _strategy()
    msgs = list(s.configure_train(1, ArrayRecord(), config(), grid))
    assert len(msgs) == 3 and abs(s.density() - 0.2) < 0.01
    arrays = msgs[0].content[wire.ARRAYS]
    assert set(arrays) == {"0.weight#values", "0.weight#mask", "0.bias", "2.weight#values",
                           "2.weight#mask", "2.bias"}
    dense = sum(v.size * 4 for v in s.W.values())
    assert rec.rounds[1]["bytes_down"] < 3 * 0.35 * dense
    assert msgs[0].content[wire.CONFIG][wire.DST_ALPHA] > 0  # readjust-interval 1


def test_aggregation_moves_model_and_keeps_residuals():
    s, rec, grid = _strategy()
    before = {k: v.copy() for k, v in s.W.items()}
    s.configure_train(1, ArrayRecord(), config(), grid)
    s.aggregate_train(1, [_client_reply(s, 100 + i) for i in range(3)])
    for k, m in s.M.items():
        assert np.allclose(s.W[k][m], before[k][m] + 0.1, atol=1e-6)
        assert np.array_equal(s.W[k][~m], before[k][~m])  # residuals untouched
    assert rec.rounds[1]["density"] == pytest.approx(s.density())
    assert set(rec.rounds[1]["contributions"]) == {"0", "1", "2"}


def test_the_dense_model_drops_never_trained_residuals_and_keeps_trained_ones():
    s, rec, grid = _strategy(round_average=0.0)  # the dense model of W itself
    seen = []
    s.dense_evaluate = lambda state: seen.append(state) or {"accuracy": 0.5, "loss": 1.0}
    s.configure_train(1, ArrayRecord(), config(), grid)
    s.aggregate_train(1, [_client_reply(s, 100 + i) for i in range(3)])
    k = "0.weight"
    off = np.flatnonzero(~s.M[k])
    trained, never = off[0], off[1]
    s.W[k].reshape(-1)[trained] += 0.25  # a weight trained, then pruned: a real residual
    W = {n: v.copy() for n, v in s.W.items()}
    dense = s.dense_state()
    assert dense[k].reshape(-1)[trained] == W[k].reshape(-1)[trained]
    assert dense[k].reshape(-1)[never] == 0.0 and W[k].reshape(-1)[never] != 0.0
    for n, m in s.M.items():  # on the mask, and every tensor outside the masks: W itself
        assert np.array_equal(dense[n][m], W[n][m])
    assert np.array_equal(dense["0.bias"], W["0.bias"])
    # never-trained = still at the initial value: everything off the mask but `trained`
    assert int((dense[k] != W[k]).sum()) == int((~s.M[k]).sum()) - 1
    for n in W:  # W itself (what clients are sent, the residuals) is untouched
        assert np.array_equal(s.W[n], W[n])
    s.round_metrics(1)
    assert seen and np.array_equal(seen[-1][k], dense[k])


@pytest.mark.parametrize("mutate, reason", [
    (lambda a: a.__setitem__("0.weight#values", a["0.weight#values"][:-1]), "undecodable"),
    (lambda a: a.__setitem__("0.weight#mask", np.array([9, 0], np.uint8)), "undecodable"),
    (lambda a: a.__setitem__("2.bias", np.full(5, np.nan, np.float32)), "non-finite"),
    (lambda a: a.__setitem__("0.weight#values", np.full_like(a["0.weight#values"], np.inf)),
     "non-finite"),
    (lambda a: a.pop("2.weight#mask"), "undecodable"),
    (lambda a: a.update(codec.encode_state({"0.weight": np.ones((30, 20), np.float32)},
                                           {"0.weight": np.ones((30, 20), bool)})), "budget"),
    (lambda a: a.update({"0.bias": np.zeros(30, np.float64)}), "dtype"),
])
def test_malformed_sparse_replies_are_rejected(mutate, reason):
    s, rec, grid = _strategy()
    s.configure_train(1, ArrayRecord(), config(), grid)
    before = {k: v.copy() for k, v in s.W.items()}
    s.aggregate_train(1, [_client_reply(s, 100), _client_reply(s, 101, mutate=mutate)])
    assert reason in rec.rounds[1]["rejected"]["1"]
    assert rec.rounds[1]["clients"] == 1
    for k, m in s.M.items():  # the good reply alone moved the model
        assert np.allclose(s.W[k][m], before[k][m] + 0.1, atol=1e-6)


@pytest.mark.parametrize("interval", [5, 1])
def test_a_mask_may_move_only_as_far_as_the_rounds_readjustment_allows(interval):
    # readjust-interval 5: round 1 has no readjustment, the mask may not move at all;
    # interval 1: alpha_t allows ceil(alpha_t * kept) drops and as many growths per layer
    s, rec, grid = _strategy(readjust_interval=interval, alpha0=0.3)
    msgs = list(s.configure_train(1, ArrayRecord(), config(), grid))
    alpha = msgs[0].content[wire.CONFIG][wire.DST_ALPHA]
    assert (alpha > 0) == (interval == 1)
    rng = np.random.default_rng(0)

    def move(count):  # keep the budget, replace `count` kept positions of 0.weight
        def mutate(arrays):
            m = s.M["0.weight"].reshape(-1).copy()
            m[rng.choice(np.flatnonzero(m), count, replace=False)] = False
            m[rng.choice(np.flatnonzero(~m & ~s.M["0.weight"].reshape(-1)), count,
                         replace=False)] = True
            w = np.where(m, 0.5, 0).astype(np.float32).reshape(s.M["0.weight"].shape)
            arrays.update(codec.encode_state({"0.weight": w}, {"0.weight": m.reshape(w.shape)}))
        return mutate

    kept = int(s.M["0.weight"].sum())
    allowed = int(np.ceil(alpha * kept - 1e-9))
    far = max(int(0.247 * kept), allowed + 1)  # the review moved 24.7% within budget
    s.aggregate_train(1, [_client_reply(s, 100), _client_reply(s, 101, mutate=move(far)),
                          _client_reply(s, 102, mutate=move(allowed) if allowed else None)])
    assert "the mask grew" in rec.rounds[1]["rejected"]["1"]
    assert "2" not in rec.rounds[1]["rejected"] and rec.rounds[1]["clients"] == 2


def test_prunable_tensor_sent_dense_is_rejected():
    s, rec, grid = _strategy()
    s.configure_train(1, ArrayRecord(), config(), grid)

    def densify(a):
        a.pop("0.weight#values")
        a.pop("0.weight#mask")
        a["0.weight"] = np.zeros((30, 20), np.float32)

    s.aggregate_train(1, [_client_reply(s, 100), _client_reply(s, 101, mutate=densify)])
    assert "differ from the prunable" in rec.rounds[1]["rejected"]["1"]


def test_ablation_switches():
    s, rec, grid = _strategy(contribution_weighting=False, residual_restoration=False,
                             dynamic_topology=False)
    for k, m in s.M.items():
        assert np.all(s.W[k][~m] == 0)  # no residuals kept
    msgs = list(s.configure_train(1, ArrayRecord(), config(), grid))
    assert msgs[0].content[wire.CONFIG][wire.DST_ALPHA] == 0.0  # static topology
    mask_before = {k: m.copy() for k, m in s.M.items()}
    s.aggregate_train(1, [_client_reply(s, 100, n=10), _client_reply(s, 101, n=30)])
    w = {c: v["weight"] for c, v in rec.rounds[1]["contributions"].items()}
    assert w == {"0": 0.25, "1": 0.75}  # data-size weights
    assert all(np.array_equal(s.M[k], mask_before[k]) for k in s.M)


def _sub_reply(s, node, masks, shift=0.1, n=50):
    """A reply trained on the sub-mask ``masks`` the client received."""
    state = {k: v + shift * (k not in s.M) for k, v in s.W.items()}
    for k, m in masks.items():
        state[k] = np.where(m, s.W[k] + shift, 0).astype(np.float32)
    return reply(node, codec.encode_state(state, masks),
                 {wire.NUM_EXAMPLES: n, wire.TRAIN_LOSS: 1.0})


def test_budget_density_sends_each_client_a_sub_mask_of_its_budget():
    s, rec, grid = _strategy(adaptive_density="budget", adaptive_min=0.25)
    s.directory.refresh(grid, 1)
    for cid, budget in {0: 1.0, 1: 0.5, 2: 0.1}.items():  # 0.1 is floored at adaptive-min
        s.directory.reported[cid][wire.COMPUTE_BUDGET] = budget
    msgs = list(s.configure_train(1, ArrayRecord(), config(), grid))
    kept = {}
    for msg in msgs:
        node = msg.metadata.dst_node_id
        arrays = {k: v.numpy() for k, v in msg.content[wire.ARRAYS].items()}
        _, masks = codec.decode_state(arrays, s.shapes)
        for k, m in masks.items():
            assert not (m & ~s.M[k]).any()  # a sub-mask of the global mask
        kept[node] = sum(int(m.sum()) for m in masks.values())
    full = sum(int(m.sum()) for m in s.M.values())
    assert kept[100] == full
    assert kept[101] == pytest.approx(0.5 * full, abs=2)
    assert kept[102] == pytest.approx(0.25 * full, abs=2)
    assert set(rec.rounds[1]["client_density"]) == {"0", "1", "2"}
    # a reply on more weights than its sub-mask is over budget
    big = _sub_reply(s, 102, s.M)
    small = _sub_reply(s, 101, s._client_masks[101])
    before = {k: v.copy() for k, v in s.W.items()}
    s.aggregate_train(1, [_sub_reply(s, 100, s.M), small, big])
    assert "budget" in rec.rounds[1]["rejected"]["2"]
    assert abs(s.density() - 0.2) < 0.01  # the global mask keeps its size
    held = s._client_masks[101]
    for k in s.M:  # positions both clients trained moved by +0.1
        assert np.allclose(s.W[k][held[k]], before[k][held[k]] + 0.1, atol=1e-6)


def test_contribution_density_gives_low_scorers_sparser_models():
    s, rec, grid = _strategy(adaptive_density="contribution", adaptive_min=0.3)
    s.directory.refresh(grid, 1)
    assert s.density_factor(0) == 1.0  # not scored yet
    s.contributions.scores = {0: 0.6, 1: 0.3, 2: 0.0}
    assert s.density_factor(0) == pytest.approx(1.0)
    assert s.density_factor(1) == pytest.approx(0.3 + 0.7 * 0.5)
    assert s.density_factor(2) == pytest.approx(0.3)
    msgs = list(s.configure_train(1, ArrayRecord(), config(), grid))
    dens = rec.rounds[1]["client_density"]
    assert dens["0"] > dens["1"] > dens["2"] and dens["2"] == pytest.approx(0.3 * dens["0"], rel=0.02)
    assert len(msgs) == 3


def test_uniform_density_is_unchanged_by_the_adaptive_code():
    a, _, grid_a = _strategy()
    b, _, grid_b = _strategy(adaptive_density="none")
    ma = list(a.configure_train(1, ArrayRecord(), config(), grid_a))
    mb = list(b.configure_train(1, ArrayRecord(), config(), grid_b))
    for x, y in zip(ma, mb, strict=True):
        ax, ay = x.content[wire.ARRAYS], y.content[wire.ARRAYS]
        assert all(np.array_equal(ax[k].numpy(), ay[k].numpy()) for k in ax)
    with pytest.raises(ValueError, match="adaptive density"):
        _strategy(adaptive_density="greedy")


def test_clipping_scales_an_oversized_update_down_to_the_median_norm():
    s, rec, grid = _strategy(clip_updates=1.0, contribution_weighting=False)
    s.configure_train(1, ArrayRecord(), config(), grid)
    before = {k: v.copy() for k, v in s.W.items()}
    # three clients with updates +0.1, +0.1 and +10 (x100) on the same support
    s.aggregate_train(1, [_client_reply(s, 100), _client_reply(s, 101),
                          _client_reply(s, 102, shift=10.0)])
    assert rec.rounds[1]["clipped_clients"] == [2]
    for k, m in s.M.items():  # the big one was scaled to +0.1: the mean moves by +0.1
        assert np.allclose(s.W[k][m], before[k][m] + 0.1, atol=1e-5)
    with pytest.raises(ValueError, match="clip_updates"):
        _strategy(clip_updates=-1.0)


def test_no_clipping_below_the_bound():
    s, rec, grid = _strategy(clip_updates=2.0)
    s.configure_train(1, ArrayRecord(), config(), grid)
    s.aggregate_train(1, [_client_reply(s, 100 + i, shift=0.1 + 0.01 * i) for i in range(3)])
    assert rec.rounds[1]["clipped_clients"] == []


@pytest.mark.parametrize("window, clipped", [(1, []), (3, [1, 2])])
def test_a_clip_window_keeps_a_majority_of_big_updates_from_moving_the_bound(window, clipped):
    # round 1: three updates of +0.1; round 2: two of three are x100. Over this round
    # alone the median is the big norm and nothing is clipped; over the window it is small
    s, rec, grid = _strategy(clip_updates=1.0, clip_window=window, contribution_weighting=False)
    s.configure_train(1, ArrayRecord(), config(), grid)
    s.aggregate_train(1, [_client_reply(s, 100 + i) for i in range(3)])
    s.configure_train(2, ArrayRecord(), config(), grid)
    s.aggregate_train(2, [_client_reply(s, 100, rnd=2), _client_reply(s, 101, shift=10.0, rnd=2),
                          _client_reply(s, 102, shift=10.0, rnd=2)])
    assert rec.rounds[2]["clipped_clients"] == clipped
    # the window's norms survive a checkpoint (a resumed run clips as the uninterrupted one)
    arrays, meta = s.extra_state()
    other, _, _ = _strategy(clip_updates=1.0, clip_window=window, contribution_weighting=False)
    other.load_extra_state(arrays, meta)
    norms = s.update_filter.norms
    assert other.update_filter.norms == norms and len(norms) == (2 if window > 1 else 0)
    with pytest.raises(ValueError, match="clip_window"):
        _strategy(clip_window=0)


def test_trusted_reference_uses_data_size_first_then_scores_and_checkpoints():
    s, rec, grid = _strategy(cgsv_reference="trusted")
    s.configure_train(1, ArrayRecord(), config(), grid)
    s.aggregate_train(1, [_client_reply(s, 100 + i, n=50 * (i + 1)) for i in range(3)])
    # round 1: no history to score against -> data-size weights, no scores
    weights = {c: v["weight"] for c, v in rec.rounds[1]["contributions"].items()}
    assert weights == pytest.approx({"0": 1 / 6, "1": 2 / 6, "2": 3 / 6})
    assert s.contributions.scores == {} and s.contributions.history is not None
    s.configure_train(2, ArrayRecord(), config(), grid)
    s.aggregate_train(2, [_client_reply(s, 100 + i, rnd=2) for i in range(3)])
    assert set(s.contributions.scores) == {0, 1, 2}  # scored against round 1's update
    assert all(v["phi"] is not None for v in rec.rounds[2]["contributions"].values())
    assert len(rec.rounds[2]["trusted_clients"]) == 2 and "trusted_clients" not in rec.rounds[1]
    arrays, meta = s.extra_state()
    other, _, _ = _strategy(cgsv_reference="trusted")
    other.load_extra_state(arrays, meta)
    assert np.array_equal(other.contributions.history, s.contributions.history)
    assert other.contributions.scores == s.contributions.scores
    arrays["H/history"] = arrays["H/history"][:-1]
    with pytest.raises(Exception, match="CGSV history"):
        other.load_extra_state(arrays, meta)


def test_server_reference_scores_against_the_servers_own_update():
    # the server "trains" the sent model by +0.1 on its mask (as the honest clients do);
    # client 2 sends the opposite update and is scored down from round 1 on
    calls = []

    def server_update(rnd, sent, masks):
        calls.append(rnd)
        assert all(not np.any(sent[k][~m]) for k, m in masks.items())  # the sparse model
        return {k: np.where(masks[k], v + 0.1, 0) if k in masks else v + 0.1
                for k, v in sent.items()}

    with pytest.raises(ValueError, match="server_update_fn"):
        _strategy(cgsv_reference="server")
    s, rec, grid = _strategy(cgsv_reference="server", server_update_fn=server_update,
                             lambda0=0.0)
    s.configure_train(1, ArrayRecord(), config(), grid)
    s.aggregate_train(1, [_client_reply(s, 100), _client_reply(s, 101),
                          _client_reply(s, 102, shift=-0.1)])
    c = rec.rounds[1]["contributions"]
    assert calls == [1] and c["0"]["phi"] == pytest.approx(1.0) and c["2"]["phi"] < -0.9
    assert c["2"]["weight"] < 0.01 and c["0"]["weight"] == pytest.approx(c["1"]["weight"])
    assert "trusted_clients" not in rec.rounds[1]

    def wrong_shape(rnd, sent, masks):
        return {**sent, "2.bias": np.zeros(3)}

    s2, _, grid2 = _strategy(cgsv_reference="server", server_update_fn=wrong_shape)
    s2.configure_train(1, ArrayRecord(), config(), grid2)
    with pytest.raises(ValueError, match="2.bias"):
        s2.aggregate_train(1, [_client_reply(s2, 100 + i) for i in range(3)])


@pytest.mark.parametrize("grown_start", ["zero", "residual"])
def test_a_grown_weight_replaces_or_resumes_from_its_residual(grown_start):
    # every client grows the same pruned position j (it trained it from 0 to 0.5); with
    # grown-start "residual" the server adds that to j's residual, with "zero" it replaces it
    s, rec, grid = _strategy(grown_start=grown_start)
    s.configure_train(1, ArrayRecord(), config(), grid)
    j = tuple(np.argwhere(~s.M["0.weight"])[0])
    d = tuple(np.argwhere(s.M["0.weight"])[0])
    residual = float(s.W["0.weight"][j])
    assert residual != 0.0
    replies = []
    for i in range(3):
        state = {k: np.asarray(v).copy() for k, v in s.sparse_state().items()}
        masks = {k: m.copy() for k, m in s.M.items()}
        masks["0.weight"][j] = True  # grow j, drop d: the client keeps its budget
        masks["0.weight"][d] = False
        state["0.weight"][j], state["0.weight"][d] = 0.5, 0.0
        replies.append(reply(100 + i, codec.encode_state(state, masks),
                             {wire.NUM_EXAMPLES: 50, wire.TRAIN_LOSS: 1.0}))
    before = {k: v.copy() for k, v in s.W.items()}
    s.aggregate_train(1, replies)
    assert len(s.last_accepted) == 3
    want = residual + 0.5 if grown_start == "residual" else 0.5
    assert s.W["0.weight"][j] == pytest.approx(want, abs=1e-6)
    held = s.M["0.weight"].copy()
    held[j] = held[d] = False
    # the received positions are unchanged by the setting (no client moved them)
    np.testing.assert_allclose(s.W["0.weight"][held], before["0.weight"][held], atol=1e-6)


def test_unknown_grown_start_is_rejected():
    with pytest.raises(ValueError, match="grown_start"):
        _strategy(grown_start="random")


def test_lambda_t_decays_to_the_floor_and_a_bad_floor_is_rejected():
    s, rec, grid = _strategy(lambda0=0.8, lambda_min=0.4, lambda_schedule="linear",
                             cgsv_reference="round")
    for t in (1, 10):
        s.configure_train(t, ArrayRecord(), config(), grid)
        s.aggregate_train(t, [_client_reply(s, 100 + i, rnd=t) for i in range(3)])
    assert rec.rounds[1]["lambda_t"] == pytest.approx(0.4 + 0.4 * 0.9)
    assert rec.rounds[10]["lambda_t"] == pytest.approx(0.4)  # the last round: at the floor
    with pytest.raises(ValueError, match="lambda_min"):
        _strategy(lambda0=0.3, lambda_min=0.5)


def test_root_update_is_the_same_for_the_same_round_and_keeps_the_mask():
    # a resumed run must compute the same server references as the uninterrupted one
    from fedprune.config import RunConfig
    from fedprune.models import model_from_config
    from fedprune_flwr.strategies.server_app import root_update_fn

    cfg = RunConfig.from_mapping({"dataset": "mnist-mini", "model": "mlp", "cgsv-root-samples": 40,
                                  "cgsv-reference": "server", "lr": 0.05})
    model = model_from_config(cfg, (1, 28, 28), 10)
    state = wire.state_to_numpy(model.state_dict())
    masks = {k: np.random.default_rng(0).random(state[k].shape) < 0.3 for k in prunable_names(model)}
    sent = {k: np.where(masks[k], v, 0).astype(v.dtype) if k in masks else v for k, v in state.items()}
    fn = root_update_fn(cfg, model)
    a, b, c = fn(3, sent, masks), root_update_fn(cfg, model)(3, sent, masks), fn(4, sent, masks)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)  # another round, another batch order
    for k, m in masks.items():
        assert not np.any(a[k][~m]) and not np.array_equal(a[k][m], sent[k][m])
    assert all(np.array_equal(v, state[k]) for k, v in wire.state_to_numpy(model.state_dict()).items())


def test_the_output_model_is_the_round_average_of_w_and_clients_still_get_w():
    """A <- beta A + (1 - beta) W after every round; evaluated / returned / restored dense
    on the current mask; what clients are sent is W itself; positions that joined the
    mask start their average at W."""
    beta = 0.75
    s, rec, grid = _strategy(round_average=beta, dynamic_topology=False)
    k = "0.weight"
    s.configure_train(1, ArrayRecord(), config(), grid)
    out1, _ = s.aggregate_train(1, [_client_reply(s, 100 + i, shift=0.1) for i in range(3)])
    W1 = {n: v.copy() for n, v in s.W.items()}
    assert np.array_equal(out1[k].numpy(), np.where(s.M[k], W1[k], 0))  # A = W after round 1
    s.configure_train(2, ArrayRecord(), config(), grid)
    out2, _ = s.aggregate_train(2, [_client_reply(s, 100 + i, shift=0.2, rnd=2) for i in range(3)])
    W2 = s.W
    want = (beta * W1[k].astype(np.float64) + (1 - beta) * W2[k]).astype(np.float32)
    assert np.allclose(out2[k].numpy(), np.where(s.M[k], want, 0), atol=1e-7)
    assert not np.allclose(out2[k].numpy()[s.M[k]], W2[k][s.M[k]])  # not the last round's W
    assert np.allclose(s.dense_state()[k][s.M[k]], want[s.M[k]], atol=1e-7)
    sent = codec.decode_state({n: v.numpy() for n, v in next(iter(
        s.configure_train(3, ArrayRecord(), config(), grid))).content["arrays"].items()},
        {n: v.shape for n, v in s.W.items()})[0]
    assert np.array_equal(sent[k], np.where(s.M[k], W2[k], 0))  # clients train W
    # a position that enters the mask starts its average at W
    avg = s.round_average
    entered = np.zeros_like(s.M[k])
    entered.reshape(-1)[0] = True
    W3 = {n: v + 1.0 for n, v in W2.items()}
    before = avg.average[k].copy()
    avg.update(W3, {k: entered})
    assert avg.average[k].reshape(-1)[0] == W3[k].reshape(-1)[0]
    assert np.isclose(avg.average[k].reshape(-1)[1],
                      beta * before.reshape(-1)[1] + (1 - beta) * W3[k].reshape(-1)[1])


def test_round_average_zero_outputs_the_last_rounds_model():
    s, rec, grid = _strategy(round_average=0.0)
    s.configure_train(1, ArrayRecord(), config(), grid)
    out, _ = s.aggregate_train(1, [_client_reply(s, 100 + i) for i in range(3)])
    assert s.round_average is None
    for k, v in s.sparse_state().items():
        assert np.array_equal(out[k].numpy(), v)


def test_fedprune_takes_its_weights_and_prunable_tensors_from_a_model():
    m = _model()
    s = FedPrune(model=m, num_rounds=4, sparsity=0.8)
    assert s.prunable == prunable_names(m)
    for k, v in m.state_dict().items():
        assert np.array_equal(s.W[k], v.numpy())
    assert s.recorder.path is None and s.recorder.rounds == {}  # an in-memory recorder
    with pytest.raises(TypeError, match="not both"):
        FedPrune(model=m, initial_state=wire.state_to_numpy(m.state_dict()), num_rounds=4)
    state = wire.state_to_numpy(m.state_dict())
    assert FedPrune(initial_state=state, num_rounds=4).prunable == shape_rule(state) \
        == prunable_names(m)  # the shape rule, where the model has only weight layers


def test_fedprune_made_like_flowers_strategies_is_built_by_start(tmp_path):
    """FedPrune(sparsity=...) then the standard start(initial_arrays=..., num_rounds=...,
    evaluate_fn=...): model, rounds and prunable tensors come from start; the dense model
    is scored by evaluate_fn."""
    from flwr.app import MetricRecord
    from flwr.serverapp import ServerApp

    from fedprune.training import evaluate

    import plugin_app
    from local_grid import run_local

    made = {}
    app = ServerApp()

    @app.main()
    def main(grid, context):
        model = plugin_app.make_model()
        test = torch.utils.data.DataLoader(plugin_app.make_data(999, 256), batch_size=256)

        def evaluate_fn(rnd, arrays):
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, acc, _ = evaluate(model, test)
            return MetricRecord({"accuracy": acc, "loss": loss})

        made["s"] = s = FedPrune(sparsity=0.7, readjust_interval=1, fraction_train=1.0,
                                 min_train_clients=3)
        with pytest.raises(TypeError, match="initial_arrays"):
            s.start(grid=grid, num_rounds=2)
        s.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=2,
                evaluate_fn=evaluate_fn)

    run_local(app, plugin_app.client_app, 3)
    s = made["s"]
    assert s.prunable == ["0.weight", "2.weight"] and s.recorder.num_rounds == 2
    # the app's ClientApp answers no query: each node was known by its Flower node id
    # until its first train reply reported the client-id fedprune_train was given
    assert sorted(s.directory.client_of.values()) == [0, 1, 2] and not s.directory.by_node_id
    assert sorted(s.recorder.rounds[1]["contributions"]) == ["0", "1", "2"]
    rounds = s.recorder.rounds
    assert sorted(rounds) == [0, 1, 2] and rounds[2]["clients"] == 3
    assert rounds[2]["density"] == pytest.approx(0.3, abs=0.02)
    assert rounds[2]["dense_accuracy"] is not None and rounds[2]["accuracy"] > rounds[0]["accuracy"]


def _vote_reply(s, node, votes, n=50, rnd=1):
    """A reply to a vote round: the sent model moved by 0.1 plus ``votes`` (name ->
    dense gradient sums, nonzero where the client votes)."""
    msg = _client_reply(s, node, n=n, rnd=rnd)
    grow = codec.encode_state({k + wire.GROW_SUFFIX: g.astype(np.float32) for k, g in votes.items()},
                              {k + wire.GROW_SUFFIX: g != 0 for k, g in votes.items()})
    arrays = {k: v.numpy() for k, v in msg.content[wire.ARRAYS].items()}
    return reply(node, {**arrays, **grow}, {wire.NUM_EXAMPLES: n, wire.TRAIN_LOSS: 1.0}, rnd=rnd)


def test_server_readjustment_grows_the_round_gradient_and_drops_the_weakest():
    """Clients keep their masks and vote; the server grows where the weighted gradient
    sum is largest (opposite votes cancel) and drops the smallest aggregated weights."""
    s, rec, grid = _strategy(readjustment="server", clip_updates=0.0,
                             contribution_weighting=False)
    msgs = list(s.configure_train(1, ArrayRecord(), config(), grid))
    cfg = msgs[0].content[wire.CONFIG]
    assert cfg[wire.DST_ALPHA] == 0.0 and cfg[wire.DST_VOTES] > 0  # clients do not move
    k = "0.weight"
    off = np.flatnonzero(~s.M[k].reshape(-1))
    agree, cancel = off[:2], off[2]
    votes = []
    for i in range(3):
        g = {name: np.zeros(m.shape) for name, m in s.M.items()}
        g[k].reshape(-1)[agree] = 1.0  # all three push these two the same way
        g[k].reshape(-1)[cancel] = 2.0 if i == 0 else -1.0  # 2 - 1 - 1 = 0 in sum
        votes.append(g)
    before = {n: m.copy() for n, m in s.M.items()}
    s.aggregate_train(1, [_vote_reply(s, 100 + i, votes[i]) for i in range(3)])
    assert rec.rounds[1]["clients"] == 3, rec.rounds[1].get("rejected")
    grown = np.flatnonzero(s.M[k].reshape(-1) & ~before[k].reshape(-1))
    assert sorted(grown) == sorted(agree)  # the cancelled one did not grow
    dropped = np.flatnonzero(before[k].reshape(-1) & ~s.M[k].reshape(-1))
    kept = np.abs(s.W[k].reshape(-1)[before[k].reshape(-1)])
    assert len(dropped) == 2 and np.all(np.abs(s.W[k].reshape(-1)[dropped]) <= np.sort(kept)[2])
    assert np.all(s.W[k].reshape(-1)[agree] == 0)  # grown by the server: from zero
    assert int(s.M[k].sum()) == int(before[k].sum()) and np.array_equal(s.M["2.weight"],
                                                                          before["2.weight"])
    assert rec.rounds[1]["mask_changes"] == 2


def test_growth_votes_are_checked_against_the_mask_sent_and_the_round():
    s, rec, grid = _strategy(readjustment="server")
    s.configure_train(1, ArrayRecord(), config(), grid)
    k = "0.weight"
    zero = {name: np.zeros(m.shape) for name, m in s.M.items()}
    on_kept = {**zero, k: np.where(s.M[k], 1.0, 0.0)}  # votes for positions already kept
    too_many = {**zero, k: np.where(s.M[k], 0.0, 1.0)}  # every position outside the mask
    bad = {**zero, k: np.zeros(s.M[k].shape)}
    bad[k].reshape(-1)[np.flatnonzero(~s.M[k].reshape(-1))[0]] = np.nan
    s.aggregate_train(1, [_client_reply(s, 100), _vote_reply(s, 101, on_kept),
                          _vote_reply(s, 102, too_many)])
    rejected = rec.rounds[1]["rejected"]
    assert "undecodable growth votes" in rejected["0"]  # a vote round's reply without votes
    assert "on kept positions" in rejected["1"] and "round allows" in rejected["2"]
    s.configure_train(2, ArrayRecord(), config(), grid)  # 0.025 of a layer: still votes
    s.aggregate_train(2, [_vote_reply(s, 100, bad, rnd=2)])
    assert "non-finite" in rec.rounds[2]["rejected"]["0"]
    s2, rec2, grid2 = _strategy(readjustment="server", readjust_interval=2)
    s2.configure_train(1, ArrayRecord(), config(), grid2)  # round 1: no readjustment, no votes
    s2.aggregate_train(1, [_vote_reply(s2, 100, zero), _client_reply(s2, 101)])
    assert "asked for none" in rec2.rounds[1]["rejected"]["0"] and rec2.rounds[1]["clients"] == 1


def test_features_scope_scores_updates_without_the_output_layer():
    from fedprune_flwr.strategies.fedprune import head_keys

    s, rec, grid = _strategy(cgsv_scope="features")
    assert head_keys(s.W) == ["2.weight", "2.bias"] and s.unscored == {"2.weight", "2.bias"}
    s.configure_train(1, ArrayRecord(), config(), grid)
    replies = [_client_reply(s, 100 + i, shift=0.1 * (i + 1)) for i in range(3)]
    from fedprune_flwr.strategies.replies import check_replies

    ok, _ = check_replies(replies, 1, sent={100, 101, 102}, client_of=s.directory.client_of,
                          payload=s.decode_payload)
    flat = s._flat([s._update(r) for r in ok])
    head_start = s.W["0.weight"].size + s.W["0.bias"].size
    for idx in flat.indices:  # positions of the first layer only: the head is not scored
        assert idx.size and idx.max() < head_start
    with pytest.raises(ValueError, match="cgsv_scope"):
        _strategy(cgsv_scope="head")


def test_cgsv_classes_rule_scores_within_the_classes_the_output_bias_update_raises():
    s, rec, grid = _strategy(cgsv_rule="classes")
    assert s.class_bias == "2.bias" and "within classes" in s.weighting.describe()
    for rnd in (1, 2, 3):
        s.configure_train(rnd, ArrayRecord(), config(), grid)
        s.aggregate_train(rnd, [_client_reply(s, 100, shift=0.1, n=50, rnd=rnd),
                                _client_reply(s, 101, shift=0.12, n=150, rnd=rnd),
                                _client_reply(s, 102, shift=-0.3, n=100, rnd=rnd)])
    ok = s.last_accepted
    flat = s._flat([s._update(r) for r in ok])
    # the pushes are the clients' bias updates (every bias entry moved by its shift)
    shifts = {100: 0.1, 101: 0.12, 102: -0.3}
    for r, push in zip(ok, flat.pushes, strict=True):
        assert push.shape == s.W["2.bias"].shape
        assert np.allclose(push, push[0]) and np.sign(push[0]) == np.sign(shifts[r.node])
    c, lam = rec.rounds[3]["contributions"], rec.rounds[3]["lambda_t"]
    assert sum(v["weight"] for v in c.values()) == pytest.approx(1.0)
    w = {node: c[str(s.directory.client_of[node])]["weight"] for node in (100, 101, 102)}
    assert w[102] < lam * 100 / 300 + 1e-3  # opposed: little beyond its data-size share
    with pytest.raises(ValueError, match="rule"):
        _strategy(cgsv_rule="softmax")
    from fedprune_flwr.strategies.feddst import StaticSparse

    with pytest.raises(ValueError, match="class_bias"):  # a matrix is no bias
        StaticSparse(recorder=RoundRecorder(None, {}, 10), initial_state=s.W,
                     prunable=["0.weight"], num_rounds=10, class_bias="0.weight")


def test_cgsv_classes_rule_on_a_head_without_bias_is_the_round_wide_rule_with_a_warning(caplog):
    import logging

    state = {"0.weight": np.ones((4, 3), np.float32), "1.weight": np.ones((2, 4), np.float32)}
    with caplog.at_level(logging.WARNING):
        s = FedPrune(recorder=RoundRecorder(None, {}, 10), initial_state=state,
                     prunable=list(state), num_rounds=10, cgsv_rule="classes")
    assert s.class_bias is None and s.weighting.contributions.rule == "scores"
    assert "output layer has none" in caplog.text
