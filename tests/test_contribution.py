import numpy as np
import pytest

from fedprune.contribution import ContributionState, cosine_on_support, tradeoff


def test_opposed_client_gets_lower_weight_than_aligned_ones():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(500)
    clients = [0, 1, 2, 3]
    state = ContributionState(beta=0.5)
    support = np.ones(500, bool)
    for _ in range(5):
        ups = [g + 0.3 * rng.standard_normal(500) for _ in range(3)] + [-g]
        phis = state.update(clients, ups, [support] * 4, [100] * 4)
        w = state.weights(clients, [100] * 4, lam=0.0)
    assert phis[3] < 0 < min(phis[c] for c in range(3))
    assert state.scores[3] == state.floor
    assert w[3] < 0.01 and min(w[c] for c in range(3)) > 0.3
    # with lambda = 1 the weights fall back to data size
    assert state.weights(clients, [100, 100, 100, 100], lam=1.0) == {c: 0.25 for c in clients}


def test_cosine_is_taken_on_the_common_support():
    u_i = np.array([1.0, 0.0, 0.0, 0.0])
    u = np.array([1.0, 5.0, 5.0, 5.0])
    s = np.array([True, False, False, False])
    assert cosine_on_support(u_i, u, s) == pytest.approx(1.0)
    assert cosine_on_support(u_i, u, np.ones(4, bool)) < 0.2


def test_weights_blend_and_sum_to_one():
    state = ContributionState()
    state.scores = {1: 0.9, 2: 0.1}
    w = state.weights([1, 2], [300, 100], lam=0.5)
    assert w[1] == pytest.approx(0.5 * 0.75 + 0.5 * 0.9) and sum(w.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "exponential"])
def test_tradeoff_decays_from_lambda0(schedule):
    vals = [tradeoff(t, 20, 0.8, schedule) for t in range(0, 21)]
    assert vals[0] == pytest.approx(0.8) and all(a >= b for a, b in zip(vals, vals[1:], strict=False))
    assert vals[-1] <= 0.01
    assert tradeoff(7, 20, 0.8, "constant") == 0.8
    with pytest.raises(ValueError, match="valid"):
        tradeoff(1, 20, 0.8, "step")


@pytest.mark.parametrize("schedule", ["cosine", "linear", "exponential", "constant"])
def test_tradeoff_decays_to_its_floor(schedule):
    vals = [tradeoff(t, 20, 0.9, schedule, lambda_min=0.3) for t in range(0, 21)]
    assert vals[0] == pytest.approx(0.9) and all(a >= b for a, b in zip(vals, vals[1:], strict=False))
    assert min(vals) >= 0.3
    if schedule in ("cosine", "linear"):
        assert vals[-1] == pytest.approx(0.3)
    # halfway along, the floor shifts the no-floor value by lambda_min * (1 - f)
    f = tradeoff(10, 20, 1.0, schedule)
    assert tradeoff(10, 20, 0.9, schedule, 0.3) == pytest.approx(0.3 + 0.6 * f)
    with pytest.raises(ValueError, match="lambda_min"):
        tradeoff(1, 20, 0.5, schedule, lambda_min=0.6)


def test_leave_one_out_removes_the_self_term_that_lifts_unrelated_clients():
    # ten mutually orthogonal updates: each one's only overlap with the full aggregate
    # is its own share, so plain CGSV scores them all positive; leave-one-out scores 0
    eye = np.eye(10)
    clients, support = list(range(10)), np.ones(10, bool)
    plain = ContributionState().update(clients, list(eye), [support] * 10, [1] * 10)
    loo = ContributionState(leave_one_out=True).update(clients, list(eye), [support] * 10, [1] * 10)
    assert min(plain.values()) == pytest.approx(1 / np.sqrt(10))
    assert max(abs(v) for v in loo.values()) == pytest.approx(0.0)
    # an opposed client among aligned ones stays negative, and aligned ones stay positive
    g = np.random.default_rng(1).standard_normal(50)
    ups = [g + 0.5 * np.random.default_rng(i).standard_normal(50) for i in range(3)] + [-g]
    s50 = np.ones(50, bool)
    phis = ContributionState(leave_one_out=True).update([0, 1, 2, 3], ups, [s50] * 4, [1] * 4)
    assert phis[3] < -0.5 and min(phis[c] for c in range(3)) > 0.5


def _noisy_majority_round(rng, g, n_bad=6, n_good=4):
    """Good clients follow g; a majority of bad ones share another direction b."""
    b = rng.standard_normal(g.size)
    ups = [g + 0.5 * rng.standard_normal(g.size) for _ in range(n_good)]
    ups += [b + 0.5 * rng.standard_normal(g.size) for _ in range(n_bad)]
    return ups


def test_trusted_reference_is_built_by_the_clients_that_agree_with_past_updates():
    # the failure of the round reference: when the clients pointing elsewhere are the
    # majority of the round, the round's aggregate is their direction
    rng = np.random.default_rng(3)
    g = rng.standard_normal(400)
    clients, support, n = list(range(10)), np.ones(400, bool), [50] * 10
    ups = _noisy_majority_round(rng, g)
    round_phis = ContributionState().update(clients, ups, [support] * 10, n)
    assert min(round_phis[c] for c in range(4, 10)) > max(round_phis[c] for c in range(4))

    st = ContributionState(reference="trusted")
    # no history yet: nothing to score against, no score is set
    assert st.update(clients, [g] * 10, [support] * 10, n) == {} and st.scores == {}
    # the history only has to lean towards g: a weak, noisy past direction
    past = [0.2 * g + rng.standard_normal(400) for _ in range(4)]
    st.observe([np.arange(400)] * 4, past, [0.25] * 4, 400)
    assert st.history is not None and np.linalg.norm(st.history) == pytest.approx(1.0)
    assert 0.05 < float(st.history @ g / np.linalg.norm(g)) < 0.5
    phis = st.update(clients, ups, [support] * 10, n)
    assert set(st.last_trusted) >= {0, 1, 2, 3}  # the 4 good clients and one bad
    assert max(phis[c] for c in range(4, 10)) < 0.5 < min(phis[c] for c in range(4))
    w = st.weights(clients, n, lam=0.0)
    assert sum(w[c] for c in range(4, 10)) < sum(w[c] for c in range(4)) / 2


def test_history_is_a_smoothed_unit_direction():
    s = ContributionState(reference="trusted", history_beta=0.5)
    e0 = np.eye(3)[0]
    s.observe([np.array([0])], [np.array([4.0])], [1.0], 3)
    assert np.allclose(s.history, e0)
    # g = sum_i p_i d_i / ||d_i||: a long update has no more say than a short one
    s.observe([np.array([1]), np.array([2])], [np.array([10.0]), np.array([0.1])], [0.5, 0.5], 3)
    g = (np.eye(3)[1] + np.eye(3)[2]) / np.sqrt(2)
    assert np.allclose(s.history, (e0 + g) / np.linalg.norm(e0 + g))
    before = s.history.copy()
    s.observe([np.array([2])], [np.array([0.0])], [1.0], 3)  # a zero update changes nothing
    assert np.array_equal(s.history, before)
    with pytest.raises(ValueError, match="length"):
        s.observe([np.array([0])], [np.array([1.0])], [1.0], 4)
    with pytest.raises(ValueError, match="length"):  # even when the direction is zero
        s.observe([np.array([0])], [np.array([0.0])], [1.0], 4)
    assert np.array_equal(s.history, before)
    round_ref = ContributionState()
    round_ref.observe([np.array([0])], [np.array([1.0])], [1.0], 3)
    assert round_ref.history is None  # the round reference keeps no history
    with pytest.raises(ValueError, match="reference"):
        ContributionState(reference="median")
    with pytest.raises(ValueError, match="history_beta"):
        ContributionState(reference="trusted", history_beta=1.0)


def test_sparse_supports_in_any_order_but_never_with_repeats():
    rng = np.random.default_rng(3)
    idx = [np.sort(rng.choice(50, 20, replace=False)) for _ in range(3)]
    vals = [rng.standard_normal(20) for _ in range(3)]
    ref = ContributionState().update_sparse([0, 1, 2], idx, vals, 50, [1, 1, 1])
    # the same supports listed out of order (with their values permuted alike)
    perms = [rng.permutation(20) for _ in range(3)]
    shuffled = ContributionState().update_sparse(
        [0, 1, 2], [i[p] for i, p in zip(idx, perms, strict=True)],
        [v[p] for v, p in zip(vals, perms, strict=True)],
        50, [1, 1, 1])
    assert shuffled == pytest.approx(ref)
    for bad in (np.array([1, 2, 2, 7]), np.array([7, 2, 9, 2])):  # sorted and unsorted repeats
        with pytest.raises(ValueError, match="unique"):
            ContributionState().update_sparse([0], [bad], [np.ones(4)], 50, [1])


def test_server_reference_keeps_a_coherent_majority_of_sign_flippers_at_the_floor():
    # 6 of 10 clients send -g: the round's aggregate is theirs, but the server's own
    # update (a noisy look at g, from its root data) is not
    rng = np.random.default_rng(5)
    g = rng.standard_normal(400)
    clients, support, n = list(range(10)), np.ones(400, bool), [50] * 10
    ups = [(1 if c < 4 else -1) * g + 0.5 * rng.standard_normal(400) for c in clients]
    round_phis = ContributionState().update(clients, ups, [support] * 10, n)
    assert min(round_phis[c] for c in range(4, 10)) > max(round_phis[c] for c in range(4))

    st = ContributionState(reference="server")
    assert not st.has_reference and st.update(clients, ups, [support] * 10, n) == {}
    st.server_update = g + 2.0 * rng.standard_normal(400)  # weak: cos(g, it) about 0.45
    phis = st.update(clients, ups, [support] * 10, n)
    assert max(phis[c] for c in range(4, 10)) < 0 < min(phis[c] for c in range(4))
    assert all(st.scores[c] == st.floor for c in range(4, 10))
    w = st.weights(clients, n, lam=0.0)
    assert sum(w[c] for c in range(4, 10)) < 0.01
    # one round's reference is used once: the next round has none until it is set again
    assert st.server_update is None and not st.has_reference
    st.server_update = np.ones(399)
    with pytest.raises(ValueError, match="length"):
        st.update(clients, ups, [support] * 10, n)


def test_classes_rule_moves_weight_only_between_clients_of_the_same_classes():
    # clients 0, 1 push classes 0-1; clients 2, 3 push classes 2-3; nobody below the median
    state = ContributionState(rule="classes")
    state.scores = {0: 0.9, 1: 0.5, 2: 0.5, 3: 0.5}
    up, down = np.array([1.0, 2.0, -1.0, -1.0]), np.array([-1.0, -1.0, 2.0, 1.0])
    pushes = [up, up, down, down]
    w = state.weights([0, 1, 2, 3], [100] * 4, lam=0.0, pushes=pushes)
    # each class group keeps the half of the mass data size gives it, however much
    # better one of its members scores than the other group ...
    assert w[0] + w[1] == pytest.approx(0.5) and w[2] + w[3] == pytest.approx(0.5)
    # ... and inside a group the scores share it
    assert w[0] / w[1] == pytest.approx(0.9 / 0.5) and w[2] == pytest.approx(w[3])
    # proportional scores instead hand the first group 1.4 / 2.4 of the round
    prop = ContributionState(rule="scores")
    prop.scores = dict(state.scores)
    wp = prop.weights([0, 1, 2, 3], [100] * 4, lam=0.0)
    assert wp[0] + wp[1] == pytest.approx(1.4 / 2.4)


def test_classes_rule_keeps_a_class_mass_even_when_only_low_scorers_push_it():
    # client 2 scores a tenth of the others and is the only one to push class 1: the
    # class keeps its data-size mass, and so client 2 keeps its data-size weight (the
    # price of never moving weight between classes; docs/method.md)
    state = ContributionState(rule="classes")
    state.scores = {0: 0.5, 1: 0.5, 2: 0.05}
    a, b = np.array([1.0, -1.0]), np.array([-1.0, 1.0])
    w = state.weights([0, 1, 2], [100] * 3, lam=0.0, pushes=[a, a, b])
    assert w == pytest.approx({0: 1 / 3, 1: 1 / 3, 2: 1 / 3})
    # sharing the class with a clean client, it keeps a tenth of that client's share
    w = state.weights([0, 1, 2], [100] * 3, lam=0.0, pushes=[a, b, b])
    assert w[2] == pytest.approx((2 / 3) * 0.05 / 0.55) and w[0] == pytest.approx(1 / 3)


def test_classes_rule_gives_data_size_for_equal_scores_and_blends_with_lambda():
    state = ContributionState(rule="classes")
    state.scores = {1: 0.3, 2: 0.3, 3: 0.3}
    pushes = [np.array([1.0, 0.0, -1.0]), np.array([0.5, 0.5, -1.0]), np.array([-1.0, -1.0, -1.0])]
    n = [100, 300, 100]
    assert state.weights([1, 2, 3], n, lam=0.0, pushes=pushes) == pytest.approx(
        {1: 0.2, 2: 0.6, 3: 0.2})  # the third pushes nothing up: uniform over the classes
    state.scores[3] = 0.03
    w = state.weights([1, 2, 3], n, lam=0.5, pushes=pushes)
    assert sum(w.values()) == pytest.approx(1.0) and w[3] < 0.2 and w[3] > 0.5 * 0.2
    with pytest.raises(ValueError, match="class push"):
        state.weights([1, 2, 3], n, lam=0.5)


def test_classes_rule_shares_a_class_by_score_when_scored_by_the_round():
    rng = np.random.default_rng(1)
    g = rng.standard_normal(400)
    state = ContributionState(rule="classes", reference="round")
    support = np.ones(400, bool)
    clients = [0, 1, 2, 3]
    same = np.array([1.0, -1.0])  # every client pushes class 0
    for _ in range(3):
        ups = [g + 0.5 * rng.standard_normal(400) for _ in range(3)] + [-g]
        state.update(clients, ups, [support] * 4, [100] * 4)
        w = state.weights(clients, [100] * 4, lam=0.0, pushes=[same] * 4)
    # one class: the rule is the proportional one
    r = np.array([state.scores[c] for c in clients])
    assert [w[c] for c in clients] == pytest.approx(list(r / r.sum()))
    assert w[3] < 0.01


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="rule"):
        ContributionState(rule="softmax")
