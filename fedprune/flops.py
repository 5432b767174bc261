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
"""

from __future__ import annotations

from collections.abc import Mapping

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
