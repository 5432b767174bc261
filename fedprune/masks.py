"""Unstructured per-layer masks: which tensors are prunable, layer densities, magnitude masks.

Masks are boolean tensors keyed like ``state_dict()`` (1 = kept). They live
outside the modules (``torch.nn.utils.prune`` renames state_dict keys, which
would break the wire contract).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

DISTRIBUTIONS = ("erk", "uniform")

# Layers whose own >= 2-D parameters are weight matrices / kernels: Linear (and
# its subclasses, e.g. MultiheadAttention's out_proj), Conv / ConvTranspose,
# Bilinear, token embeddings, the fused projections of nn.MultiheadAttention
# (in_proj_weight or q/k/v_proj_weight) and recurrent layers' weight matrices.
WEIGHT_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag,
    nn.MultiheadAttention, nn.RNNBase,
)


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the prunable parameters, chosen by rule, never by model name.

    Rule: a trainable parameter with at least 2 dimensions that belongs
    directly to a weight layer (:data:`WEIGHT_LAYER_TYPES`: Conv / Linear
    weights, token embedding matrices, attention projections, recurrent
    weight matrices). Biases (1-D) and normalisation parameters stay dense,
    and so do free ``nn.Parameter`` tensors of other modules, such as a
    transformer's class token and position embedding.

    Returned in ``model.named_parameters()`` order; a parameter shared by
    several layers is named once, under its first name.
    """
    names = []
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, WEIGHT_LAYER_TYPES):
            continue
        for p_name, p in mod.named_parameters(recurse=False):
            if p.requires_grad and p.ndim >= 2:
                names.append(f"{mod_name}.{p_name}" if mod_name else p_name)
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    return sorted((n for n in names if n in order), key=order.__getitem__)


def erk_raw_density(shape: tuple[int, ...]) -> float:
    """RigL's Erdos-Renyi-Kernel score: sum of dims / product of dims.

    For a conv weight (out, in, kh, kw) that is (out + in + kh + kw) / (out*in*kh*kw);
    for a linear weight (out, in) it reduces to Erdos-Renyi's (out + in) / (out*in).
    """
    return float(sum(shape)) / float(np.prod(shape))


def layer_densities(
    shapes: Mapping[str, tuple[int, ...]], density: float, distribution: str = "erk"
) -> dict[str, float]:
    """Per-layer densities whose weighted mean is ``density``.

    ``uniform``: every layer gets ``density``.

    ``erk`` (Evci et al., RigL, 2020): layer l gets ``eps * raw_l`` with
    ``raw_l`` from :func:`erk_raw_density`, and ``eps`` solves
    ``sum_l eps * raw_l * n_l = density * sum_l n_l``. A layer whose
    ``eps * raw_l`` would exceed 1 is made dense, its parameters leave the
    budget equation, and ``eps`` is solved again for the rest, until no layer
    exceeds 1.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if distribution == "uniform":
        return {k: density for k in shapes}
    if distribution != "erk":
        raise ValueError(f"unknown density distribution {distribution!r}; valid: {DISTRIBUTIONS}")
    n = {k: float(np.prod(s)) for k, s in shapes.items()}
    raw = {k: erk_raw_density(s) for k, s in shapes.items()}
    dense: set[str] = set()
    while True:
        # kept budget left for the sparse layers after the dense ones
        budget = density * sum(n.values()) - sum(n[k] for k in dense)
        denom = sum(raw[k] * n[k] for k in n if k not in dense)
        if denom <= 0:  # every layer is dense
            break
        eps = budget / denom
        over = [k for k in n if k not in dense and eps * raw[k] > 1.0]
        if not over:
            break
        dense.update(over)
    return {k: 1.0 if k in dense else eps * raw[k] for k in shapes}


def layer_budgets(
    shapes: Mapping[str, tuple[int, ...]], density: float, distribution: str = "erk"
) -> dict[str, int]:
    """Kept-weight count per layer: ``round(density_l * n_l)``, at least 1 and at most n_l.

    The total equals ``density * sum n_l`` up to rounding (at most one per layer).
    """
    dens = layer_densities(shapes, density, distribution)
    out = {}
    for k, s in shapes.items():
        n = int(np.prod(s))
        out[k] = min(n, max(1, int(round(dens[k] * n))))
    return out


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of ``scores`` (ties broken by index)."""
    flat = scores.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        # stable sort on the negated scores: equal scores keep index order
        order = torch.sort(-flat.double(), stable=True).indices[:k]
        mask[order] = True
    return mask.reshape(scores.shape)


def magnitude_masks(
    weights: Mapping[str, torch.Tensor], budgets: Mapping[str, int]
) -> dict[str, torch.Tensor]:
    """Per layer, keep the ``budgets[name]`` largest-magnitude weights."""
    return {k: topk_mask(weights[k].detach().abs().cpu(), budgets[k]) for k in budgets}


def density_of(masks: Mapping[str, torch.Tensor | np.ndarray]) -> float:
    """Fraction of kept positions over all masked tensors."""
    kept = sum(int(np.count_nonzero(np.asarray(m))) for m in masks.values())
    total = sum(int(np.asarray(m).size) for m in masks.values())
    return kept / total if total else 1.0


def ceil_count(fraction: float, active: int) -> int:
    """``ceil(fraction * active)`` guarded against float noise (0.3*10 -> 3, not 4)."""
    return int(math.ceil(fraction * active - 1e-9))


def prune_by_magnitude(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    rate: float,
    min_counts: Mapping[str, int],
) -> dict[str, torch.Tensor]:
    """Remove ``rate`` of each layer's kept weights, smallest |w| first, keeping at
    least ``min_counts[name]`` (LotteryFL / Sub-FedAvg's progressive pruning).

    Returns new bool masks; a layer already at its minimum is unchanged.
    """
    out = {}
    for k, m in masks.items():
        m = m.bool().cpu()
        active = int(m.sum())
        keep = max(min_counts[k], active - ceil_count(rate, active))
        keep = min(keep, active)
        score = torch.where(m, weights[k].detach().abs().float().cpu(), torch.tensor(-1.0))
        out[k] = topk_mask(score, keep)
    return out
