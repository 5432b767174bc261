"""Aggregation of client models (pure functions over ``dict[str, ndarray]``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def weighted_average(
    states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]
) -> dict[str, np.ndarray]:
    """Weighted mean of each array over clients, ``sum_i w_i x_i / sum_i w_i``.

    Accumulates in float64 and casts back to each array's dtype (integer
    buffers such as BatchNorm's ``num_batches_tracked`` are rounded).
    """
    if not states:
        raise ValueError("nothing to aggregate")
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(states) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    w = w / w.sum()
    out = {}
    for key, first in states[0].items():
        acc = np.zeros(np.shape(first), dtype=np.float64)
        for wi, s in zip(w, states, strict=True):
            acc += wi * np.asarray(s[key], dtype=np.float64)
        dtype = np.asarray(first).dtype
        # np.asarray: NumPy ufuncs return scalars for 0-d input (num_batches_tracked)
        out[key] = np.asarray(np.rint(acc) if np.issubdtype(dtype, np.integer) else acc).astype(dtype)
    return out


def masked_average(
    states: Sequence[Mapping[str, np.ndarray]],
    masks: Sequence[Mapping[str, np.ndarray]],
    weights: Sequence[float],
    previous: Mapping[str, np.ndarray],
    started_at_zero: Sequence[Mapping[str, np.ndarray]] | None = None,
    *,
    zero_votes: bool = True,
    residual_start: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Mask-aware weighted average.

    For a masked tensor, position j is averaged over the clients whose mask
    holds j, with their weights renormalised over those clients:
    ``sum_{i: m_i[j]} p_i w_i[j] / sum_{i: m_i[j]} p_i``; a position held by no
    client keeps ``previous[j]``. Unmasked tensors (those absent from the
    clients' masks) are plain weighted means.

    ``started_at_zero`` (per client, per masked tensor: the positions the
    client received as 0, i.e. outside the mask it was sent) makes a client
    that did not grow such a position vote for 0 there: its weight joins the
    denominator. A position grown by one client then gets that client's
    value scaled by its weight share, not the whole value, so no single
    client decides the value (and, through top-|value| selection, the entry
    into the global mask) of a position nobody else grew. ``zero_votes=False``
    keeps ``started_at_zero`` for ``residual_start`` only (no zero votes).

    ``residual_start`` (needs ``started_at_zero``): a client that received a
    position as 0 trained it from 0, but the server holds its residual
    ``previous[j]``; its value counts as an update on top of the residual,
    ``previous[j] + w_i[j]``, and a zero vote as ``previous[j]`` (no
    change). A regrown weight thus resumes from its residual (docs/design.md,
    residual restoration) instead of restarting from 0. Positions every
    holder received are unchanged by it.

    Returns
    -------
    (aggregate, union) : the aggregated state (each array in ``previous``'s
    dtype) and, per masked tensor, the union of the client masks.
    """
    if not states:
        raise ValueError("nothing to aggregate")
    p = np.asarray(weights, dtype=np.float64)
    if len(p) != len(states) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    if residual_start and started_at_zero is None:
        raise ValueError("residual_start needs started_at_zero (what each client received as 0)")
    masked = set(masks[0])
    dense_states = [{k: v for k, v in s.items() if k not in masked} for s in states]
    out = weighted_average(dense_states, p) if dense_states[0] else {}
    union: dict[str, np.ndarray] = {}
    for key in masked:
        shape = np.shape(previous[key])
        num = np.zeros(int(np.prod(shape)), dtype=np.float64)
        den = np.zeros_like(num)
        held = np.zeros(num.shape, dtype=bool)
        received = np.zeros_like(num) if residual_start else None  # weight of holders that got it
        # zero votes: sum_i w_i [started at 0] over all positions, per distinct array (the
        # clients sent one mask share one), minus the positions each client kept
        votes: dict[int, tuple[np.ndarray, float]] = {}
        for i, (wi, s, m) in enumerate(zip(p, states, masks, strict=True)):
            mi = np.asarray(m[key], dtype=bool).reshape(-1)
            idx = np.flatnonzero(mi)  # work on the client's support only
            num[idx] += wi * np.asarray(s[key]).reshape(-1)[idx].astype(np.float64)
            den[idx] += wi
            held[idx] = True
            if started_at_zero is not None:
                z = np.asarray(started_at_zero[i][key], dtype=bool)
                grown = z.reshape(-1)[idx]
                if zero_votes:
                    arr, w = votes.get(id(z), (z, 0.0))
                    votes[id(z)] = (arr, w + wi)
                    den[idx[grown]] -= wi  # kept a position it got as 0: no zero vote
                if received is not None:
                    received[idx[~grown]] += wi
        for z, w in votes.values():
            den += w * z.reshape(-1)
        held &= den > 0
        prev = np.asarray(previous[key], dtype=np.float64).reshape(-1)
        agg = prev.copy()
        agg[held] = num[held] / den[held]
        if received is not None:  # growers and zero votes start from the residual
            agg[held] += prev[held] * (1.0 - received[held] / den[held])
        out[key] = agg.reshape(shape).astype(np.asarray(previous[key]).dtype)
        union[key] = held.reshape(shape)
    return out, union


def select_global_mask(
    aggregate: Mapping[str, np.ndarray],
    union: Mapping[str, np.ndarray],
    budgets: Mapping[str, int],
    fallback: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """New global mask: per layer, the ``budget`` largest-|value| positions of the union.

    If the union holds fewer positions than the budget (clients with sparser
    sub-masks), the rest is filled from ``fallback`` (the previous global mask)
    by magnitude, then from all remaining positions by magnitude.
    """
    out = {}
    for key, k in budgets.items():
        a = np.abs(np.asarray(aggregate[key], dtype=np.float64)).reshape(-1)
        u = np.asarray(union[key], dtype=bool).reshape(-1)
        f = (np.asarray(fallback[key], dtype=bool).reshape(-1) if fallback is not None
             else np.zeros_like(u))
        # tiered score: union first, then the previous mask, then the rest; |value| within
        tier = np.where(u, 2.0, np.where(f, 1.0, 0.0))
        order = np.lexsort((np.arange(len(a)), -a, -tier))[:k]
        m = np.zeros(len(a), dtype=bool)
        m[order] = True
        out[key] = m.reshape(np.shape(aggregate[key]))
    return out


def restore_residuals(
    aggregate: Mapping[str, np.ndarray],
    new_masks: Mapping[str, np.ndarray],
    residual: bool = True,
) -> dict[str, np.ndarray]:
    """The new dense model W: the aggregate everywhere (residual restoration), or,
    with ``residual=False``, the aggregate with pruned positions zeroed."""
    if residual:
        return {k: np.array(v, copy=True) for k, v in aggregate.items()}
    return {
        k: np.where(new_masks[k], v, 0).astype(np.asarray(v).dtype) if k in new_masks else np.array(v)
        for k, v in aggregate.items()
    }
