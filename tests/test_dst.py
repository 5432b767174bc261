import math

import numpy as np
import pytest
import torch

from fedprune.dst import apply_readjustment, readjust_fraction, readjust_hook, readjust_layer
from fedprune.models import build_model
from fedprune.training import TrainConfig, train


def test_schedule_is_cosine_and_not_squared():
    assert readjust_fraction(10, 0.4, 10, 40) == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)))
    assert readjust_fraction(11, 0.4, 10, 40) == 0.0  # not a readjustment round
    assert readjust_fraction(50, 0.4, 10, 40) == 0.0  # after T_end
    assert readjust_fraction(40, 0.4, 10, 40) == pytest.approx(0.0)
    assert readjust_fraction(2, 0.4, 2, 40) > 0.39  # alpha0 * decay, not alpha0 * alpha0 * decay


def test_readjust_drops_smallest_grows_largest_gradient_and_keeps_count():
    w = torch.tensor([0.5, -0.1, 2.0, 0.05, 0.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    grad = torch.tensor([9.0, 9.0, 9.0, 9.0, 0.1, -3.0, 0.2, 2.0])
    new, dropped, grown = readjust_layer(w, grad, mask, alpha=0.5)
    assert dropped.tolist() == [False, True, False, True, False, False, False, False]
    assert grown.tolist() == [False, False, False, False, False, True, False, True]
    assert int(new.sum()) == int(mask.sum()) and not (dropped & grown).any()
    # random growth (SET) also keeps the count and only grows previously inactive positions
    g = torch.Generator().manual_seed(0)
    new_r, _, grown_r = readjust_layer(w, None, mask, 0.5, "random", g)
    assert int(new_r.sum()) == 4 and not (grown_r & mask).any()


def test_apply_readjustment_zeros_weights_and_momentum_at_moved_positions():
    lin = torch.nn.Linear(6, 4, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    mask = (torch.arange(24).reshape(4, 6) % 2 == 0).float()
    lin.weight.data *= mask
    lin.weight.grad = torch.randn(4, 6) * mask
    opt.step()
    masks = {"weight": mask.clone()}
    grads = {"weight": torch.randn(4, 6)}
    rep = apply_readjustment(lin, opt, masks, grads, alpha=0.25)
    new = masks["weight"].bool()
    changed = new ^ mask.bool()
    assert int(new.sum()) == int(mask.sum()) and rep.moved["weight"] == 3
    assert torch.all(lin.weight.data[changed] == 0)
    assert torch.all(opt.state[lin.weight]["momentum_buffer"][changed] == 0)


def test_hook_readjusts_part_way_so_regrown_weights_get_trained():
    from fedprune.data import load_dataset
    from fedprune.data.loader import TensorLoader
    from fedprune.masks import layer_budgets, magnitude_masks, prunable_names

    d = load_dataset("mnist-mini")
    loader = TensorLoader(d.x_train[:320], d.y_train[:320], d.mean, d.std, 32, True, 0)
    model = build_model("cnn-mnist", (1, 28, 28), 10, seed=0)
    names = prunable_names(model)
    params = dict(model.named_parameters())
    budgets = layer_budgets({k: tuple(params[k].shape) for k in names}, 0.2)
    masks = {k: m.float() for k, m in magnitude_masks({k: params[k] for k in names}, budgets).items()}
    before = {k: m.clone() for k, m in masks.items()}
    reports = []
    train(model, loader, TrainConfig(epochs=1, lr=0.01), masks=masks,
          on_step=readjust_hook(0.3, 0.5, seed=1, report=reports), seed=0)
    assert len(reports) == 1
    for k in names:
        assert int(masks[k].sum()) == budgets[k]
        grown = masks[k].bool() & ~before[k].bool()
        assert int(grown.sum()) == reports[0].moved[k]
        if budgets[k] == params[k].numel():  # ERK made this layer dense: nothing can move
            assert reports[0].moved[k] == 0
            continue
        assert reports[0].moved[k] > 0
        # trained for the second half of the epoch: regrown weights are no longer zero
        assert torch.count_nonzero(params[k].detach()[grown]) > 0.9 * int(grown.sum())
        assert torch.all(params[k].detach()[~masks[k].bool()] == 0)
    assert np.isclose(sum(int(m.sum()) for m in masks.values()), sum(budgets.values()))


def test_growth_votes_pick_the_largest_summed_gradients_outside_the_mask():
    from fedprune.dst import growth_votes

    mask = torch.tensor([[1, 0, 0], [0, 1, 0]], dtype=torch.float32)
    g = torch.tensor([[9.0, -3.0, 0.5], [2.0, 8.0, 0.0]])
    (votes, values), = growth_votes({"w": g}, {"w": mask}, alpha=0.5).values()
    # ceil(0.5 * 2 kept) = 1 vote: the largest |g| among the inactive positions (-3)
    assert votes.tolist() == [[False, True, False], [False, False, False]]
    assert values.tolist() == [[0.0, -3.0, 0.0], [0.0, 0.0, 0.0]]
    (votes, _), = growth_votes({"w": g}, {"w": mask}, alpha=1.0).values()
    assert votes.sum() == 2 and not (votes & mask.bool()).any()
    # a zero gradient is no vote; a tensor without gradients (frozen) votes for nothing
    (votes, _), = growth_votes({"w": torch.zeros(2, 3)}, {"w": mask}, alpha=1.0).values()
    assert not votes.any()
    assert not growth_votes({}, {"w": mask}, alpha=1.0)["w"][0].any()


def test_consensus_move_keeps_the_count():
    from fedprune.dst import consensus_move

    w = np.array([0.5, -0.1, 0.3, 0.0, 0.0, 0.0])
    m = np.array([True, True, True, False, False, False])
    g = np.array([0.0, 0.0, 0.0, 0.2, -0.9, 0.0])
    out = consensus_move(w, m, g, k=3)  # only two candidates with a gradient
    assert out.tolist() == [True, False, False, True, True, False]
    assert consensus_move(w, m, np.zeros(6), k=3).tolist() == m.tolist()
