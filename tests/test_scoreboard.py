"""fedprune-scoreboard: stored runs found by configuration, verdicts, missing jobs."""

import json

import pytest

from fedprune.config import RunConfig
from fedprune_lab import scoreboard
from fedprune_lab.experiments import load_study

STUDY = """study: board-test
seeds: [0, 1]
num-server-rounds: 3
federation:
  num-supernodes: 4
runs:
  fedprune: {strategy: fedprune}
  feddst: {strategy: feddst}
  fedavg: {strategy: fedavg}
  fedavg-lr0.05: {strategy: fedavg, lr: 0.05}
grid:
  partition:
    iid: {partitioner: iid}
"""
SUITE = """version: 3
reference: FedPrune
cells:
  - name: only
    title: "the only cell"
    study: study.yaml
    point: iid
methods:
  FedPrune: fedprune
  FedDST: feddst
  FedAvg (best lr): [fedavg, fedavg-lr0.05]
"""


def _write(path, overrides, accs, up=100.0):
    path.mkdir(parents=True)
    rounds = [{"round": i, "accuracy": a, "bytes_up": int(up * 1e6) if i else 0}
              for i, a in enumerate(accs)]
    path.joinpath("results.json").write_text(json.dumps({
        "config": RunConfig.from_mapping(overrides).to_dict(), "rounds": rounds,
        "summary": {"rounds_completed": len(accs) - 1}}))


@pytest.fixture
def board(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "study.yaml").write_text(STUDY)
    (conf / "suite.yaml").write_text(SUITE)
    monkeypatch.setattr(scoreboard, "ROOT", tmp_path)  # paths in the table, relative to it
    return conf, tmp_path / "runs", tmp_path / "out.md"


def test_runs_are_found_by_configuration_and_verdicts_follow_one_std(board):
    conf, runs, out = board
    jobs = {(j.run, j.seed): j for j in load_study(conf / "study.yaml")}
    for seed in (0, 1):
        j = jobs[("fedprune__iid", seed)]  # in its own folder
        _write(runs / j.key, j.overrides, [0.1, 0.80, 0.90, 0.90 + 0.01 * seed])
        j = jobs[("feddst__iid", seed)]  # stored by another study: found by its config
        _write(runs / "elsewhere" / f"dst-{seed}", j.overrides, [0.1, 0.5, 0.6, 0.6 + 0.01 * seed])
        j = jobs[("fedavg-lr0.05__iid", seed)]  # the better of FedAvg's two lrs
        _write(runs / j.key, j.overrides, [0.1, 0.9, 0.95, 0.95], up=400.0)
    # a run whose config differs (another sparsity) is not FedDST's
    other = {**jobs[("feddst__iid", 0)].overrides, "sparsity": 0.5}
    _write(runs / "elsewhere" / "wrong", other, [0.1, 0.99, 0.99, 0.99])
    text, missing = scoreboard.scoreboard(conf / "suite.yaml", runs, out, plots=False)
    assert out.read_text() == text and "suite version 3" in text
    row = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
           if line.startswith("| ") and "---" not in line}
    assert " win |" in row["FedDST"] and "0.6050 +- 0.0071" in row["FedDST"]  # not the 0.99 run
    best = row["FedAvg (best lr): `fedavg-lr0.05` (1 of 2 not measured yet)"]
    assert best.endswith("| loss |") and "| 2/2 |" in best
    # within FedPrune's 300 MB FedAvg has had its first round only (400 MB a round)
    assert "| 0.1000 |" in best or "| 0.1000 +- 0.0000 |" in best
    assert sorted(j.key for j in missing) == sorted(
        jobs[("fedavg__iid", s)].key for s in (0, 1))
    assert "1 wins, 0 ties, 1 losses; 2 runs missing" in text


def test_a_cell_without_its_reference_runs_is_marked_not_measured(board):
    conf, runs, out = board
    text, missing = scoreboard.scoreboard(conf / "suite.yaml", runs, out, plots=False)
    assert "not measured yet: 8 runs to go" in text and len(missing) == 8


def test_a_suite_without_the_reference_row_is_an_error(board):
    conf, runs, out = board
    (conf / "suite.yaml").write_text(SUITE.replace("  FedPrune: fedprune\n", ""))
    with pytest.raises(Exception, match="reference row 'FedPrune'"):
        scoreboard.load_suite(conf / "suite.yaml")
