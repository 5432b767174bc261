"""Behaviour that defines each baseline (unit level)."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedprune import wire
from fedprune.config import RunConfig
from fedprune.masks import prunable_names
from fedprune.models import model_from_config, num_parameters
from fedprune.training import TrainConfig, train
from fedprune_flwr.strategies.fedprune import FedPruneCore
from fedprune_flwr.strategies.flower_baselines import FlowerFedAvgM, FlowerFedProx
from fedprune_flwr.strategies.parts import DataSizeWeighting, DynamicMask
from fedprune_flwr.strategies.results import RoundRecorder
from fedprune_flwr.strategies.server_app import STRATEGIES, build_strategy
from fedprune_lab.experiments import load_experiment

from conftest import ROOT
from flower_helpers import FakeGrid, config, reply


def test_fedprox_gradient_includes_the_proximal_term():
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    batches = [(x, y), (x, y)]
    start = torch.nn.Linear(5, 3).state_dict()

    def two_steps(mu):
        lin = torch.nn.Linear(5, 3)
        lin.load_state_dict(start)
        firsts = []
        train(lin, batches, TrainConfig(epochs=1, lr=0.1, momentum=0.0, proximal_mu=mu),
              on_step=lambda s: firsts.append(s.model.weight.detach().clone()))
        return firsts[0], lin.weight.detach().clone()

    w1_plain, w2_plain = two_steps(0.0)
    w1_prox, w2_prox = two_steps(2.0)
    w0 = start["weight"]
    assert torch.allclose(w1_plain, w1_prox)  # the term's gradient is 0 at w_global
    # step 2: the extra gradient mu * (w1 - w0) moves the weights by -lr * mu * (w1 - w0)
    assert torch.allclose(w2_prox, w2_plain - 0.1 * 2.0 * (w1_plain - w0), atol=1e-6)


def test_fedprox_sends_proximal_mu_to_clients():
    s = FlowerFedProx(recorder=RoundRecorder(None, {}, 2), proximal_mu=0.05, fraction_train=1.0,
                      min_train_nodes=2, min_available_nodes=2)
    msgs = list(s.configure_train(1, ArrayRecord({"w": Array(np.zeros(3, np.float32))}),
                                  config(), FakeGrid(3)))
    assert len(msgs) == 3 and all(m.content["config"]["proximal-mu"] == 0.05 for m in msgs)


def test_fedavgm_applies_server_momentum():
    s = FlowerFedAvgM(recorder=RoundRecorder(None, {}, 3), server_learning_rate=1.0,
                      server_momentum=0.5, fraction_train=1.0, min_train_nodes=2,
                      min_available_nodes=2)
    grid = FakeGrid(2)
    w = np.zeros(2, np.float32)
    expected_v = None
    for rnd, client_vals in [(1, (1.0, 3.0)), (2, (4.0, 4.0))]:
        s.configure_train(rnd, ArrayRecord({"w": Array(w)}), config(), grid)
        replies = [reply(100 + i, {"w": np.full(2, v, np.float32)}, {wire.NUM_EXAMPLES: 10},
                         rnd=rnd) for i, v in enumerate(client_vals)]
        arrays, _ = s.aggregate_train(rnd, replies)
        g = w - np.mean(client_vals)  # pseudo-gradient
        expected_v = g if expected_v is None else 0.5 * expected_v + g
        w = (w - expected_v).astype(np.float32)
        assert np.allclose(arrays["w"].numpy(), w)
    assert np.allclose(w, [5.0, 5.0])  # round 1: 2.0; round 2: v = 0.5*(-2) + (-2) = -3


def test_static_masks_keep_budget_and_differ():
    cfg = RunConfig.from_mapping({"strategy": "static-random", "sparsity": 0.8})
    model = model_from_config(cfg, (1, 28, 28), 10)
    rnd = build_strategy(cfg, RoundRecorder(None, {}, 2), model)
    mag = build_strategy(RunConfig.from_mapping({"strategy": "static-magnitude"}),
                         RoundRecorder(None, {}, 2), model)
    assert rnd.budgets == mag.budgets and not rnd.mask_policy.moves and not mag.residuals
    assert {k: int(m.sum()) for k, m in rnd.M.items()} == rnd.budgets
    assert any(not np.array_equal(rnd.M[k], mag.M[k]) for k in rnd.M)
    w = {k: np.abs(v) for k, v in mag.W.items()}
    k = "fcs.0.weight"  # magnitude keeps larger weights than random on average
    assert w[k][mag.M[k]].mean() > 1.5 * np.abs(rnd.W[k][rnd.M[k]]).mean()


def test_feddst_is_the_sparse_core_with_a_dynamic_mask_and_data_size_weights():
    s = build_strategy(RunConfig.from_mapping({"strategy": "feddst"}), RoundRecorder(None, {}, 2),
                       model_from_config(RunConfig(), (1, 28, 28), 10))
    assert isinstance(s.mask_policy, DynamicMask) and isinstance(s.weighting, DataSizeWeighting)
    assert not s.residuals and s.update_filter is None and s.grown_average == "holders"


def test_no_baseline_inherits_fedprune():
    """A change to FedPrune's class cannot change a baseline: only FedPrune and its own
    partial-training variant are FedPrune servers; every other sparse method is the
    neutral core with parts of its own."""
    model = model_from_config(RunConfig(), (1, 28, 28), 10)
    fedprune_family = {"fedprune", "fedbt-prune"}
    for name in STRATEGIES:
        s = build_strategy(RunConfig.from_mapping({"strategy": name}), RoundRecorder(None, {}, 2),
                           model)
        assert isinstance(s, FedPruneCore) == (name in fedprune_family), name


def test_flowers_strategies_are_held_not_inherited():
    """Flower's strategies are composed: no strategy we build subclasses one of Flower's
    concrete strategies (only its abstract ``Strategy``), and each Flower baseline
    holds an instance of the Flower class it names."""
    import flwr.serverapp.strategy as fs

    concrete = tuple(c for c in vars(fs).values()
                     if isinstance(c, type) and issubclass(c, fs.Strategy) and c is not fs.Strategy)
    model = model_from_config(RunConfig(), (1, 28, 28), 10)
    held = 0
    for name in STRATEGIES:
        s = build_strategy(RunConfig.from_mapping({"strategy": name}), RoundRecorder(None, {}, 2),
                           model)
        assert not isinstance(s, concrete), name
        inner = getattr(s, "inner", None)
        if inner is not None:
            assert type(inner) is type(s).flower and isinstance(inner, concrete), name
            held += 1
    assert held == 5  # flower-fedavg, fedavgm, fedprox, fedmedian, krum


def test_small_dense_matches_fedprune_kept_parameters():
    full = model_from_config(RunConfig(), (1, 28, 28), 10)
    small = model_from_config(RunConfig.from_mapping({"strategy": "small-dense"}), (1, 28, 28), 10)
    s = build_strategy(RunConfig.from_mapping({"strategy": "fedprune"}), RoundRecorder(None, {}, 2),
                       full)
    kept = sum(s.budgets.values()) + sum(
        p.numel() for n, p in full.named_parameters() if n not in prunable_names(full))
    assert abs(num_parameters(small) - kept) < 0.03 * kept
    assert type(small) is type(full)


def test_every_conf_file_loads_and_names_a_registered_strategy():
    files = sorted((ROOT / "conf").glob("*.yaml"))
    assert len(files) >= 15
    for f in files:
        exp = load_experiment(f)
        assert exp.overrides.get("strategy", "fedavg") in STRATEGIES, f


def test_conf_errors_name_the_file(tmp_path):
    from fedprune.config import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: fedprune\nsparsty: 0.9\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown run-config key 'sparsty'"):
        load_experiment(bad)


def _prunefl(n_nodes=3, interval=2):
    from fedprune_flwr.strategies.prunefl import PruneFL

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    rec = RoundRecorder(None, {}, 10)
    s = PruneFL(recorder=rec, initial_state=wire.state_to_numpy(m.state_dict()),
                prunable=prunable_names(m), num_rounds=10, sparsity=0.8, reconfig_interval=interval,
                fraction_train=1.0, min_train_clients=2, seed=0)
    return s, rec, FakeGrid(n_nodes)


def test_prunefl_initial_pruning_on_one_client_then_magnitude_mask():
    from fedprune import codec
    from fedprune_flwr.strategies.prunefl import INITIAL_PRUNE_RATE

    s, rec, grid = _prunefl()
    shared = config()  # Flower passes one ConfigRecord to every round
    msgs = list(s.configure_train(1, ArrayRecord(), shared, grid))
    assert len(msgs) == 1  # one client trains the dense model
    sent = msgs[0].content["config"]
    assert sent[wire.PERSONAL_PRUNE] == "prunefl-initial" and sent[wire.LOCAL_EPOCHS] == 10
    assert sent[wire.PRUNE_RATE] == INITIAL_PRUNE_RATE
    assert sent[wire.TARGET_DENSITY] == pytest.approx(0.2)
    assert wire.PERSONAL_PRUNE not in shared  # not carried into later rounds
    rng = np.random.default_rng(0)
    trained = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in s.W.items()}
    # a client that pruned below the budgets is refused
    few = {k: np.arange(v.size).reshape(v.shape) < s.budgets[k] - 1 for k, v in s.M.items()}
    s.aggregate_train(1, [reply(msgs[0].metadata.dst_node_id, codec.encode_state(trained, few),
                                {wire.NUM_EXAMPLES: 10})])
    (why,) = rec.rounds[1]["rejected"].values()
    assert "below the budgets" in why and not s.initial_done
    # a client on its way to the budgets: the server keeps the largest of what it kept
    half = {k: np.arange(v.size).reshape(v.shape) % 2 == 0 for k, v in s.M.items()}
    pruned = {k: np.where(half[k], v, 0).astype(np.float32) if k in half else v
              for k, v in trained.items()}
    msgs = list(s.configure_train(2, ArrayRecord(), shared, grid))
    s.aggregate_train(2, [reply(msgs[0].metadata.dst_node_id, codec.encode_state(pruned, half),
                                {wire.NUM_EXAMPLES: 10}, rnd=2)])
    assert s.initial_done
    for k, m in s.M.items():
        assert int(m.sum()) == s.budgets[k] and not (m & ~half[k]).any()
        assert np.abs(trained[k][m]).min() >= np.abs(trained[k][half[k] & ~m]).max()  # magnitude
        assert np.all(s.W[k][~m] == 0) and np.array_equal(s.W[k][m], trained[k][m])


def test_prunefl_initial_client_prunes_step_by_step_and_fine_tunes():
    c, _, _ = _client(threshold_acc=0.0)
    x, y = c.trainloader[0]
    c.trainloader = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]
    cfg = {wire.PERSONAL_PRUNE: "prunefl-initial", wire.PRUNE_RATE: 0.3,
           wire.TARGET_DENSITY: 0.25, wire.DENSITY_DISTRIBUTION: "uniform",
           wire.LOCAL_EPOCHS: 6, wire.LR: 0.1}
    kept = []
    c.on_step = lambda st: kept.append(int(c.masks["0.weight"].bool().sum()))
    params, n, m = c.fit(c.get_parameters({}), cfg)
    # 48 weights, 30% of the kept ones per step, down to the 12-weight budget
    assert sorted(set(kept), reverse=True) == [48, 33, 23, 16, 12] and m[wire.PRUNED] == 4
    assert kept[-16:] == [12] * 16  # the last two epochs fine-tune the pruned model
    w = params[0]
    mask = c.masks["0.weight"].bool().numpy()
    assert np.all(w[~mask] == 0) and np.all(w[mask] != 0)
    assert n == 64 and m[wire.LOSS_LAST] < m[wire.LOSS_FIRST]


def test_prunefl_reconfiguration_keeps_the_top_squared_gradient_positions():
    from fedprune import codec

    s, rec, grid = _prunefl(interval=2)
    s.initial_done = True
    shared = config()  # the same record every round, as Flower passes it
    msgs = list(s.configure_train(2, ArrayRecord(), shared, grid))
    assert msgs[0].content["config"][wire.PRUNEFL_SQGRAD] is True
    rng = np.random.default_rng(1)
    sq = [{k: rng.random(s.shapes[k]).astype(np.float32) for k in s.prunable} for _ in range(2)]
    ns = [10, 30]
    before = {k: v.copy() for k, v in s.W.items()}
    replies = []
    for i, (g, n) in enumerate(zip(sq, ns, strict=True)):
        arrays = codec.encode_state(s.sparse_state(), s.M)
        arrays.update({k + wire.SQGRAD_SUFFIX: v for k, v in g.items()})
        replies.append(reply(100 + i, arrays, {wire.NUM_EXAMPLES: n}, rnd=2))
    old_mask = {k: m.copy() for k, m in s.M.items()}
    s.aggregate_train(2, replies)
    assert rec.rounds[2]["bytes_up"] > sum(v.nbytes for g in sq for v in g.values())  # counted
    for k in s.prunable:
        imp = (10 * sq[0][k].astype(np.float64) + 30 * sq[1][k]) / 40
        top = np.argsort(-imp.reshape(-1), kind="stable")[: s.budgets[k]]
        assert set(np.flatnonzero(s.M[k].reshape(-1))) == set(top)
        # a weight that re-enters the mask resumes from the value it was pruned at
        back = s.M[k] & ~old_mask[k]
        assert back.any() and np.array_equal(s.W[k][back], before[k][back])
        assert np.array_equal(s.sparse_state()[k][back], before[k][back])
    # the next, non-reconfiguration, round does not ask for gradients, and rejects them
    msgs = list(s.configure_train(3, ArrayRecord(), shared, grid))
    assert msgs[0].content["config"][wire.PRUNEFL_SQGRAD] is False
    arrays = codec.encode_state(s.sparse_state(), s.M)
    arrays.update({k + wire.SQGRAD_SUFFIX: v for k, v in sq[0].items()})
    s.aggregate_train(3, [reply(100, arrays, {wire.NUM_EXAMPLES: 5}, rnd=3)])
    assert "did not ask" in rec.rounds[3]["rejected"]["0"]


def test_bandit_picks_the_arm_with_the_best_reward_after_enough_pulls():
    from fedprune.bandit import UCB1

    rng = np.random.default_rng(0)
    means = [0.2, 0.8, 0.5]
    b = UCB1(3, c=0.5)
    picks = []
    for _ in range(300):
        a = b.select()
        picks.append(a)
        b.update(a, means[a] + 0.1 * rng.standard_normal())
    assert picks[:3] == [0, 1, 2]  # every arm once first
    assert b.best() == 1 and picks[-50:].count(1) > 40


def _client(threshold_acc):
    """A FedPruneClient on a tiny separable task, with a dense mask on one layer."""
    from fedprune_flwr.clients.numpy_client import FedPruneClient

    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    c = FedPruneClient(model, [(x, y)], [(x, y)], initial_state=init)
    c.masks = {"0.weight": torch.ones(8, 6, dtype=torch.bool)}
    cfg = {wire.PERSONAL_PRUNE: "lotteryfl", wire.PRUNE_RATE: 0.25, wire.TARGET_DENSITY: 0.5,
           wire.DENSITY_DISTRIBUTION: "uniform", wire.LOTTERY_THRESHOLD: threshold_acc,
           wire.LOCAL_EPOCHS: 1}
    return c, cfg, init


def test_lotteryfl_mask_shrinks_only_when_the_threshold_is_passed():
    c, cfg, _ = _client(threshold_acc=1.01)  # unreachable
    _, _, m = c.fit(c.get_parameters({}), cfg)
    assert m[wire.PRUNED] == 0 and int(c.masks["0.weight"].sum()) == 48
    c, cfg, init = _client(threshold_acc=0.0)  # always passed
    received = c.get_parameters({})
    _, _, m = c.fit(received, {**cfg, wire.LOCAL_EPOCHS: 1, wire.LR: 1e-12})
    mask = c.masks["0.weight"].bool()
    assert m[wire.PRUNED] == 1 and int(mask.sum()) == 36  # 25% of 48 removed
    # the survivors are the largest received weights, rewound to the initial model
    w_recv = torch.from_numpy(received[0])
    assert w_recv.abs()[mask].min() >= w_recv.abs()[~mask].max()
    assert torch.allclose(dict(c.model.named_parameters())["0.weight"].detach()[mask],
                          init["0.weight"][mask], atol=1e-6)
    # never below the target density
    for _ in range(5):
        c.fit(c.get_parameters({}), cfg)
    assert int(c.masks["0.weight"].bool().sum()) == 24


def test_personal_masks_may_only_shrink():
    from fedprune import codec
    from fedprune_flwr.strategies.personalized import LotteryFL

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    rec = RoundRecorder(None, {}, 5)
    s = LotteryFL(recorder=rec, initial_state=wire.state_to_numpy(m.state_dict()),
                  prunable=prunable_names(m), num_rounds=5, fraction_train=1.0,
                  min_train_clients=2, seed=0)
    grid = FakeGrid(3)
    msgs = list(s.configure_train(1, ArrayRecord(), config(), grid))
    assert msgs[0].content["config"][wire.PERSONAL_PRUNE] == "lotteryfl"
    state = {k: v.copy() for k, v in s.W.items()}
    # one pruning step: prune-rate 0.2 of the kept weights; more in one round is refused
    smaller = {k: np.arange(v.size).reshape(v.shape) % 5 != 0 for k, v in s.W.items()
               if k in s.prunable}
    half = {k: np.arange(v.size).reshape(v.shape) % 2 == 0 for k, v in s.W.items()
            if k in s.prunable}
    full = {k: np.ones(s.shapes[k], bool) for k in s.prunable}
    s.aggregate_train(1, [reply(100, codec.encode_state(state, smaller), {wire.NUM_EXAMPLES: 5}),
                          reply(101, codec.encode_state(state, full), {wire.NUM_EXAMPLES: 5}),
                          reply(102, codec.encode_state(state, half), {wire.NUM_EXAMPLES: 5})])
    assert s.client_masks[0]["0.weight"].sum() == smaller["0.weight"].sum()
    assert "dropped 300 of the 600" in rec.rounds[1]["rejected"]["2"] and 2 not in s.client_masks
    # round 2: client 0 was sent its half mask; a full mask back would grow it
    s.configure_train(2, ArrayRecord(), config(), grid)
    s.aggregate_train(2, [reply(100, codec.encode_state(state, full), {wire.NUM_EXAMPLES: 5},
                                rnd=2)])
    assert "exceed" in rec.rounds[2]["rejected"]["0"] or "grew" in rec.rounds[2]["rejected"]["0"]


def test_federation_client_resources_are_read_checked_and_reach_the_study_job(tmp_path):
    from fedprune.config import ConfigError
    from fedprune_lab.experiments import load_study

    f = tmp_path / "gpu.yaml"
    f.write_text("strategy: fedprune\ndevice: auto\nfederation:\n  num-supernodes: 4\n"
                 "  client-resources-num-gpus: 0.25\n")
    exp = load_experiment(f)
    assert exp.client_resources == {"num_cpus": 1.0, "num_gpus": 0.25}
    (job,) = load_study(f)
    assert job.federation["client-resources-num-gpus"] == 0.25 and job.num_supernodes == 4
    f.write_text("federation:\n  client-resources-num-gpus: -1\n")
    with pytest.raises(ConfigError, match="gpu.yaml: client resources"):
        load_experiment(f)
    f.write_text("federation:\n  client-gpus: 1\n")
    with pytest.raises(ConfigError, match="unknown federation keys"):
        load_experiment(f)


def test_flower_strategies_record_which_accepted_clients_attacked_or_were_noisy():
    from flwr.app import Array, ArrayRecord

    from fedprune_flwr.strategies.flower_baselines import FlowerFedMedian

    s = FlowerFedMedian(recorder=RoundRecorder(None, {}, 2), fraction_train=1.0,
                        min_train_nodes=3, min_available_nodes=3)
    s.configure_train(1, ArrayRecord({"w": Array(np.zeros(2, np.float32))}), config(), FakeGrid(3))
    extra = [{wire.ATTACKER: 1, wire.NOISE_RATE: 0.0}, {wire.ATTACKER: 0, wire.NOISE_RATE: 0.5},
             {wire.ATTACKER: 0, wire.NOISE_RATE: 0.0}]
    s.aggregate_train(1, [reply(100 + i, {"w": np.full(2, i, np.float32)},
                                {wire.NUM_EXAMPLES: 10, wire.CLIENT_ID: i, **e})
                          for i, e in enumerate(extra)])
    assert s.recorder.rounds[1]["attacker_clients"] == [0]
    assert s.recorder.rounds[1]["noisy_clients"] == [1] and s.recorder.rounds[1]["clients"] == 3
