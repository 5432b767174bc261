import pytest
import torch

from fedprune.models import build_model, max_pool_s1, model_names


@pytest.mark.parametrize(
    "name, shape", [("cnn-mnist", (1, 28, 28)), ("mlp", (1, 28, 28)), ("cnn-cifar10", (3, 32, 32)),
                    ("resnet18", (3, 32, 32)), ("cnn-mnist", (3, 32, 32))],
)
def test_output_shape(name, shape):
    m = build_model(name, shape, 7)
    assert m(torch.zeros(2, *shape)).shape == (2, 7)


def test_feddst_cnn_has_262k_parameters():
    m = build_model("cnn-mnist", (1, 28, 28), 10)
    assert sum(p.numel() for p in m.parameters()) == 261_840


def test_seeded_build_is_reproducible_and_registry_errors():
    a = build_model("mlp", (1, 28, 28), 10, seed=5).state_dict()
    b = build_model("mlp", (1, 28, 28), 10, seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="valid names"):
        build_model("vgg", (1, 28, 28), 10)
    assert {"cnn-mnist", "cnn-cifar10", "resnet18", "mlp"} <= set(model_names())


# -- the stride-1 max-pool of the FedDST CNNs ----------------------------------------


def _native(x, k):
    return torch.nn.functional.max_pool2d(x, k, stride=1)


@pytest.mark.parametrize("shape, k", [((4, 10, 24, 24), 3), ((3, 20, 16, 16), 3), ((2, 3, 9, 7), 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_s1_matches_the_native_pool_bit_for_bit(shape, k, ties):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    with torch.no_grad():  # the shifted-slices path
        assert torch.equal(max_pool_s1(x, k), _native(x, k))
    # the autograd path: same values and, for ties too, the same input gradient
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    up = torch.randn(_native(x, k).shape, generator=g)
    ya, yb = max_pool_s1(a, k), _native(b, k)
    assert torch.equal(ya, yb) and ya.is_contiguous()
    (ya * up).sum().backward()
    (yb * up).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_max_pool_s1_input_smaller_than_the_window_is_torchs_error():
    with pytest.raises(RuntimeError):
        max_pool_s1(torch.zeros(1, 1, 2, 5), 3)


def test_cnn_training_and_evaluation_are_unchanged_by_the_fast_pool(monkeypatch):
    """Ten SGD steps and an evaluation with the fast pool and with PyTorch's own give
    identical parameters and logits: stored results stay reproducible."""
    import fedprune.models as models

    def run():
        model = build_model("cnn-mnist", (1, 28, 28), 10, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        for _ in range(10):
            x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        with torch.no_grad():
            logits = model(torch.randn(64, 1, 28, 28, generator=g))
        return [p.detach().clone() for p in model.parameters()], logits

    fast_params, fast_logits = run()
    monkeypatch.setattr(models, "max_pool_s1", _native)
    native_params, native_logits = run()
    assert all(torch.equal(p, q) for p, q in zip(fast_params, native_params, strict=True))
    assert torch.equal(fast_logits, native_logits)
