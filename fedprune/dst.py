"""Dynamic sparse training: the readjustment schedule and the drop/grow step.

Schedule (FedDST, Bibikar et al. 2022, from RigL's cosine decay)::

    alpha_t = alpha0 / 2 * (1 + cos(pi * t / T_end))   if t % delta_R == 0 and t <= T_end
            = 0                                         otherwise

(The reference FedDST code multiplies this by alpha0 once more; we do not.)

Readjustment of one layer with ``a`` active weights (RigL, Evci et al. 2020):
drop ``k = ceil(alpha_t * a)`` active weights of smallest ``|w|``, then grow
``k`` of the positions that were inactive before the drop, those of largest
``|grad|`` (dense gradient of the loss on a local batch), or uniformly at
random (SET, Mocanu et al. 2018). Dropped and grown sets are disjoint, so the
layer's count is unchanged and exactly ``k`` positions move. Grown weights and
their optimizer state start at zero; dropped weights and their optimizer state
are zeroed.

Server-side readjustment (FedPrune's default) moves the decision to the server:
clients train on a fixed mask and each votes for the ``k`` inactive positions of
largest ``|sum of its dense gradients over the local steps|`` (:func:`growth_votes`),
uploading those sums; the server grows, per layer, the positions of largest
``|sum_i p_i g_i|`` (the round's weighted gradient, where clients that did not vote
for a position count 0, so opposite pushes cancel) and drops as many of the kept
weights of smallest aggregated ``|w|`` (:func:`consensus_move`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedprune.masks import ceil_count, topk_mask
from fedprune.training import StepState, loss_of

GROWTH = ("gradient", "random")


def readjust_fraction(t: int, alpha0: float, interval: int, t_end: int) -> float:
    """alpha_t of round ``t`` (1-based): cosine-decayed on readjustment rounds, else 0."""
    if alpha0 <= 0 or interval <= 0 or t > t_end or t % interval != 0:
        return 0.0
    return alpha0 / 2.0 * (1.0 + math.cos(math.pi * t / t_end))


def readjust_layer(
    weight: torch.Tensor,
    grad: torch.Tensor | None,
    mask: torch.Tensor,
    alpha: float,
    growth: str = "gradient",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's drop/grow decision (no side effects).

    Parameters
    ----------
    weight, grad : tensors of the layer's shape (``grad`` unused for random growth)
    mask : bool tensor, True = active
    alpha : fraction of active weights to move

    Returns
    -------
    (new_mask, dropped, grown) : bool tensors of the layer's shape
    """
    mask = mask.bool()
    active = int(mask.sum())
    inactive = mask.numel() - active
    k = min(ceil_count(alpha, active), active, inactive)
    if k <= 0:
        z = torch.zeros_like(mask)
        return mask.clone(), z, z.clone()
    # drop: the k smallest |w| among active positions (inactive ones scored +inf)
    drop_score = torch.where(mask, -weight.detach().abs().float(), torch.tensor(-math.inf))
    dropped = topk_mask(drop_score, k)
    # grow: k of the positions inactive before the drop
    if growth == "gradient":
        if grad is None:
            raise ValueError("gradient growth needs the dense gradient")
        grow_score = grad.detach().abs().float()
    elif growth == "random":
        grow_score = torch.rand(mask.shape, generator=generator)
    else:
        raise ValueError(f"unknown growth {growth!r}; valid: {GROWTH}")
    grow_score = torch.where(mask, torch.tensor(-math.inf), grow_score)
    grown = topk_mask(grow_score, k)
    new_mask = (mask & ~dropped) | grown
    return new_mask, dropped, grown


def dense_gradients(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], names: list[str]
) -> dict[str, torch.Tensor]:
    """Dense gradients of the mean cross-entropy over ``batches`` for parameters ``names``."""
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        loss = loss_of(model, x, y) / len(batches)
        loss.backward()
    grads = {n: params[n].grad.detach().clone() for n in names}
    model.zero_grad(set_to_none=True)
    return grads


@dataclass
class ReadjustReport:
    """What a client's readjustment did (per layer counts of moved positions)."""

    moved: dict[str, int]


def apply_readjustment(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    masks: MutableMapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor] | None,
    alpha: float,
    growth: str = "gradient",
    generator: torch.Generator | None = None,
) -> ReadjustReport:
    """Drop/grow every masked layer in place: masks, weights and optimizer state."""
    params = dict(model.named_parameters())
    moved = {}
    with torch.no_grad():
        for name in list(masks):
            p = params[name]
            new, dropped, grown = readjust_layer(
                p, None if grads is None else grads[name], masks[name].bool().cpu(),
                alpha, growth, generator,
            )
            changed = (dropped | grown).to(p.device)
            p[changed] = 0.0  # dropped weights vanish, grown ones start at zero
            state = optimizer.state.get(p, {})
            for buf in state.values():
                if torch.is_tensor(buf) and buf.shape == p.shape:
                    buf[changed] = 0.0
            masks[name] = new.to(device=p.device, dtype=masks[name].dtype)
            moved[name] = int(grown.sum())
    return ReadjustReport(moved)


def readjust_hook(
    alpha: float,
    at_fraction: float = 0.5,
    growth: str = "gradient",
    seed: int = 0,
    report: list[ReadjustReport] | None = None,
) -> Callable[[StepState], None]:
    """An ``on_step`` hook for :func:`fedprune.training.train` that readjusts once.

    It fires after step ``max(1, round(at_fraction * total_steps))``, so the
    regrown weights are trained for the rest of local training before upload
    (the reference FedDST code readjusts after the last step, uploading the
    regrown weights as zeros). The dense gradient is taken on the batch of
    that step.
    """
    gen = torch.Generator().manual_seed(seed)

    def hook(s: StepState) -> None:
        at = max(1, int(round(at_fraction * s.total_steps))) if s.total_steps else 1
        if s.step != at or alpha <= 0:
            return
        grads = None
        if growth == "gradient":
            grads = dense_gradients(s.model, [s.batch], list(s.masks))
        r = apply_readjustment(s.model, s.optimizer, s.masks, grads, alpha, growth, gen)
        if report is not None:
            report.append(r)

    return hook


def growth_votes(
    grad_sums: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A client's growth votes: per masked layer, ``(votes, values)`` with ``votes`` the
    ``ceil(alpha * active)`` inactive positions of largest ``|grad_sums|`` (a bool
    tensor of the layer's shape; fewer where fewer positions are inactive or their
    gradient is 0) and ``values`` the gradient sums there (0 elsewhere)."""
    out = {}
    for name, m in masks.items():
        m = m.bool().cpu()
        if name not in grad_sums:  # a tensor this client did not train (partial training)
            z = torch.zeros(m.shape)
            out[name] = (torch.zeros_like(m), z)
            continue
        g = grad_sums[name].detach().float().cpu()
        k = min(ceil_count(alpha, int(m.sum())), int((~m & (g != 0)).sum()))
        votes = topk_mask(torch.where(m, torch.tensor(-math.inf), g.abs()), k) if k > 0 \
            else torch.zeros_like(m)
        out[name] = (votes, torch.where(votes, g, torch.zeros_like(g)))
    return out


def consensus_move(
    weights: np.ndarray, mask: np.ndarray, gradient: np.ndarray, k: int
) -> np.ndarray:
    """One layer's server-side readjustment: grow the at most ``k`` positions outside
    ``mask`` of largest ``|gradient|`` (nonzero only), drop as many of the kept
    positions of smallest ``|weights|``; returns the new mask (same count)."""
    m = np.asarray(mask, bool).reshape(-1)
    g = np.abs(np.asarray(gradient, np.float64)).reshape(-1)
    w = np.abs(np.asarray(weights, np.float64)).reshape(-1)
    cand = np.flatnonzero(~m & (g > 0))
    n = min(k, cand.size, int(m.sum()))
    if n <= 0:
        return np.asarray(mask, bool).copy()
    grow = cand[np.lexsort((cand, -g[cand]))[:n]]
    kept = np.flatnonzero(m)
    drop = kept[np.lexsort((kept, w[kept]))[:n]]
    out = m.copy()
    out[drop], out[grow] = False, True
    return out.reshape(np.shape(mask))
