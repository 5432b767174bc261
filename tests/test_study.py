"""fedprune-study (expansion of study files, resuming, failures) and fedprune-summary's tables."""

import dataclasses
import json
import shlex
import subprocess
import sys

import pytest

from fedprune.config import ConfigError
from fedprune_lab import study
from fedprune_lab.experiments import load_study
from fedprune_lab.report import (
    Run,
    accuracy_within,
    last_mean,
    load_runs,
    server_share,
    study_table,
    summarise,
    to_target,
)

STUDY = """\
study: demo
seeds: [0, 1]
num-server-rounds: 3
lr: 0.05
federation:
  num-supernodes: 6
runs:
  fedavg: {strategy: fedavg}
  fedprune: {strategy: fedprune, lr: 0.03}
grid:
  sparsity: [0.5, 0.9]
  partition:
    iid: {partitioner: iid}
    path: {partitioner: pathological, classes-per-client: 2, lr: 0.01}
"""


@pytest.fixture
def study_file(tmp_path):
    f = tmp_path / "demo.yaml"
    f.write_text(STUDY)
    return f


def test_a_study_file_expands_to_every_run_grid_point_and_seed(study_file):
    jobs = load_study(study_file)
    assert len(jobs) == 2 * 2 * 2 * 2
    by_key = {j.key: j for j in jobs}
    j = by_key["demo/fedprune__sparsity=0.9__iid/seed-1"]
    assert j.overrides["strategy"] == "fedprune" and j.overrides["sparsity"] == 0.9
    assert j.overrides["lr"] == 0.03 and j.overrides["seed"] == 1  # the run's lr over the file's
    assert j.labels == {"sparsity": "sparsity=0.9", "partition": "iid"} and j.num_supernodes == 6
    # a grid point's overrides win over the run's, and --set over everything
    assert by_key["demo/fedprune__sparsity=0.5__path/seed-0"].overrides["lr"] == 0.01
    jobs = load_study(study_file, {"lr": 0.2}, seeds=[7])
    assert {j.seed for j in jobs} == {7} and {j.overrides["lr"] for j in jobs} == {0.2}


def test_a_dry_run_piped_into_head_stops_without_a_traceback(study_file, tmp_path):
    """`fedprune-study FILE --dry-run | head -1`: the closed pipe ends the listing quietly."""
    # 200 seeds: 1600 lines (about 150 kB), more than a pipe holds, so the listing outlives `head`
    cmd = (f"{shlex.quote(sys.executable)} -m fedprune_lab.study {shlex.quote(str(study_file))} "
           f"--out {shlex.quote(str(tmp_path / 'out'))} --seeds $(seq 0 199) --dry-run | head -1")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                       cwd=study.ROOT)
    assert p.stdout.startswith("[fedprune-study] 1600 jobs, 0 already done")
    assert len(p.stdout.splitlines()) == 1
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_a_bad_study_file_names_the_file_and_the_run(study_file, tmp_path):
    study_file.write_text(STUDY.replace("lr: 0.03", "learning-rate: 0.03"))
    with pytest.raises(ConfigError, match=r"demo.yaml: run 'fedprune__sparsity=0.5__iid'"):
        load_study(study_file)
    study_file.write_text(STUDY.replace("[0.5, 0.9]", "[]"))
    with pytest.raises(ConfigError, match="grid axis 'sparsity' is empty"):
        load_study(study_file)
    study_file.write_text(STUDY.replace("seeds: [0, 1]", "seeds: zero"))
    with pytest.raises(ConfigError, match="'seeds' must be"):
        load_study(study_file)


def _results(rounds: int, done: int, accs=None, up=1_000_000, config=None) -> dict:
    accs = accs or [0.5] * done
    rows = [{"round": t + 1, "accuracy": a, "bytes_up": up, "bytes_down": up, "clients": 2,
             "wall_s": 10.0, "aggregate_s": 0.25, "attacker_clients": []}
            for t, a in enumerate(accs[:done])]
    return {"config": {**(config or {}), "num-server-rounds": rounds}, "rounds": rows,
            "summary": {"rounds_completed": done, "final_accuracy": rows[-1]["accuracy"],
                        "best_accuracy": max(r["accuracy"] for r in rows),
                        "total_bytes_up": up * done}}


def test_the_runner_skips_finished_jobs_reruns_stopped_ones_and_reports_failures(
        study_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    jobs = {j.key: j for j in load_study(study_file, seeds=[0])}
    key = "demo/fedavg__sparsity=0.5__iid/seed-0"
    done = out / key
    done.mkdir(parents=True)
    (done / "results.json").write_text(json.dumps(_results(3, 3, config=study.job_config(jobs[key]))))
    stopped = out / "demo/fedavg__sparsity=0.9__iid/seed-0"
    stopped.mkdir(parents=True)
    (stopped / "results.json").write_text(json.dumps(_results(3, 1)))  # an interrupted run

    only = ["demo/fedavg__*iid"]
    study.main([str(study_file), "--out", str(out), "--seeds", "0", "--only", *only, "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert "2 jobs, 1 already done, 0 stale, 1 to run" in lines[0]
    assert any(ln.split()[:2] == ["done", "demo/fedavg__sparsity=0.5__iid/seed-0"] for ln in lines)
    assert any(ln.split()[:2] == ["todo", "demo/fedavg__sparsity=0.9__iid/seed-0"] for ln in lines)

    ran = []

    def fake_run_job(job, path, engine, app_dir):
        ran.append(job.key)
        path.mkdir(parents=True, exist_ok=True)
        if "fedprune" in job.key and "path" in job.key:
            return 1  # this one fails
        (path / "results.json").write_text(json.dumps(_results(3, 3, config=study.job_config(job))))
        return 0

    monkeypatch.setattr(study, "run_job", fake_run_job)
    with pytest.raises(SystemExit) as exc:
        study.main([str(study_file), "--out", str(out), "--seeds", "0"])
    assert exc.value.code == 1
    assert "demo/fedavg__sparsity=0.5__iid/seed-0" not in ran  # already complete: skipped
    assert "demo/fedavg__sparsity=0.9__iid/seed-0" in ran and len(ran) == 7
    text = capsys.readouterr().out
    assert "failed jobs:" in text and "demo/fedprune__sparsity=0.5__path/seed-0" in text
    ran.clear()
    with pytest.raises(SystemExit):  # a second call runs only the failed ones
        study.main([str(study_file), "--out", str(out), "--seeds", "0"])
    assert sorted(ran) == ["demo/fedprune__sparsity=0.5__path/seed-0",
                           "demo/fedprune__sparsity=0.9__path/seed-0"]
    with pytest.raises(SystemExit, match="no jobs match"):
        study.main([str(study_file), "--out", str(out), "--only", "nothing*"])


def test_a_result_made_with_another_config_is_stale_and_rerun_only_when_asked(
        study_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    jobs = {j.key: j for j in load_study(study_file, seeds=[0])}
    key = "demo/fedprune__sparsity=0.9__iid/seed-0"
    cfg = study.job_config(jobs[key])
    assert study.config_drift(tmp_path / "missing.json", jobs[key]) == []
    res = out / key / "results.json"
    res.parent.mkdir(parents=True)
    # the same config recorded with another results folder: not stale
    res.write_text(json.dumps(_results(3, 3, config={**cfg, "results-dir": "/elsewhere"})))
    assert study.config_drift(res, jobs[key]) == []
    # a default that changed since the run (alpha0), and a key the run predates that
    # the job now sets away from its default (lr)
    old = {k: v for k, v in cfg.items() if k != "lr"}
    old["alpha0"] = cfg["alpha0"] + 0.2
    res.write_text(json.dumps(_results(3, 3, config=old)))
    drift = study.config_drift(res, jobs[key])
    assert len(drift) == 2 and any(d.startswith("alpha0: ") for d in drift)
    assert "lr: (not recorded) -> 0.03" in drift
    # a key the run predates, left at its default, is not drift
    old = {k: v for k, v in cfg.items() if k != "round-retries"}
    res.write_text(json.dumps(_results(3, 3, config=old)))
    assert study.config_drift(res, jobs[key]) == []

    # the mask schedule is not compared where the mask does not move
    fedavg = jobs["demo/fedavg__sparsity=0.9__iid/seed-0"]
    res.write_text(json.dumps(_results(3, 3, config={**study.job_config(fedavg), "alpha0": 0.9})))
    assert study.config_drift(res, fedavg) == []
    static = dataclasses.replace(jobs[key], overrides={**jobs[key].overrides,
                                                      "dynamic-topology": False})
    res.write_text(json.dumps(_results(3, 3, config={**study.job_config(static), "alpha0": 0.9})))
    assert study.config_drift(res, static) == []
    res.write_text(json.dumps(_results(3, 3, config={**cfg, "alpha0": 0.9})))
    assert study.config_drift(res, jobs[key]) == [f"alpha0: 0.9 -> {cfg['alpha0']!r}"]
    # nor the sparsity where the model is dense (`--set sparsity=0.9` leaves FedAvg done)
    res.write_text(json.dumps(_results(3, 3, config={**study.job_config(fedavg), "sparsity": 0.5})))
    assert study.config_drift(res, fedavg) == []
    res.write_text(json.dumps(_results(3, 3, config={**cfg, "sparsity": 0.5})))
    assert study.config_drift(res, jobs[key]) == [f"sparsity: 0.5 -> {cfg['sparsity']!r}"]
    # nor the CGSV keys where nothing is weighted by CGSV
    res.write_text(json.dumps(_results(3, 3, config={**study.job_config(fedavg),
                                                      "cgsv-reference": "trusted"})))
    assert study.config_drift(res, fedavg) == []
    other = "round" if cfg["cgsv-reference"] == "trusted" else "trusted"
    res.write_text(json.dumps(_results(3, 3, config={**cfg, "cgsv-reference": other})))
    assert study.config_drift(res, jobs[key]) == [
        f"cgsv-reference: {other!r} -> {cfg['cgsv-reference']!r}"]
    # a run from before cgsv-reference existed scored against the round, whatever
    # today's default is
    before = {k: v for k, v in cfg.items() if k != "cgsv-reference"}
    res.write_text(json.dumps(_results(3, 3, config=before)))
    for ref, drift in (("round", []), ("trusted", ["cgsv-reference: (not recorded) -> 'trusted'"])):
        job = dataclasses.replace(jobs[key], overrides={**jobs[key].overrides,
                                                       "cgsv-reference": ref})
        assert study.config_drift(res, job) == drift
    # ... and one from before clip-window existed clipped with this round's median only
    before = {k: v for k, v in cfg.items() if k != "clip-window"}
    res.write_text(json.dumps(_results(3, 3, config=before)))
    for window, drift in ((1, []), (3, ["clip-window: (not recorded) -> 3"])):
        job = dataclasses.replace(jobs[key], overrides={**jobs[key].overrides,
                                                       "clip-window": window})
        assert study.config_drift(res, job) == drift
    # the clipping keys are not compared for a run that does not clip
    res.write_text(json.dumps(_results(3, 3, config={**study.job_config(fedavg),
                                                      "clip-window": 7})))
    assert study.config_drift(res, fedavg) == []

    res.write_text(json.dumps(_results(3, 3, config={**cfg, "sparsity": 0.5})))
    only = ["--only", "demo/fedprune__sparsity=0.9__iid"]
    study.main([str(study_file), "--out", str(out), "--seeds", "0", *only, "--dry-run"])
    text = capsys.readouterr().out
    assert "0 already done, 1 stale, 0 to run" in text and "sparsity: 0.5 -> 0.9" in text
    ran = []

    def fake_run_job(job, path, engine, app_dir):
        ran.append(job.key)
        (path / "results.json").write_text(json.dumps(_results(3, 3, config=study.job_config(job))))
        return 0

    monkeypatch.setattr(study, "run_job", fake_run_job)
    with pytest.raises(SystemExit, match="--rerun-stale") as exc:
        study.main([str(study_file), "--out", str(out), "--seeds", "0", *only])
    assert "sparsity: 0.5 -> 0.9" in str(exc.value) and ran == []
    assert json.loads(res.read_text())["config"]["sparsity"] == 0.5  # left as it was
    study.main([str(study_file), "--out", str(out), "--seeds", "0", *only, "--rerun-stale"])
    assert ran == [key] and study.config_drift(res, jobs[key]) == []


def test_run_job_keeps_a_finished_result_aside_and_drops_an_interrupted_one(
        study_file, tmp_path, monkeypatch):
    job = load_study(study_file, seeds=[0])[0]
    out = tmp_path / "job"
    out.mkdir()
    # the child process does nothing and has already exited
    monkeypatch.setattr(study.subprocess, "Popen", lambda *a, **k: type("P", (), {"poll": lambda s: 0})())
    (out / "results.json").write_text(json.dumps(_results(3, 3, accs=[0.1, 0.2, 0.3])))
    study.run_job(job, out, "simulation", tmp_path)
    assert not (out / "results.json").exists()
    assert json.loads((out / "results.stale.json").read_text())["summary"]["final_accuracy"] == 0.3
    (out / "results.json").write_text(json.dumps(_results(3, 1)))
    study.run_job(job, out, "simulation", tmp_path)
    assert not (out / "results.json").exists()
    assert json.loads((out / "results.stale.json").read_text())["summary"]["final_accuracy"] == 0.3


def test_per_run_metrics():
    rounds = _results(4, 4, accs=[0.3, 0.92, 0.88, 0.95], up=2_000_000)["rounds"]
    assert last_mean(rounds, 2) == pytest.approx(0.915) and last_mean(rounds) == 0.7625
    assert last_mean([{"round": 0, "accuracy": 0.1}]) is None  # the initial model only
    assert to_target(rounds, 0.9) == (4.0, 20.0)  # 2 rounds: 4 MB, 20 s
    assert to_target(rounds, 0.99) is None
    assert accuracy_within(rounds, 6.0) == 0.92  # 3 rounds fit in 6 MB
    assert server_share(rounds) == pytest.approx((0.25, 0.025))
    assert server_share([{"round": 1, "wall_s": 3.0}]) is None


def test_summary_table_gives_mean_and_std_over_seeds_and_equal_byte_accuracy(tmp_path):
    def put(run, seed, accs, up):
        d = tmp_path / "runs" / "demo" / run / f"seed-{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(_results(len(accs), len(accs), accs, up)))

    put("fedprune__iid", 0, [0.5, 0.9, 0.95], 1_000_000)
    put("fedprune__iid", 1, [0.6, 0.8, 0.85], 1_000_000)
    put("fedavg__iid", 0, [0.4, 0.7, 0.96], 1_500_000)
    put("fedavg__iid", 1, [0.5, 0.92, 0.93], 1_500_000)
    stopped = tmp_path / "runs" / "demo" / "fedavg__iid" / "seed-2"
    stopped.mkdir()
    (stopped / "results.json").write_text(json.dumps(_results(3, 1)))

    runs = load_runs(tmp_path / "runs")
    assert sorted((r.run, r.seed) for r in runs) == [("fedavg__iid", 0), ("fedavg__iid", 1),
                                                    ("fedprune__iid", 0), ("fedprune__iid", 1)]
    table = study_table("demo", runs, 0.9).splitlines()
    head = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in table[2:]}
    fp, fa = rows["fedprune__iid"], rows["fedavg__iid"]
    col = head.index
    assert fp[col("seeds")] == "2"
    assert fp[col("final acc")] == "0.9000 +- 0.0707"
    assert fp[col("last-5 acc")] == "0.7667 +- 0.0236"  # rounds 1-3: 0.7833 and 0.75
    assert fp[col("MB to 90%")] == "2.0 (1/2)"  # only seed 0 reached 90%
    assert fa[col("MB to 90%")] == "3.8 +- 1.1"  # rounds 3 and 2 at 1.5 MB each: 4.5, 3.0
    # FedAvg's best accuracy within FedPrune's 3 MB of the same seed: its first two rounds
    assert fa[col("acc@FP")] == "0.8100 +- 0.1556"
    assert fp[col("agg s/round")] == "0.250 +- 0.000" and fp[col("agg share")] == "0.025 +- 0.000"
    assert "attacker share" not in head  # runs record an empty attacker list: no column
    runs[0].rounds[1]["attacker_clients"] = [1]
    runs[0].rounds[1]["attacker_weight"] = 0.1
    assert "attacker share" in study_table("demo", runs, 0.9).splitlines()[0]

    text = summarise(tmp_path / "runs", tmp_path / "out", 0.9, plots=True)
    assert (tmp_path / "out" / "summary.md").read_text() == text
    assert "(4 complete runs)" in text
    assert (tmp_path / "out" / "figures" / "demo__iid__accuracy.png").stat().st_size > 0


def test_sweep_plot_draws_one_line_per_method_and_setting(tmp_path, monkeypatch):
    runs = [Run("sw", f"{m}__{p}__lr={lr}", 0, _results(2, 2, [0.5, acc]))
            for m in ("fedavg", "fedprune") for p in ("iid", "path")
            for lr, acc in ((0.01, 0.8), (0.02, 0.9))]
    from fedprune_lab import report

    lines = []
    real = report._save

    def capture(fig, path):
        lines.extend(c.get_label() for c in fig.axes[0].containers)
        return real(fig, path)

    monkeypatch.setattr(report, "_save", capture)
    path = report.plot_sweep("sw", runs, tmp_path)
    assert path is not None and path.exists()
    assert sorted(lines) == ["fedavg, iid", "fedavg, path", "fedprune, iid", "fedprune, path"]


def test_rounds_are_grouped_by_the_share_of_noisy_clients():
    from fedprune_lab.report import rounds_by_share, share_table

    accs = [0.5, 0.6, 0.3, 0.35, 0.5]
    rows = [{"round": 0, "accuracy": 0.1}] + [
        {"round": t + 1, "accuracy": a, "clients": 10, "noisy_clients": list(range(k)),
         "noisy_weight": w}
        for t, (a, k, w) in enumerate(zip(accs, [0, 6, 6, 2, 3], [0.0, 0.7, 0.5, 0.1, 0.2], strict=True))]
    by = rounds_by_share(rows)
    assert sorted(by) == ["30-50%", "half or more", "none", "under 30%"]
    assert by["half or more"] == [(pytest.approx(0.1), 0.6, 0.7), (pytest.approx(-0.3), 0.6, 0.5)]
    assert by["none"] == [(pytest.approx(0.4), 0.0, 0.0)]
    assert by["30-50%"] == [(pytest.approx(0.15), 0.3, 0.2)]
    unrecorded = [{k: v for k, v in r.items() if k != "noisy_clients"} for r in rows]
    assert rounds_by_share(unrecorded) == {}  # not "no noisy clients": unknown
    runs = [Run("n", "fedprune__x", 0, {"rounds": rows}), Run("n", "fedavg__x", 0, {"rounds": rows}),
            Run("n", "fedavg__x", 1, {"rounds": unrecorded})]
    table = share_table("n", runs).splitlines()
    assert len(table) == 4 and table[2].startswith("| fedprune__x (1 seeds) |")
    # half or more: two rounds, mean change, noisy share of the clients -> of the weight
    assert "| 2, -0.100, 0.60 -> 0.60 |" in table[2] and "| 1, +0.400 |" in table[2]
    clean = [{**r, "noisy_clients": []} for r in rows]
    assert share_table("n", [Run("n", "fedavg__x", 0, {"rounds": clean})]) is None


@pytest.mark.parametrize(
    "path",
    sorted((study.ROOT / "conf" / "study").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_every_shipped_study_file_is_valid_and_writes_to_its_own_folder(path):
    # load_study validates every job's configuration (unknown keys, bad values), so a
    # typo in a shipped study file fails here rather than after an hour of runs
    jobs = load_study(path)
    assert jobs, path
    assert {j.study for j in jobs} == {path.stem}  # results land in runs/<file stem>/
    assert len({j.key for j in jobs}) == len(jobs)  # no two jobs share a results folder


def test_summary_of_a_folder_without_results_is_an_error(tmp_path):
    from fedprune_lab.report import main as summary

    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no complete results.json under"):
        summary([str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="no folder"):
        summary([str(tmp_path / "missing")])


def test_a_running_job_shows_its_rounds_as_results_json_gains_them(tmp_path, capsys):
    res = tmp_path / "results.json"
    child = (  # a job that records round 0, then 1, then 2
        "import json, sys, time\n"
        "for n in (1, 2, 3):\n"
        "    rounds = [{'round': i, 'accuracy': 0.1 * (i + 1), 'bytes_up': 2_000_000 * (i > 0)}\n"
        "              for i in range(n)]\n"
        "    open(sys.argv[1] + '.tmp', 'w').write(json.dumps({'rounds': rounds}))\n"
        "    __import__('os').replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "    time.sleep(0.4)\n")
    proc = subprocess.Popen([sys.executable, "-c", child, str(res)])
    assert study.follow(proc, res, rounds=2, every=0.1) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "round " in x]
    assert lines == ["[fedprune-study]     round 1/2: accuracy 0.2000, upload 2.0 MB",
                     "[fedprune-study]     round 2/2: accuracy 0.3000, upload 4.0 MB"]
