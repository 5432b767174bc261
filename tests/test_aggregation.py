import numpy as np
import pytest

from fedprune.aggregation import masked_average, restore_residuals, select_global_mask


def test_masked_average_matches_hand_computed_toy():
    prev = {"w": np.array([10.0, 20.0, 30.0, 40.0], np.float32), "b": np.array([0.0], np.float32)}
    s1 = {"w": np.array([1.0, 2.0, 0.0, 0.0], np.float32), "b": np.array([1.0], np.float32)}
    s2 = {"w": np.array([3.0, 0.0, 5.0, 0.0], np.float32), "b": np.array([4.0], np.float32)}
    m1 = {"w": np.array([1, 1, 0, 0], bool)}
    m2 = {"w": np.array([1, 0, 1, 0], bool)}
    agg, union = masked_average([s1, s2], [m1, m2], [0.25, 0.75], prev)
    # position 0: both clients -> 0.25*1 + 0.75*3; 1: only client 1; 2: only client 2; 3: nobody
    assert np.allclose(agg["w"], [0.25 * 1 + 0.75 * 3, 2.0, 5.0, 40.0])
    assert np.allclose(agg["b"], [0.25 * 1 + 0.75 * 4])
    assert union["w"].tolist() == [True, True, True, False] and agg["w"].dtype == np.float32


def test_new_mask_takes_top_magnitude_of_union_within_budget():
    agg = {"w": np.array([0.1, -3.0, 0.2, 9.0, 2.0])}
    union = {"w": np.array([1, 1, 1, 0, 1], bool)}
    m = select_global_mask(agg, union, {"w": 2})
    assert m["w"].tolist() == [False, True, False, False, True]  # 9.0 is not in the union
    # a union smaller than the budget is filled from the previous mask first
    m2 = select_global_mask(agg, {"w": np.array([0, 1, 0, 0, 0], bool)}, {"w": 3},
                            fallback={"w": np.array([1, 0, 1, 0, 0], bool)})
    assert m2["w"].tolist() == [True, True, True, False, False]


def test_residual_restoration_keeps_pruned_values():
    agg = {"w": np.array([1.0, 2.0, 3.0], np.float32), "b": np.array([7.0], np.float32)}
    masks = {"w": np.array([True, False, True])}
    kept = restore_residuals(agg, masks, residual=True)
    assert kept["w"].tolist() == [1.0, 2.0, 3.0]
    zeroed = restore_residuals(agg, masks, residual=False)
    assert zeroed["w"].tolist() == [1.0, 0.0, 3.0] and zeroed["b"].tolist() == [7.0]


def test_grown_positions_averaged_over_all_clients_shrink_a_lone_grower():


    prev = {"w": np.array([1.0, 1.0, 5.0, 0.0], np.float32)}
    sent = np.array([True, True, False, False])  # both clients received positions 0, 1
    a = {"w": np.array([2.0, 0.0, 4.0, 0.0], np.float32)}  # dropped 1, grew 2
    b = {"w": np.array([4.0, 3.0, 0.0, 0.0], np.float32)}
    ma, mb = {"w": np.array([1, 0, 1, 0], bool)}, {"w": np.array([1, 1, 0, 0], bool)}
    holders, _ = masked_average([a, b], [ma, mb], [0.25, 0.75], prev)
    allv, union = masked_average([a, b], [ma, mb], [0.25, 0.75], prev,
                                 started_at_zero=[{"w": ~sent}, {"w": ~sent}])
    assert holders["w"][2] == pytest.approx(4.0)  # the lone grower decides the value
    assert allv["w"][2] == pytest.approx(0.25 * 4.0)  # b started at 0 there and voted 0
    # received positions: a dropped position is still averaged over its holders only
    assert allv["w"][0] == pytest.approx(0.25 * 2 + 0.75 * 4) and allv["w"][1] == pytest.approx(3.0)
    assert allv["w"][3] == prev["w"][3] and not union["w"][3]  # held by nobody: kept
    assert list(union["w"]) == [True, True, True, False]


def test_residual_start_adds_the_residual_to_grown_positions_only():
    prev = {"w": np.array([1.0, 1.0, 5.0, 7.0], np.float32)}
    sent = np.array([True, True, False, False])
    a = {"w": np.array([2.0, 0.0, 4.0, 0.0], np.float32)}  # grew 2 (from 0 to 4)
    b = {"w": np.array([4.0, 3.0, 0.0, 0.0], np.float32)}
    ma, mb = {"w": np.array([1, 0, 1, 0], bool)}, {"w": np.array([1, 1, 0, 0], bool)}
    z = [{"w": ~sent}, {"w": ~sent}]
    zero, _ = masked_average([a, b], [ma, mb], [0.25, 0.75], prev, z)
    res, _ = masked_average([a, b], [ma, mb], [0.25, 0.75], prev, z, residual_start=True)
    # grown position: a's update 4 with weight 0.25, b's zero vote (no update) 0.75
    assert zero["w"][2] == pytest.approx(0.25 * 4.0)
    assert res["w"][2] == pytest.approx(5.0 + 0.25 * 4.0)
    holders, _ = masked_average([a, b], [ma, mb], [0.25, 0.75], prev, z, zero_votes=False,
                                residual_start=True)
    assert holders["w"][2] == pytest.approx(5.0 + 4.0)  # only the grower counts
    # received and untouched positions are the same either way
    assert res["w"][[0, 1, 3]].tolist() == zero["w"][[0, 1, 3]].tolist() == [3.5, 3.0, 7.0]
    with pytest.raises(ValueError, match="started_at_zero"):
        masked_average([a, b], [ma, mb], [0.25, 0.75], prev, residual_start=True)


def test_weighted_average_keeps_0d_buffers_as_arrays():
    from fedprune.aggregation import weighted_average

    out = weighted_average([{"n": np.array(3, np.int64)}, {"n": np.array(6, np.int64)}], [1, 2])
    assert isinstance(out["n"], np.ndarray) and out["n"].shape == () and int(out["n"]) == 5


def _masked_average_reference(states, masks, weights, previous, started_at_zero=None,
                              zero_votes=True, residual_start=False):
    """The definition, position by position, in plain dense NumPy: with residual_start a
    client that got a position as 0 contributes ``previous + its value`` there (its
    update on top of the residual) and a zero vote ``previous`` (no update)."""
    p = np.asarray(weights, dtype=np.float64)
    out, union = {}, {}
    for key in masks[0]:
        num = np.zeros(previous[key].shape)
        den = np.zeros(previous[key].shape)
        base = previous[key].astype(np.float64) if residual_start else 0.0
        for i, (s, m) in enumerate(zip(states, masks, strict=True)):
            z = started_at_zero[i][key] if started_at_zero is not None else False
            value = s[key].astype(np.float64) + np.where(z, base, 0.0)
            num += np.where(m[key], p[i] * value, 0.0)
            den += p[i] * m[key]
            if started_at_zero is not None and zero_votes:
                vote = z & ~m[key]
                den += p[i] * vote
                num += np.where(vote, p[i] * base, 0.0)
        held = np.logical_or.reduce([m[key] for m in masks]) & (den > 0)
        agg = previous[key].astype(np.float64).copy()
        agg[held] = num[held] / den[held]
        out[key], union[key] = agg.astype(previous[key].dtype), held
    return out, union


@pytest.mark.parametrize("shared_sent_mask", [True, False])
def test_masked_average_matches_its_definition_on_random_inputs(shared_sent_mask):
    rng = np.random.default_rng(3)
    shapes = {"a": (7, 5), "b": (40,)}
    previous = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    sent = {k: rng.random(s) < 0.3 for k, s in shapes.items()}
    for _trial in range(5):
        k = 6
        weights = rng.random(k)
        weights[0] = 0.0  # a zero-weight client changes nothing
        masks, zeros = [], []
        for _ in range(k):
            own = sent if shared_sent_mask else {n: rng.random(s) < 0.3 for n, s in shapes.items()}
            # each client keeps most of what it got and grows a few positions
            masks.append({n: (own[n] & (rng.random(s) < 0.8)) | (rng.random(s) < 0.05)
                          for n, s in shapes.items()})
            zeros.append({n: ~own[n] for n in shapes} if not shared_sent_mask else None)
        if shared_sent_mask:
            z = {n: ~sent[n] for n in shapes}
            zeros = [z] * k  # one object, as the strategy passes it
        states = [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
                  for _ in range(k)]
        for saz, votes, resume in ((None, True, False), (zeros, True, False),
                                   (zeros, True, True), (zeros, False, True)):
            got, got_union = masked_average(states, masks, weights, previous, saz,
                                            zero_votes=votes, residual_start=resume)
            want, want_union = _masked_average_reference(states, masks, weights, previous, saz,
                                                         votes, resume)
            for n in shapes:
                assert np.array_equal(got_union[n], want_union[n])
                np.testing.assert_allclose(got[n], want[n], rtol=1e-6, atol=1e-7)
                assert got[n].dtype == np.float32 and got[n].shape == shapes[n]
