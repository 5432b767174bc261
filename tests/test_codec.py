import numpy as np
import pytest

from fedprune.codec import (
    CodecError,
    Encoded,
    decode,
    decode_positions,
    decode_state,
    encode,
    encode_state,
    information_bound_bits,
)

DENSITIES = [0.0, 1e-4, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.95, 1.0]


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", [(1,), (7,), (13, 17), (20, 10, 5, 5)])
def test_round_trip_is_bit_exact(density, shape):
    rng = np.random.default_rng(hash((density, shape)) % 2**32)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) < 0.05] = 0.0  # kept zeros must survive too
    m = rng.random(shape) < density
    enc = encode(w, m)
    out, mask = decode(enc, shape)
    assert np.array_equal(mask, m)
    assert out.dtype == np.float32 and np.array_equal(out.view(np.uint32), np.where(m, w, 0).view(np.uint32))
    assert enc.nbytes == enc.values.nbytes + enc.mask.nbytes == 4 * int(m.sum()) + len(enc.mask)


@pytest.mark.parametrize("density", [1e-4, 0.003, 0.05, 0.3, 0.7, 1.0])
def test_positions_are_the_sorted_kept_indices_for_every_mask_kind(density):
    # wide gaps (density 1e-4 over 10^6 positions: rice parameter b above 8) to dense bitmaps
    rng = np.random.default_rng(int(density * 1e4))
    n = 1_000_000
    m = rng.random(n) < density
    enc = encode(rng.standard_normal(n).astype(np.float32), m)
    pos = decode_positions(enc.mask, int(m.sum()), n)
    assert pos.dtype == np.int64 and np.array_equal(pos, np.flatnonzero(m))
    if density == 1e-4:
        assert enc.kind == "rice" and enc.mask[1] > 8


def test_bitmap_with_the_wrong_count_is_refused():
    m = np.arange(64) % 2 == 0
    enc = encode(np.ones(64, np.float32), m)
    assert enc.kind == "bitmap"
    with pytest.raises(CodecError, match="keeps 32 positions but 31"):
        decode_positions(enc.mask, 31, 64)


def _rice(parts, b):
    """A Rice-coded mask of the gaps q * 2**b + low, for (q, low) in parts (gaps past int64)."""
    low = np.array([(lo >> (b - 1 - j)) & 1 for _, lo in parts for j in range(b)], np.uint8)
    q = np.array([q for q, _ in parts], np.int64)
    unary = np.zeros(int(q.sum()) + len(parts), np.uint8)
    unary[np.cumsum(q + 1) - 1] = 1
    return np.concatenate([np.array([3, b], np.uint8), np.packbits(low), np.packbits(unary)])


@pytest.mark.parametrize("d", [1, 3, 2**40])
def test_rice_gaps_that_wrap_int64_are_refused_not_turned_into_repeats_or_negative_indices(d):
    # a second gap of 2**64 - d: an int64 shift wraps it to -d, so the second position
    # would repeat the first (d = 1), fall before it (3), or far outside (2**40)
    wrap = 2**64 - d
    mask = _rice([(0, 5), (wrap >> 39, wrap & (2**39 - 1))], 39)
    with pytest.raises(CodecError, match="gap larger than the tensor"):
        decode_positions(mask, 2, 100)
    # the same gaps within range decode to the positions they code
    assert decode_positions(_rice([(0, 5), (0, 7)], 39), 2, 100).tolist() == [5, 13]


def test_dense_tensors_of_the_wrong_shape_or_dtype_and_values_of_the_wrong_width_are_refused():
    shapes = {"w": (4, 3), "b": (3,)}
    dtypes = {"w": np.dtype(np.float32), "b": np.dtype(np.float32)}
    good = encode_state({"w": np.ones((4, 3), np.float32), "b": np.ones(3, np.float32)},
                        {"w": np.arange(12).reshape(4, 3) % 2 == 0})
    decode_state(good, shapes, dtypes, "float32")
    for bad_b, why in [(np.ones(4, np.float32), "shape"), (np.ones((3, 1), np.float32), "shape"),
                       (np.float32(1.0).reshape(()), "shape"), (np.ones(3, np.float16), "dtype")]:
        with pytest.raises(CodecError, match=why):
            decode_state({**good, "b": bad_b}, shapes, dtypes, "float32")
    with pytest.raises(CodecError, match="values are float16"):
        decode_state({**good, "w#values": good["w#values"].astype(np.float16)}, shapes, dtypes, "float32")
    half = encode_state({"w": np.ones((4, 3), np.float32), "b": np.ones(3, np.float32)},
                        {"w": np.arange(12).reshape(4, 3) % 2 == 0}, "float16")
    decode_state(half, shapes, dtypes, "float16")  # a float16 run: halves everywhere
    with pytest.raises(CodecError, match="dtype float32"):
        decode_state({**half, "b": np.ones(3, np.float32)}, shapes, dtypes, "float16")


def test_extreme_masks_cost_no_mask_bytes_and_rice_beats_bitmap_when_sparse():
    w = np.ones(1000, np.float32)
    assert encode(w, np.ones(1000, bool)).nbytes == 4000 + 2
    assert encode(w, np.zeros(1000, bool)).nbytes == 2
    sparse = encode(w, np.arange(1000) % 50 == 0)
    assert sparse.kind == "rice" and len(sparse.mask) < 125  # bitmap would be 125 bytes + header
    assert encode(w, np.arange(1000) % 2 == 0).kind == "bitmap"


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.3, 0.5])
def test_size_within_five_percent_of_information_bound(density):
    rng = np.random.default_rng(0)
    n = 200_000
    m = rng.random(n) < density
    enc = encode(rng.standard_normal(n).astype(np.float32), m)
    bound = information_bound_bits(n, int(m.sum())) / 8
    assert bound <= enc.nbytes <= 1.05 * bound


def test_corrupt_encodings_are_refused():
    w = np.arange(100, dtype=np.float32)
    m = np.arange(100) % 7 == 0
    enc = encode(w, m)
    with pytest.raises(CodecError, match="values were sent"):
        decode(Encoded(enc.values[:-1], enc.mask), (100,))
    with pytest.raises(CodecError):
        decode(Encoded(enc.values, enc.mask[:-3]), (100,))
    with pytest.raises(CodecError, match="unknown mask kind"):
        decode(Encoded(enc.values, np.concatenate([[9], enc.mask[1:]]).astype(np.uint8)), (100,))
    with pytest.raises(CodecError, match="outside the tensor"):
        decode(enc, (50,))  # indices out of range for a smaller tensor
    with pytest.raises(CodecError, match="float32"):
        decode(Encoded(enc.values.astype(np.float64), enc.mask), (100,))
    bitmap = encode(w, np.arange(100) % 2 == 0)
    with pytest.raises(CodecError, match="bitmap"):
        decode(Encoded(bitmap.values, np.concatenate([bitmap.mask, [0]]).astype(np.uint8)), (100,))


def test_state_round_trip_and_missing_entries():
    state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float32),
             "steps": np.array(5, np.int64)}
    masks = {"w": np.eye(3, 4, dtype=bool)}
    wire = encode_state(state, masks)
    assert set(wire) == {"w#values", "w#mask", "b", "steps"}
    shapes = {k: v.shape for k, v in state.items()}
    out, out_masks = decode_state(wire, shapes)
    assert np.array_equal(out["w"], np.where(masks["w"], state["w"], 0)) and out["steps"] == 5
    assert np.array_equal(out_masks["w"], masks["w"])
    with pytest.raises(CodecError, match="missing"):
        decode_state({k: v for k, v in wire.items() if k != "b"}, shapes)
    with pytest.raises(CodecError, match="needs both"):
        decode_state({k: v for k, v in wire.items() if k != "w#mask"}, shapes)
    with pytest.raises(CodecError, match="unexpected"):
        decode_state({**wire, "extra": np.ones(1)}, shapes)
