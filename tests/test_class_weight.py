"""fedprune_lab/class_weight.py: the per-round class-bias measure used in docs/results.md."""

import numpy as np
import pytest

from fedprune_lab import class_weight


def _round(weights, trusted=()):
    return {"contributions": {str(c): {"weight": w} for c, w in weights.items()},
            "trusted_clients": list(trusted)}


def test_recent_class_weight_and_relative_weight():
    # client 0 holds class 0, client 1 class 1, client 2 classes 0 and 1 (1:3), client 3 class 2
    shares = np.array([[1, 0, 0], [0, 1, 0], [0.25, 0.75, 0], [0, 0, 1]])
    rounds = [
        {"round": 0},  # no contributions (initial evaluation): skipped
        _round({0: 0.75, 1: 0.25}),
        _round({0: 0.25, 1: 0.75}),
        _round({2: 0.5, 3: 0.5}, trusted=[2]),
    ]
    rows = class_weight.class_bias(rounds, shares, window=2)
    # only the third contributing round has two rounds of history: class 0 got
    # (0.75 + 0.25) / 2 = 0.5, class 1 0.5, class 2 nothing
    np.testing.assert_allclose(rows, [[0.5, 1.0, 1.0], [0.0, 1.0, 0.0]])


def test_recent_class_weight_follows_the_class_distribution():
    shares = np.array([[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
    rounds = [_round({0: 1.0}), _round({1: 0.8, 2: 0.2})]
    rows = class_weight.class_bias(rounds, shares, window=1)
    # the previous round gave all its weight to class 0: 0.25 of client 2's data
    np.testing.assert_allclose(rows[:, 0], [0.0, 0.25])
    np.testing.assert_allclose(rows[:, 1], [1.6, 0.4])


def test_trusted_classes_and_class_weight_entropy():
    shares = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    rounds = [
        {"round": 0},  # no contributions: skipped
        _round({0: 0.5, 1: 0.5}, trusted=[0, 2]),  # trusted hold classes 0, 1; weights 1:1
        _round({2: 0.5, 3: 0.5}),  # no trusted set; classes 0, 1, 2 at 1:1:2
    ]
    rows = class_weight.round_class_stats(rounds, shares)
    assert rows.shape == (2, 2) and rows[0, 0] == 2 and np.isnan(rows[1, 0])
    np.testing.assert_allclose(rows[:, 1], [1.0, 1.5])


def test_window_longer_than_history_gives_no_rows():
    rows = class_weight.class_bias([_round({0: 1.0})], np.ones((1, 1)), window=1)
    assert rows.shape == (0, 3)


def test_missing_study_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no results.json"):
        class_weight.main([str(tmp_path), "fedprune__x"])
