"""Client training FLOPs of a (masked) model, counted per layer.

The count follows the convention of the sparse-training literature (RigL,
FedDST): a multiply-accumulate is 2 FLOPs; one training example costs its
forward pass plus a backward pass of twice the forward (gradients with
respect to the inputs and to the weights), so 3x forward. Only the weight
matrices of ``Conv*d`` and ``Linear`` layers are counted (they are all but a
few percent of the work in the models here; attention's activation-by-
activation products, normalisation, pooling and activations are not).
A masked layer's cost is scaled by its density, which is what sparse kernels
would pay; PyTorch's dense kernels, which fedprune uses, take the same time
whatever the mask (see ``benchmarks/step_time.py``).

Partial training (FedBT, :mod:`fedprune.partial`) splits the backward pass
(:func:`partial_training_flops`): per layer, forward 1x; the gradient with
respect to its input 1x only when the layer runs at or after the first
trainable tensor (the backward pass goes from the loss down to the lowest
trained layer and no further); the gradient with respect to its weight 1x
only when that weight is trained. With every tensor trainable this is the
3x above.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn

TRAIN_FACTOR = 3  # forward + backward (inputs and weights)


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of one forward pass of one example, per weight tensor name.

    ``input_shape`` excludes the batch dimension (e.g. ``(1, 28, 28)``), or is
    a token count ``(L,)`` for models taking integer token ids.
    """
    macs: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(module: nn.Module, _inp, out: torch.Tensor) -> None:
        w = module.weight
        if isinstance(module, nn.Linear):
            positions = out.numel() // out.shape[-1]  # tokens (1 for a plain vector)
            n = positions * w.numel()
        else:  # ConvNd: each output position uses in/groups x kernel weights per out channel
            n = (out.numel() // out.shape[1]) * w.numel()
        key = f"{names[module]}.weight" if names[module] else "weight"
        macs[key] = macs.get(key, 0) + int(n)

    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        if len(input_shape) == 1:  # token ids
            x = torch.zeros((1, *input_shape), dtype=torch.long, device=p.device)
        else:
            x = torch.zeros((1, *input_shape), dtype=p.dtype, device=p.device)
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return macs


def training_flops(
    macs: Mapping[str, int], examples: int, masks: Mapping[str, torch.Tensor] | None = None
) -> int:
    """FLOPs of training on ``examples`` examples; a layer in ``masks`` costs its density."""
    total = 0.0
    for name, n in macs.items():
        density = 1.0
        if masks and name in masks:
            m = masks[name]
            density = float(m.sum()) / m.numel()
        total += 2 * n * density
    return int(round(TRAIN_FACTOR * total * examples))


def _density(name: str, masks: Mapping[str, torch.Tensor] | None) -> float:
    if masks and name in masks:
        m = masks[name]
        return float(m.sum()) / m.numel()
    return 1.0


def forward_order(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Parameter names in the order one forward pass first uses them.

    Each module's own parameters are placed when the module is called; a
    module that has children and parameters of its own (a transformer's
    class token and positions on the root module) is called first, so its
    parameters come early: for :func:`partial_training_flops` that can only
    count more backward work, never less. Parameters no forward uses come last.
    """
    order: list[str] = []
    hooks = []

    def hook(module: nn.Module, _inp) -> None:
        prefix = names[module]
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{prefix}.{p_name}" if prefix else p_name
            if full not in seen:
                seen.add(full)
                order.append(full)

    names = {m: n for n, m in model.named_modules()}
    seen: set[str] = set()
    for m in model.modules():
        if any(True for _ in m.parameters(recurse=False)):
            hooks.append(m.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        dtype = torch.long if len(input_shape) == 1 else p.dtype  # token ids or images
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order + [n for n, _ in model.named_parameters() if n not in seen]


def partial_training_flops(
    macs: Mapping[str, int],
    examples: int,
    order: list[str],
    trainable: Collection[str],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> int:
    """FLOPs of training only the tensors ``trainable`` on ``examples`` examples.

    Per weight layer ``j`` with ``n_j`` multiply-accumulates and density
    ``d_j`` (from ``masks``; 1 if absent), ``f_j = 2 n_j d_j`` and::

        flops = examples * sum_j f_j * (1 + [pos_j >= first] + [j trained])

    where ``pos_j`` is the layer's weight's place in ``order``
    (:func:`forward_order`) and ``first`` the place of the first trainable
    tensor. The layer that holds the first trainable tensor is charged its
    input gradient too, as the dense count charges the first layer, so
    ``trainable`` = every parameter gives exactly :func:`training_flops`.
    With nothing trainable the count is the forward pass alone.
    """
    pos = {n: i for i, n in enumerate(order)}
    places = [pos[n] for n in trainable if n in pos]
    first = min(places) if places else len(order)
    trained = set(trainable)
    total = 0.0
    for name, n in macs.items():
        f = 2 * n * _density(name, masks)
        total += f * (1 + (pos.get(name, -1) >= first) + (name in trained))
    return int(round(total * examples))
