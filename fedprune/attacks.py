"""Adversarial clients, for robustness tests and the robustness benchmark.

A seeded fraction of the clients attack (``attack``, ``attack-fraction``):

=============  ==================================================================
attack         what an attacking client uploads
=============  ==================================================================
``sign-flip``  its honest update negated: ``w0 - (w - w0)``
``scale``      its honest update times ``attack-scale`` (10 by default)
``noise``      random Gaussian values in place of its update, with the same
               L2 norm per tensor as its honest update (so a norm check alone
               cannot spot it)
``label-flip`` an honest update computed on flipped labels: ``y -> C - 1 - y``
``malformed``  a reply that breaks the wire contract (:func:`malform`): the first
               dense tensor one element too long and ``num-examples`` 2**62; the
               server must refuse it (the deployment test's bad SuperNode)
=============  ==================================================================

``w0`` is what the client received and ``w`` what it trained. Only values on
the client's mask change (a sparse client stays sparse); non-prunable tensors
are attacked too. Clients that attack report ``attacker = 1`` in their
metrics, which only the results file uses (to report the weight the server
gave them); no strategy reads it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ATTACKS = ("none", "sign-flip", "scale", "noise", "label-flip", "malformed")
UPDATE_ATTACKS = ("sign-flip", "scale", "noise")
WIRE_ATTACKS = ("malformed",)


def attackers(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """The ``round(fraction * num_clients)`` attacking client ids (seeded, independent of
    the label-noise plan)."""
    if fraction <= 0:
        return frozenset()
    rng = np.random.default_rng([seed, 4211])
    k = int(round(fraction * num_clients))
    return frozenset(int(c) for c in rng.choice(num_clients, size=k, replace=False))


def flip_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Label flipping: class ``c`` becomes ``C - 1 - c``."""
    return (num_classes - 1 - labels).astype(labels.dtype)


def attack_update(
    received: Mapping[str, np.ndarray],
    trained: Mapping[str, np.ndarray],
    kind: str,
    *,
    scale: float = 10.0,
    masks: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The tensors an attacking client uploads instead of ``trained``.

    Floating-point tensors are attacked; integer buffers (e.g. BatchNorm's
    batch count) are passed through. ``masks`` (name -> bool) restricts the
    attack to the kept positions of the masked tensors.
    """
    if kind not in UPDATE_ATTACKS:
        raise ValueError(f"attack_update handles {UPDATE_ATTACKS}, got {kind!r}")
    rng = np.random.default_rng([seed, 1009])
    out: dict[str, np.ndarray] = {}
    for name, w in trained.items():
        w = np.asarray(w)
        if not np.issubdtype(w.dtype, np.floating):
            out[name] = w
            continue
        w0 = np.asarray(received[name], dtype=w.dtype)
        d = w - w0
        if kind == "sign-flip":
            d = -d
        elif kind == "scale":
            d = scale * d
        else:  # noise with the honest update's norm
            z = rng.standard_normal(d.shape).astype(w.dtype)
            m = masks.get(name) if masks else None
            if m is not None:
                z = z * m
            nz = float(np.linalg.norm(z))
            d = z * (float(np.linalg.norm(d)) / nz) if nz > 0 else z
        new = w0 + d
        m = masks.get(name) if masks else None
        if m is not None:
            new = np.where(m, new, 0).astype(w.dtype)
        out[name] = new.astype(w.dtype)
    return out


def malform(payload: Mapping[str, np.ndarray], num_examples: int) -> tuple[dict[str, np.ndarray], int]:
    """A malformed reply (attack ``malformed``): the first tensor that travels dense
    (not ``#values`` / ``#mask``) one element longer, and ``num-examples`` 2**62, which
    would take the whole data-size-weighted aggregate if it were accepted."""
    out = dict(payload)
    for name, arr in out.items():
        if not name.endswith(("#values", "#mask")):
            flat = np.asarray(arr).reshape(-1)
            out[name] = np.concatenate([flat, flat[:1]])
            break
    return out, 2**62
