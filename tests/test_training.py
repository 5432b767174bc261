import torch

from fedprune.data import load_dataset
from fedprune.data.loader import TensorLoader
from fedprune.models import build_model
from fedprune.training import TrainConfig, evaluate, train


def _small_loader(n=256, seed=0):
    d = load_dataset("mnist-mini")
    return TensorLoader(d.x_train[:n], d.y_train[:n], d.mean, d.std, 32, shuffle=True, seed=seed)


def test_loss_falls_on_a_small_batch():
    model = build_model("cnn-mnist", (1, 28, 28), 10, seed=0)
    loader = _small_loader()
    before, _, _ = evaluate(model, loader)
    train(model, loader, TrainConfig(epochs=3, lr=0.01, momentum=0.9), seed=0)
    after, acc, n = evaluate(model, loader)
    assert n == 256 and after < 0.5 * before and acc > 0.6


def test_masked_training_keeps_weights_and_momentum_zero_outside_the_mask():
    model = build_model("cnn-mnist", (1, 28, 28), 10, seed=0)
    w = dict(model.named_parameters())["fcs.0.weight"]
    mask = (torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    masks = {"fcs.0.weight": mask}
    seen = {}

    def capture(state):
        seen["buf"] = state.optimizer.state[w]["momentum_buffer"].clone()

    train(model, _small_loader(), TrainConfig(epochs=1, lr=0.01, momentum=0.9, weight_decay=1e-3),
          masks=masks, on_step=capture, seed=0)
    assert torch.all(w.detach()[mask == 0] == 0)
    assert torch.all(seen["buf"][mask == 0] == 0)
    assert torch.count_nonzero(w.detach()[mask == 1]) == int(mask.sum())


def test_training_is_deterministic_given_seed():
    outs = []
    for _ in range(2):
        model = build_model("mlp", (1, 28, 28), 10, seed=1)
        train(model, _small_loader(seed=2), TrainConfig(epochs=1), seed=3)
        outs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_local_training_raises_the_output_bias_of_the_classes_a_client_holds():
    """What cgsv-rule='classes' reads (fedprune.contribution.class_pushes): after masked
    local SGD on two classes, the positive part of the output-bias update sits on them."""
    import numpy as np

    from fedprune.contribution import class_pushes

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(20, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10))
    x = torch.randn(128, 20)
    y = torch.where(torch.arange(128) % 2 == 0, 3, 7)
    before = model[3].bias.detach().clone()
    train(model, [(x[i:i + 16], y[i:i + 16]) for i in range(0, 128, 16)],
          TrainConfig(epochs=1, lr=0.05, momentum=0.9), seed=0)
    push = class_pushes([(model[3].bias.detach() - before).numpy()])[0]
    assert set(np.flatnonzero(push > 0.05)) == {3, 7} and push[[3, 7]].sum() > 0.95
