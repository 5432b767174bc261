"""The wire contract: record keys and array conversions shared by both sides.

Flower's records carry NumPy arrays; models carry torch tensors keyed like
``state_dict()``. The keys below name what travels in every message (the
Flower glue in ``strategies/`` and ``clients/`` wraps them in records).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

# RecordDict keys
ARRAYS = "arrays"  # ArrayRecord: model payload
CONFIG = "config"  # ConfigRecord: per-round instructions
METRICS = "metrics"  # MetricRecord: client results

# ConfigRecord / MetricRecord keys
SERVER_ROUND = "server-round"
NUM_EXAMPLES = "num-examples"
CLIENT_ID = "client-id"
TRAIN_LOSS = "train-loss"
NOISE_RATE = "noise-rate"
LR = "lr"
LOCAL_EPOCHS = "local-epochs"
PROXIMAL_MU = "proximal-mu"
DST_ALPHA = "dst-alpha"  # readjustment fraction alpha_t of this round (0 = no readjustment)
DST_AT = "dst-readjust-at"  # when to readjust, as a fraction of the local steps
DST_GROWTH = "dst-growth"  # "gradient" (RigL) or "random" (SET)
DST_MOVED = "dst-moved"  # positions a client's readjustment moved (metric)
PRUNEFL_SQGRAD = "prunefl-sqgrad"  # ask for summed squared gradients (PruneFL reconfiguration)
SQGRAD_SUFFIX = "#sqgrad"  # ArrayRecord key suffix of a client's squared gradients
PERSONAL_PRUNE = "personal-prune"  # "lotteryfl", "subfedavg" or "prunefl-initial": client-side pruning
PRUNE_RATE = "prune-rate"  # fraction of kept weights a pruning step removes
TARGET_DENSITY = "target-density"  # density at which progressive pruning stops
DENSITY_DISTRIBUTION = "density-distribution"  # "erk" / "uniform" for the target budgets
LOTTERY_THRESHOLD = "lottery-threshold"  # LotteryFL: validation accuracy needed to prune
PRUNED = "pruned"  # metric: 1 if the client pruned this round
LOSS_FIRST = "loss-first"  # metric: loss of the first local step
LOSS_LAST = "loss-last"  # metric: mean loss of the last local epoch
ATTACKER = "attacker"  # metric: 1 on clients that attack, else 0 (results only; no strategy reads it)
TRAIN_FLOPS = "train-flops"  # metric: local training FLOPs under the client's masks
DENSE_FLOPS = "dense-flops"  # metric: the same training on the dense model
COMPUTE_BUDGET = "compute-budget"  # metric: the node's compute budget (adaptive density)
VALUE_DTYPE = "value-dtype"  # "float16": reply with float16 values (run-config codec-dtype)
FEDBT_TRAIN = "fedbt-train"  # partial training (FedBT): list of the tensor names to train and upload


def is_noisy(metrics: Mapping[str, Any]) -> bool:
    """Whether a client's reply metrics say it trains on noisy labels (``noise-rate`` > 0)."""
    return float(metrics.get(NOISE_RATE, 0.0)) > 0


def is_attacker(metrics: Mapping[str, Any]) -> bool:
    """Whether a client's reply metrics say it attacks (``attacker`` set)."""
    return bool(metrics.get(ATTACKER))


def state_to_numpy(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """state_dict -> name -> contiguous NumPy array (CPU, same dtype and shape).

    ``np.ascontiguousarray`` turns a 0-d array (BatchNorm's ``num_batches_tracked``)
    into shape (1,), which a server expecting the ``state_dict`` shape () rejects;
    the reshape keeps the shape.
    """
    out = {}
    for k, v in state.items():
        a = v.detach().cpu().numpy()
        out[k] = np.ascontiguousarray(a).reshape(a.shape)
    return out


def numpy_to_state(
    arrays: Mapping[str, np.ndarray], reference: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """name -> array to a state_dict matching ``reference`` (keys, shapes, dtypes).

    Raises
    ------
    ValueError
        When a key is missing or extra, or a shape differs.
    """
    missing, extra = set(reference) - set(arrays), set(arrays) - set(reference)
    if missing or extra:
        raise ValueError(f"array keys differ from the model: missing {sorted(missing)}, "
                         f"unexpected {sorted(extra)}")
    out = {}
    for k, ref in reference.items():
        a = np.asarray(arrays[k])
        if tuple(a.shape) != tuple(ref.shape):
            raise ValueError(f"{k}: shape {tuple(a.shape)} != model's {tuple(ref.shape)}")
        out[k] = torch.from_numpy(np.array(a, copy=True)).to(ref.dtype)
    return out


def nbytes(arrays: Mapping[str, np.ndarray] | list[np.ndarray]) -> int:
    """Payload bytes of a set of arrays (sum of element count x item size)."""
    values = arrays.values() if isinstance(arrays, Mapping) else arrays
    return int(sum(np.asarray(a).nbytes for a in values))


class InvalidUpdate(ValueError):
    """A client's reply breaks the wire contract; the message is the logged reason."""


def check_dense(
    arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[tuple[int, ...], np.dtype]]
) -> None:
    """Check a dense update against the expected keys, shapes and dtypes; values finite.

    Raises
    ------
    InvalidUpdate
        Naming the first problem found.
    """
    missing, extra = set(expected) - set(arrays), set(arrays) - set(expected)
    if missing or extra:
        raise InvalidUpdate(f"keys differ: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for k, (shape, dtype) in expected.items():
        a = arrays[k]
        if tuple(a.shape) != tuple(shape):
            raise InvalidUpdate(f"{k}: shape {tuple(a.shape)}, expected {tuple(shape)}")
        if a.dtype != dtype and not (a.dtype == np.float16 and dtype == np.float32):
            raise InvalidUpdate(f"{k}: dtype {a.dtype}, expected {dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise InvalidUpdate(f"{k}: non-finite values")


def check_num_examples(value: object) -> int:
    """The reply's ``num-examples`` as a positive int, or InvalidUpdate."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InvalidUpdate(f"{NUM_EXAMPLES} must be an integer, got {value!r}")
    if int(value) <= 0:
        raise InvalidUpdate(f"{NUM_EXAMPLES} must be positive, got {value}")
    return int(value)
