"""The wire contract: record keys and array conversions shared by both sides.

Flower's records carry NumPy arrays; models carry torch tensors keyed like
``state_dict()``. The keys below name what travels in every message (the
Flower glue in ``strategies/`` and ``clients/`` wraps them in records).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedprune import codec

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
DST_VOTES = "dst-votes"  # server-side readjustment: vote for ceil(this * active) growths per layer
GROW_SUFFIX = "#grow"  # ArrayRecord key suffix of a client's growth votes (sparse gradient sums)
PRUNEFL_SQGRAD = "prunefl-sqgrad"  # ask for summed squared gradients (PruneFL reconfiguration)
SQGRAD_SUFFIX = "#sqgrad"  # ArrayRecord key suffix of a client's squared gradients
PERSONAL_PRUNE = "personal-prune"  # "lotteryfl", "subfedavg" or "prunefl-initial": client-side pruning
PRUNE_RATE = "prune-rate"  # fraction of kept weights a pruning step removes
TARGET_DENSITY = "target-density"  # density at which progressive pruning stops
DENSITY_DISTRIBUTION = "density-distribution"  # "erk" / "uniform" for the target budgets
LOTTERY_THRESHOLD = "lottery-threshold"  # LotteryFL: validation accuracy needed to prune
PRUNED = "pruned"  # metric: pruning steps the client took this round (0 = none)
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
    arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    value_dtype: str = "float32",
) -> None:
    """Check a dense update against the expected keys, shapes and dtypes; values finite.

    A float32 tensor must travel in ``value_dtype`` (run-config ``codec-dtype``:
    float32, or float16 when the run sends halves); every other tensor in its own
    dtype.

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
        want = codec.wire_dtype(dtype, value_dtype)
        if a.dtype != want:
            raise InvalidUpdate(f"{k}: dtype {a.dtype}, expected {want}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise InvalidUpdate(f"{k}: non-finite values")


def check_num_examples(value: object, cap: int = 0) -> int:
    """The reply's ``num-examples`` as a positive int, at most ``cap`` (0 = no cap),
    or InvalidUpdate."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidUpdate(f"{NUM_EXAMPLES} must be an integer, got {value!r}")
    if not np.isfinite(value) or value != int(value):
        raise InvalidUpdate(f"{NUM_EXAMPLES} must be an integer, got {value!r}")
    if int(value) <= 0:
        raise InvalidUpdate(f"{NUM_EXAMPLES} must be positive, got {value}")
    if cap > 0 and int(value) > cap:
        raise InvalidUpdate(f"{NUM_EXAMPLES} {int(value)} exceeds the cap {cap} (the largest "
                            "training partition of this run, or run-config max-num-examples)")
    return int(value)


# What each metric a training reply may carry must be: (integer?, lowest, highest).
# Every other key must be a finite number too (Flower's strategies average them all).
METRIC_RANGES: dict[str, tuple[bool, float, float]] = {
    CLIENT_ID: (True, 0, 2**31 - 1),
    TRAIN_LOSS: (False, -np.inf, np.inf),
    LOSS_FIRST: (False, -np.inf, np.inf),
    LOSS_LAST: (False, -np.inf, np.inf),
    NOISE_RATE: (False, 0.0, 1.0),
    ATTACKER: (True, 0, 1),
    PRUNED: (True, 0, 2**31 - 1),  # pruning steps (PruneFL's initial client takes several)
    DST_MOVED: (True, 0, 2**53),
    TRAIN_FLOPS: (False, 0.0, np.inf),
    DENSE_FLOPS: (False, 0.0, np.inf),
    COMPUTE_BUDGET: (False, 0.0, 1.0),
}


def check_metrics(metrics: Mapping[str, Any]) -> dict[str, int | float]:
    """A training reply's metrics, each a finite number within :data:`METRIC_RANGES`
    (``num-examples`` is checked by :func:`check_num_examples`); InvalidUpdate naming
    the first bad one."""
    out: dict[str, int | float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise InvalidUpdate(f"metric {k!r} must be a number, got {type(v).__name__}")
        if not np.isfinite(v):
            raise InvalidUpdate(f"metric {k!r} is not finite ({v})")
        if k in METRIC_RANGES:
            integer, lo, hi = METRIC_RANGES[k]
            if integer and v != int(v):
                raise InvalidUpdate(f"metric {k!r} must be an integer, got {v}")
            if not lo <= v <= hi:
                raise InvalidUpdate(f"metric {k!r} = {v} outside [{lo}, {hi}]")
            v = int(v) if integer else float(v)
        out[k] = v.item() if isinstance(v, (np.integer, np.floating)) else v
    return out


# dtypes a wire array may have: the model's (float32, float64, int64 buffers, bool, ...)
# and the codec's (uint8 masks, float16 values); never object, structured or byte-swapped
WIRE_DTYPES = frozenset(np.dtype(t) for t in (
    "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"))


def decode_npy(data: bytes, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """One wire array from its ``.npy`` bytes, checked against its metadata first.

    The header is parsed before anything is allocated, so a header that claims
    more elements than the bytes hold costs nothing; the dtype must be one of
    :data:`WIRE_DTYPES` and the header's dtype and shape must equal ``dtype`` and
    ``shape`` (what the sender declared). Returns a writable copy.

    Raises
    ------
    InvalidUpdate
        Empty or truncated data, a bad header, a disallowed dtype, trailing
        bytes, or metadata that disagrees with the data.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise InvalidUpdate("array has no data")
    buf = io.BytesIO(bytes(data))
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            hshape, fortran, hdtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            hshape, fortran, hdtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"npy version {version}")
    except Exception as exc:  # noqa: BLE001 - any header problem is the sender's
        raise InvalidUpdate(f"array data is not a valid .npy header: {exc}") from None
    if hdtype not in WIRE_DTYPES:
        raise InvalidUpdate(f"array dtype {hdtype} not allowed on the wire")
    try:
        declared = np.dtype(dtype)
    except Exception:  # noqa: BLE001
        raise InvalidUpdate(f"array metadata dtype {dtype!r} is not a NumPy dtype") from None
    if declared != hdtype:
        raise InvalidUpdate(f"array metadata dtype {dtype!r} differs from its data's {hdtype}")
    try:
        declared_shape = tuple(int(d) for d in shape)
    except Exception:  # noqa: BLE001
        raise InvalidUpdate(f"array metadata shape {shape!r} is not a list of ints") from None
    if declared_shape != tuple(hshape):
        raise InvalidUpdate(f"array metadata shape {declared_shape} differs from its data's "
                            f"{tuple(hshape)}")
    if any(d < 0 for d in hshape):
        raise InvalidUpdate(f"array shape {tuple(hshape)} has a negative size")
    count = math.prod(hshape)  # Python ints: a huge claimed shape cannot overflow
    offset = buf.tell()
    if len(data) - offset != count * hdtype.itemsize:
        raise InvalidUpdate(f"array data holds {len(data) - offset} bytes, its header "
                            f"{tuple(hshape)} x {hdtype.itemsize} needs {count * hdtype.itemsize}")
    flat = np.frombuffer(bytes(data), dtype=hdtype, count=count, offset=offset)
    return flat.reshape(hshape, order="F" if fortran else "C").copy()
