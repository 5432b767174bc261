"""Lossless sparse codec: one prunable tensor -> (float32 values, encoded mask).

A tensor ``w`` with boolean mask ``m`` (N positions, K kept) travels as

* ``values``: float32 array (K,), the kept entries in row-major order;
* ``mask``: uint8 array, a 2-byte header ``[kind, b]`` and then the mask:

  ============  ==============================================================
  kind          mask bytes after the header
  ============  ==============================================================
  0 ``full``    none (K = N)
  1 ``empty``   none (K = 0)
  2 ``bitmap``  ``ceil(N / 8)`` bytes: the mask packed 8 positions per byte
  3 ``rice``    the index gaps (positions between consecutive kept entries),
                Golomb-Rice coded with parameter ``b``: the ``K*b`` low bits
                of all gaps packed first, then the unary high parts (q zeros
                and a one per gap)
  ============  ==============================================================

The encoder computes the exact size of ``bitmap`` and of ``rice`` for every
useful ``b`` and keeps the smallest, so the mask costs about ``min(N,
N*H(K/N)+small)`` bits. Rice codes are near-optimal for the geometric gaps of
a random mask, which brings the total within a few percent of the
information-theoretic bound ``32*K + log2 C(N, K)`` bits (see
``benchmarks/codec_bound.py``). Decoding is vectorised NumPy and bit-exact.

Optionally (run-config ``codec-dtype = "float16"``) the values, and the dense
float32 tensors of :func:`encode_state`, travel as float16: half the value
bytes, lossy (about 3 significant digits; magnitudes above 65504 become inf,
which the receiver rejects as non-finite). Decoding accepts either width and
returns float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

FULL, EMPTY, BITMAP, RICE = 0, 1, 2, 3
KINDS = {FULL: "full", EMPTY: "empty", BITMAP: "bitmap", RICE: "rice"}
VALUES_SUFFIX = "#values"
MASK_SUFFIX = "#mask"
VALUE_DTYPES = ("float32", "float16")


class CodecError(ValueError):
    """An encoded tensor cannot be decoded (corrupt, truncated or inconsistent)."""


@dataclass(frozen=True)
class Encoded:
    """One encoded tensor."""

    values: np.ndarray  # float32 or float16 (K,)
    mask: np.ndarray  # uint8 (header + mask bytes)

    @property
    def nbytes(self) -> int:
        """Bytes on the wire (values + mask)."""
        return int(self.values.nbytes + self.mask.nbytes)

    @property
    def kind(self) -> str:
        """Mask encoding chosen."""
        return KINDS[int(self.mask[0])]


def _rice_bits(gaps: np.ndarray, b: int) -> int:
    return int((gaps >> b).sum()) + len(gaps) * (1 + b)


def _rice_encode(gaps: np.ndarray, b: int) -> np.ndarray:
    k = len(gaps)
    # low parts: K fields of b bits, most significant bit first (one column per bit:
    # b passes over K values, not a K x b int64 temporary)
    low_bits = np.empty((k, b), np.uint8)
    for j in range(b):
        low_bits[:, j] = (gaps >> (b - 1 - j)) & 1
    # unary high parts: q zeros then a one, per gap (so the byte padding, zeros,
    # can never be read as a gap: the number of ones is exactly the number of gaps)
    q = gaps >> b
    total = int(q.sum()) + k
    unary = np.zeros(total, np.uint8)
    unary[np.cumsum(q + 1) - 1] = 1
    return np.concatenate([np.packbits(low_bits.reshape(-1)), np.packbits(unary)])


def _rice_decode(payload: np.ndarray, k: int, b: int) -> np.ndarray:
    n_low = (k * b + 7) // 8
    if len(payload) < n_low:
        raise CodecError("rice payload shorter than its low bits")
    bits = np.unpackbits(payload[:n_low], count=k * b).reshape(k, b)
    low = np.zeros(k, np.int64)
    for j in range(b):  # most significant bit first
        low <<= 1
        low |= bits[:, j]
    ends = np.flatnonzero(np.unpackbits(payload[n_low:]).view(bool))
    if len(ends) != k:
        raise CodecError(f"rice payload codes {len(ends)} positions but {k} values were sent")
    if k and len(payload) - n_low != (int(ends[-1]) + 1 + 7) // 8:
        raise CodecError("rice payload has trailing bytes")
    q = np.diff(ends, prepend=-1) - 1
    return q, low


def _rice_gaps(payload: np.ndarray, k: int, b: int, n: int) -> np.ndarray:
    """The ``k`` gaps of a Rice-coded mask over ``n`` positions; each gap must fit
    (``q * 2**b + low < n``), checked before the shift so it cannot wrap in int64."""
    q, low = _rice_decode(payload, k, b)
    if k and int(q.max()) > (n >> b):
        raise CodecError("rice-coded gap larger than the tensor")
    gaps = (q << b) | low
    if k and int(gaps.max()) >= n:
        raise CodecError("rice-coded gap larger than the tensor")
    return gaps


def encode(tensor: np.ndarray, mask: np.ndarray, value_dtype: str = "float32") -> Encoded:
    """Encode the entries of ``tensor`` where ``mask`` is True.

    ``tensor`` is cast to ``value_dtype`` (float32: lossless for float32
    models; float16: lossy); entries outside the mask are not sent.
    """
    flat_mask = np.asarray(mask, dtype=bool).reshape(-1)
    flat = np.asarray(tensor, dtype=_value_dtype(value_dtype)).reshape(-1)
    if flat.shape != flat_mask.shape:
        raise ValueError(f"tensor has {flat.size} entries, mask {flat_mask.size}")
    n = flat.size
    pos = np.flatnonzero(flat_mask)
    k = len(pos)
    values = flat[pos].copy()
    if k == n:
        return Encoded(values, np.array([FULL, 0], np.uint8))
    if k == 0:
        return Encoded(values, np.array([EMPTY, 0], np.uint8))
    gaps = np.diff(np.concatenate([[-1], pos])) - 1
    bitmap_bytes = (n + 7) // 8
    mean_gap = float(gaps.mean())
    centre = max(0, int(round(math.log2(mean_gap + 1)))) if mean_gap > 0 else 0
    best_b, best_bits = None, None
    for b in range(max(0, centre - 2), min(40, centre + 3)):
        bits = _rice_bits(gaps, b)
        if best_bits is None or bits < best_bits:
            best_b, best_bits = b, bits
    # rice bytes: low bits and unary bits are padded separately
    rice_bytes = (k * best_b + 7) // 8 + (best_bits - k * best_b + 7) // 8
    if rice_bytes < bitmap_bytes:
        body = _rice_encode(gaps, best_b)
        return Encoded(values, np.concatenate([np.array([RICE, best_b], np.uint8), body]))
    body = np.packbits(flat_mask)
    return Encoded(values, np.concatenate([np.array([BITMAP, 0], np.uint8), body]))


def decode_positions(enc_mask: np.ndarray, k: int, n: int) -> np.ndarray:
    """The ``k`` kept positions (sorted, int64) of an encoded mask over ``n`` entries."""
    enc_mask = np.asarray(enc_mask)
    if enc_mask.dtype != np.uint8 or enc_mask.ndim != 1 or len(enc_mask) < 2:
        raise CodecError("mask must be a uint8 vector with a 2-byte header")
    kind, b = int(enc_mask[0]), int(enc_mask[1])
    body = enc_mask[2:]
    if kind == FULL:
        if k != n:
            raise CodecError(f"'full' mask but {k} values for {n} positions")
        return np.arange(n, dtype=np.int64)
    if kind == EMPTY:
        if k != 0:
            raise CodecError(f"'empty' mask but {k} values")
        return np.zeros(0, np.int64)
    if kind == BITMAP:
        if len(body) != (n + 7) // 8:
            raise CodecError(f"bitmap of {len(body)} bytes for {n} positions")
        pos = np.flatnonzero(np.unpackbits(body, count=n).view(bool))
    elif kind == RICE:
        if not 0 <= b < 40:
            raise CodecError(f"rice parameter {b} out of range")
        # each gap is in [0, n], so the positions strictly increase (no repeats) and
        # their sum cannot wrap; the last must still fall inside the tensor
        pos = np.cumsum(_rice_gaps(body, k, b, n) + 1) - 1
        if k and (pos[-1] >= n or pos[0] < 0):
            raise CodecError("rice-coded positions fall outside the tensor")
    else:
        raise CodecError(f"unknown mask kind {kind}")
    if len(pos) != k:
        raise CodecError(f"mask keeps {len(pos)} positions but {k} values were sent")
    return pos


def _mask_at(pos: np.ndarray, n: int, shape: tuple[int, ...]) -> np.ndarray:
    flat = np.zeros(n, bool)
    flat[pos] = True
    return flat.reshape(shape)


def decode_mask(enc_mask: np.ndarray, k: int, shape: tuple[int, ...]) -> np.ndarray:
    """The boolean mask of ``shape`` with ``k`` kept positions, from its encoding."""
    n = int(np.prod(shape, dtype=np.int64))
    return _mask_at(decode_positions(enc_mask, k, n), n, shape)


def _value_dtype(name: str) -> type:
    if name not in VALUE_DTYPES:
        raise ValueError(f"value dtype must be one of {VALUE_DTYPES}, got {name!r}")
    return np.float16 if name == "float16" else np.float32


def decode(
    enc: Encoded, shape: tuple[int, ...], value_dtype: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(dense float32 tensor with zeros outside the mask, boolean mask).

    ``value_dtype`` (``float32`` / ``float16``): the values must be exactly that
    width (what the receiver asked for); None accepts either."""
    values = np.asarray(enc.values)
    if values.dtype not in (np.float32, np.float16) or values.ndim != 1:
        raise CodecError("values must be a float32 or float16 vector")
    if value_dtype is not None and values.dtype != _value_dtype(value_dtype):
        raise CodecError(f"values are {values.dtype}, the run sends {value_dtype}")
    n = int(np.prod(shape, dtype=np.int64))
    pos = decode_positions(enc.mask, len(values), n)
    out = np.zeros(n, np.float32)
    out[pos] = values  # by position: an order of magnitude faster than by boolean mask
    return out.reshape(shape), _mask_at(pos, n, shape)


def information_bound_bits(n: int, k: int) -> float:
    """32 bits per kept value + log2 C(n, k) bits for the mask."""
    log2_binom = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
    return 32.0 * k + log2_binom


# -- whole models -----------------------------------------------------------------


def encode_state(
    state: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
    value_dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """A model as wire arrays: ``name#values`` / ``name#mask`` for masked tensors,
    ``name`` for the others (unchanged, except float32 tensors cast to float16
    when ``value_dtype`` is ``float16``)."""
    half = _value_dtype(value_dtype) is np.float16
    out: dict[str, np.ndarray] = {}
    for name, arr in state.items():
        if name in masks:
            enc = encode(arr, masks[name], value_dtype)
            out[name + VALUES_SUFFIX] = enc.values
            out[name + MASK_SUFFIX] = enc.mask
        else:
            arr = np.asarray(arr)
            out[name] = arr.astype(np.float16) if half and arr.dtype == np.float32 else arr
    return out


def wire_dtype(model_dtype: np.dtype | str, value_dtype: str = "float32") -> np.dtype:
    """The dtype a model tensor of ``model_dtype`` travels in (:func:`encode_state`):
    float32 ones in the run's ``value_dtype``, every other one in its own."""
    model_dtype = np.dtype(model_dtype)
    return np.dtype(_value_dtype(value_dtype)) if model_dtype == np.float32 else model_dtype


def widen(arr: np.ndarray) -> np.ndarray:
    """A float16 wire array as float32 (others unchanged)."""
    arr = np.asarray(arr)
    return arr.astype(np.float32) if arr.dtype == np.float16 else arr


def decode_state(
    arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, np.dtype] | None = None, value_dtype: str | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inverse of :func:`encode_state`: (dense state, masks of the encoded tensors).

    ``shapes`` are the model's (name -> shape), which decides what is expected;
    every dense tensor must have its shape. With ``dtypes`` (the model's) and
    ``value_dtype`` (the run's codec dtype), a dense tensor must arrive in the
    dtype :func:`encode_state` gives it, and encoded values in ``value_dtype``.

    Raises
    ------
    CodecError
        On a missing, unexpected, misshapen or undecodable entry.
    """
    state: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    expected: set[str] = set()
    for name, shape in shapes.items():
        vk, mk = name + VALUES_SUFFIX, name + MASK_SUFFIX
        if vk in arrays or mk in arrays:
            if vk not in arrays or mk not in arrays:
                raise CodecError(f"{name}: needs both {vk!r} and {mk!r}")
            expected.update((vk, mk))
            state[name], masks[name] = decode(Encoded(arrays[vk], arrays[mk]), tuple(shape),
                                              value_dtype)
        elif name in arrays:
            expected.add(name)
            arr = np.asarray(arrays[name])
            if tuple(arr.shape) != tuple(shape):
                raise CodecError(f"{name}: shape {tuple(arr.shape)}, expected {tuple(shape)}")
            if dtypes is not None:
                want = wire_dtype(dtypes[name], value_dtype or "float32")
                if arr.dtype != want:
                    raise CodecError(f"{name}: dtype {arr.dtype}, expected {want}")
            state[name] = widen(arr)
        else:
            raise CodecError(f"{name}: missing from the payload")
    extra = set(arrays) - expected
    if extra:
        raise CodecError(f"unexpected arrays in the payload: {sorted(extra)}")
    return state, masks
