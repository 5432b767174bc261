"""fedprune_lab/weight_stats.py: the weight statistics quoted in docs/results.md."""

import json

import pytest

from fedprune_lab import weight_stats


def _round(acc, weights, clipped=()):
    return {"accuracy": acc, "clipped_clients": list(clipped),
            "contributions": {str(c): {"weight": w} for c, w in weights.items()}}


def test_seed_stats_of_known_rounds():
    rounds = [
        {"round": 0, "accuracy": 0.1},  # initial evaluation: no weights, skipped
        _round(0.5, {0: 0.5, 1: 0.5}),
        _round(0.7, {0: 0.75, 1: 0.25}, clipped=[1]),
        _round(0.55, {0: 0.5, 1: 0.5}),  # a drop of 15 points
        _round(0.5, {0: 0.5, 1: 0.5}),  # 5 points: not counted
    ]
    last5, clipped, share, top, change, drops, low = weight_stats.seed_stats(rounds)
    assert last5 == pytest.approx(0.5625)  # round 0 excluded: (0.5 + 0.7 + 0.55 + 0.5) / 4
    assert clipped == pytest.approx(0.25)
    # equal weights: 1 / (2 * 0.25) / 2 = 1; 0.75/0.25: 1 / 0.625 / 2 = 0.8
    assert share == pytest.approx(0.95)
    assert top == pytest.approx(0.5625)
    assert change == pytest.approx((0.2 + 0.15 + 0.05) / 3)
    assert drops == 1
    assert low == pytest.approx(0.5)


def test_too_few_rounds_is_an_error():
    with pytest.raises(ValueError, match="fewer than two"):
        weight_stats.seed_stats([_round(0.5, {0: 1.0})])


def test_pooled_folders_and_table(tmp_path, capsys):
    for study, seed in (("a", 0), ("b", 3)):
        d = tmp_path / study / "run" / f"seed-{seed}"
        d.mkdir(parents=True)
        rounds = [_round(0.5, {0: 1.0}), _round(0.5 + seed / 10, {0: 0.5, 1: 0.5})]
        (d / "results.json").write_text(json.dumps({"rounds": rounds}))
    weight_stats.main([f"{tmp_path / 'a' / 'run'},{tmp_path / 'b' / 'run'}"])
    row = capsys.readouterr().out.splitlines()[-1]
    # two seeds pooled; last-5 0.5 and 0.65
    assert row.startswith("| run | 2 | 0.575 +- 0.106 |")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no results.json"):
        weight_stats.main([str(tmp_path / "nothing")])
