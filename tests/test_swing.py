"""fedprune_lab/swing.py: the round-to-round swing quoted in docs/results.md."""

import json

import pytest

from fedprune_lab.swing import main, seed_row


def test_seed_row_measures_the_swing_of_the_last_rounds():
    rounds = [{"round": 0, "accuracy": 0.1}] + [
        {"round": r, "accuracy": 0.8 if r % 2 else 0.6, "dense_accuracy": 0.5}
        for r in range(1, 21)]
    last5, change, drop, dense = seed_row(rounds)
    assert last5 == pytest.approx((0.8 * 2 + 0.6 * 3) / 5)  # rounds 16-20
    assert change == pytest.approx(0.2) and drop == pytest.approx(0.2) and dense == 0.5


def test_a_pooled_row_per_folder(tmp_path, capsys):
    for seed, acc in ((0, 0.5), (1, 0.7)):
        d = tmp_path / "run" / f"seed-{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(
            {"rounds": [{"round": r, "accuracy": acc} for r in range(6)]}))
    main([str(tmp_path / "run")])
    row = capsys.readouterr().out.splitlines()[-1]
    assert "| 2 | 0.6000 +- 0.1000 | 0.0000 +- 0.0000 |" in row
    with pytest.raises(SystemExit, match="no results.json"):
        main([str(tmp_path / "none")])
