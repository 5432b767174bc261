"""The study results kept in git (docs/results/studies/*.json) and the runs folder the
study runner fills (docs/results/runs, ignored by git)."""

import json
import os
from datetime import date

from fedprune_lab import archive
from fedprune_lab.report import load_runs
from fedprune_lab.scoreboard import SUITE, index, scoreboard

from conftest import ROOT


def _run(folder, seed, acc, day=None):
    rounds = [{"round": r, "accuracy": acc * r, "bytes_up": 10 * r,
               "contributions": {"1": {"weight": 0.5}}, "layer_density": {"a": 0.2}}
              for r in range(3)]
    del rounds[0]["bytes_up"]  # a metric a round lacks stays absent; a None stays None
    rounds[0]["lambda_t"] = None
    doc = {"config": {"num-server-rounds": 2, "seed": seed, "strategy": "fedprune"},
           "rounds": rounds, "summary": {"rounds_completed": 2}, "noise_rates": {"1": 0.0}}
    d = folder / f"seed-{seed}"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(doc))
    (d / "job.json").write_text(json.dumps({"num-supernodes": 7}))
    if day is not None:
        t = (date.fromisoformat(day) - date(1970, 1, 1)).total_seconds() + 43200
        os.utime(d / "results.json", (t, t))
    return doc


def test_pack_keeps_the_scalar_round_metrics_and_restore_gives_them_back(tmp_path):
    runs, studies = tmp_path / "runs", tmp_path / "studies"
    _run(runs / "study-a" / "fedprune__x", 0, 0.4, day="2026-11-30")
    _run(runs / "study-a" / "fedprune__x", 1, 0.3)
    half = runs / "study-a" / "feddst" / "seed-0"  # an incomplete run is not archived
    half.mkdir(parents=True)
    (half / "results.json").write_text(json.dumps(
        {"config": {"num-server-rounds": 5}, "rounds": [], "summary": {"rounds_completed": 1}}))
    (out,) = archive.pack(runs, studies)
    entries = json.loads(out.read_text())
    assert sorted(entries) == ["fedprune__x/seed-0", "fedprune__x/seed-1"]
    e = entries["fedprune__x/seed-0"]
    assert e["measured"] == "2026-11-30" and e["num-supernodes"] == 7
    assert archive.expand(e)["rounds"][2] == {"round": 2, "accuracy": 0.8, "bytes_up": 20}
    assert e["rounds"]["columns"] == ["round", "accuracy", "lambda_t", "bytes_up"]  # no per-client data
    assert archive.expand(e)["rounds"][0] == {"round": 0, "accuracy": 0.0, "lambda_t": None}
    assert len(out.read_text().splitlines()) == 4  # one line per run
    before = load_runs(runs)

    restored = tmp_path / "restored"
    assert archive.restore(restored, studies) == 2
    after = load_runs(restored)
    assert [(r.study, r.run, r.seed, [x["accuracy"] for x in r.rounds]) for r in after] == \
        [(r.study, r.run, r.seed, [x["accuracy"] for x in r.rounds]) for r in before
         if r.run == "fedprune__x"]
    res = restored / "study-a" / "fedprune__x" / "seed-0" / "results.json"
    assert date.fromtimestamp(res.stat().st_mtime).isoformat() == "2026-11-30"
    assert [s.num_supernodes for s in index(restored)] == [7, 7]
    assert archive.restore(restored, studies) == 0  # never replaces what is there
    # packing the restored tree again gives the same archive (days kept)
    again = tmp_path / "again"
    archive.pack(restored, again)
    assert (again / "study-a.json").read_text() == out.read_text()


def test_the_committed_archive_gives_the_committed_scoreboard(tmp_path):
    """docs/results/scoreboard.md is what fedprune-scoreboard makes from the runs that
    docs/results/studies holds, on a clone without the runs folder."""
    runs = tmp_path / "runs"
    assert archive.restore(runs, archive.STUDIES) > 0
    text, _ = scoreboard(SUITE, runs, tmp_path / "scoreboard.md", plots=False)
    figure = "\n![accuracy vs upload, one panel per cell](scoreboard.png)\n"
    assert text == (ROOT / "docs" / "results" / "scoreboard.md").read_text().replace(figure, "")


def test_git_keeps_the_archive_not_the_runs_folder():
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "/docs/results/runs/" in ignore
    assert list(archive.STUDIES.glob("*.json"))
