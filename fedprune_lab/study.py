"""``fedprune-study``: run every configuration and seed of study files, resumably.

    fedprune-study conf/study/compare-mnist.yaml                 # all runs x seeds
    fedprune-study conf/study/*.yaml --seeds 0 --only fedprune    # a subset
    fedprune-study conf/study/sweep-sparsity.yaml --dry-run       # list the jobs
    fedprune-study conf/study/compare-mnist.yaml --engine flwr    # through `flwr run`

Each job (run x grid point x seed, see :func:`fedprune_lab.experiments.load_study`)
writes ``<out>/<study>/<run>/seed-<s>/results.json`` and its log next to it.
A job whose results.json already holds every round is skipped, so a study
that was stopped resumes where it was. A finished job whose recorded
run-config differs from what the study file gives now (an edited file, a
changed default) is *stale*: the runner lists the differences and stops,
unless ``--rerun-stale`` asks it to run those jobs again. Each job runs in a fresh Python
process (a fresh Ray), so one failing job does not take the others down; the
failures are listed at the end and the exit status is 1. Summarise with
``fedprune-summary <out>``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedprune.config import NOT_COMPUTED, ConfigError
from fedprune_lab.archive import pack_default, restore_default
from fedprune_lab.experiments import Experiment, Job, load_study
from fedprune_lab.run import parse_set

ROOT = Path(__file__).resolve().parents[1]


# Run-config keys that say where things are or how a run is kept, not what it computes.
_NOT_COMPARED = NOT_COMPUTED
# The mask-schedule keys, read only by the strategies whose mask moves (see
# strategies/server_app.py: static-magnitude/-random pin dynamic-topology off).
_SCHEDULE_KEYS = frozenset({"alpha0", "readjust-interval", "readjust-end", "readjust-at", "growth",
                            "grown-start"})
_MOVING_MASK = frozenset({"fedprune", "feddst", "fedbt-prune"})
# The contribution-weighting keys, read only by the strategies that weight by CGSV
# (FedDST and the static masks pin contribution-weighting off).
_CGSV_KEYS = frozenset({"lambda0", "lambda-schedule", "lambda-min", "cgsv-beta", "cgsv-floor",
                        "cgsv-leave-one-out", "cgsv-reference", "cgsv-history-beta",
                        "cgsv-root-samples", "cgsv-scope",
                        "cgsv-rule"})
_CGSV = frozenset({"fedprune", "fedbt-prune"})
# The update-clipping keys, read only by FedPrune and FedBT-Prune (FedDST and the
# static masks pin clip-updates to 0)
_CLIP_KEYS = frozenset({"clip-updates", "clip-window"})
# The round-average key, read only by FedPrune and FedBT-Prune (the baselines output
# their last round's model)
_AVERAGE_KEYS = frozenset({"round-average"})
# Who decides a readjustment, read only by FedPrune and FedBT-Prune with a moving mask
_READJUST_KEYS = frozenset({"readjustment"})
# The sparsity keys, not read by the dense strategies (small-dense reads them: its width
# matches FedPrune's kept weights)
_SPARSE_KEYS = frozenset({"sparsity", "density-distribution"})
_DENSE = frozenset({"fedavg", "flower-fedavg", "fedavgm", "fedprox", "fedmedian", "krum", "fedbt"})


def _unused(config: dict) -> frozenset[str]:
    """Keys the run described by ``config`` does not read (beyond :data:`_NOT_COMPARED`)."""
    out = _NOT_COMPARED
    if not (config.get("strategy") in _MOVING_MASK and config.get("dynamic-topology", True)):
        out |= _SCHEDULE_KEYS
    if not (config.get("strategy") in _CGSV and config.get("contribution-weighting", True)):
        out |= _CGSV_KEYS
    if not (config.get("strategy") in _CGSV and config.get("clip-updates", 0) > 0):
        out |= _CLIP_KEYS
    if config.get("strategy") not in _CGSV:
        out |= _AVERAGE_KEYS
    if not (config.get("strategy") in _CGSV and config.get("dynamic-topology", True)):
        out |= _READJUST_KEYS
    if config.get("strategy") in _DENSE:
        out |= _SPARSE_KEYS
    return out


def is_complete(results: Path, rounds: int) -> bool:
    """Whether ``results`` (a results.json) exists and holds all ``rounds`` rounds."""
    try:
        done = json.loads(results.read_text())["summary"]["rounds_completed"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return int(done) >= rounds


def job_config(job: Job) -> dict:
    """The job's resolved run-config (what its results.json would record)."""
    from fedprune.config import RunConfig

    return RunConfig.from_mapping(job.overrides).to_dict()


def job_rounds(job: Job) -> int:
    return int(job_config(job)["num-server-rounds"])


def config_drift(results: Path, job: Job) -> list[str]:
    """How the config recorded in ``results`` differs from what ``job`` would run now
    (:func:`overrides_drift` with the job's overrides)."""
    return overrides_drift(results, job.overrides)


def overrides_drift(results: Path, overrides: Mapping[str, Any]) -> list[str]:
    """How the config recorded in ``results`` differs from what run-config
    ``overrides`` give now.

    Empty when they agree. A key the stored run predates counts only if the job
    sets it away from what runs did before the key (its default, or
    :data:`fedprune.config.BEFORE_KEY`). A changed default therefore makes
    every run that relied on it stale; the mask-schedule keys are not compared
    for runs whose mask does not move, nor the CGSV keys for runs without CGSV,
    nor the clipping keys for runs that do not clip.
    """
    try:
        stored = json.loads(results.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return drift_between(stored, overrides)


def drift_between(stored: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """:func:`overrides_drift` against a stored config already read."""
    from fedprune.config import RunConfig, computed

    defaults = computed(RunConfig.predated_defaults())
    drift = []
    config = computed(RunConfig.from_mapping(overrides).to_dict())
    stored = computed(stored) if "model" in stored else stored
    unused = _unused(config)
    for key, now in config.items():
        if key in unused:
            continue
        if key in stored:
            if stored[key] != now:
                drift.append(f"{key}: {stored[key]!r} -> {now!r}")
        elif key in defaults and now != defaults[key]:
            drift.append(f"{key}: (not recorded) -> {now!r}")
    return drift


def run_job(job: Job, out: Path, engine: str, app_dir: Path) -> int:
    """Run one job in a child process; its output goes to ``<out>/log.txt``. Returns the exit code."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(json.dumps(
        {"study": job.study, "run": job.run, "seed": job.seed, "labels": job.labels,
         "num-supernodes": job.num_supernodes, "federation": job.federation,
         "overrides": job.overrides}, indent=1))
    old = out / "results.json"
    if old.exists():  # an interrupted run starts over; a stale one is kept aside
        if is_complete(old, job_rounds(job)):
            old.replace(out / "results.stale.json")
        else:
            old.unlink()
    cmd = [sys.executable, "-m", "fedprune_lab.study", "--one", str(out / "job.json"),
           "--engine", engine, "--app-dir", str(app_dir)]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "FLWR_TELEMETRY_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(out / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        return follow(proc, out / "results.json", job_rounds(job))


def follow(proc: subprocess.Popen, results: Path, rounds: int, every: float = 2.0) -> int:
    """Wait for a job's process, printing a line for every round its results.json gains
    (round, accuracy, upload so far); return its exit code."""
    shown = 0
    while True:
        code = proc.poll()
        try:
            done = json.loads(results.read_text())["rounds"]
        except (OSError, ValueError, KeyError, TypeError):  # not there yet, or being replaced
            done = []
        for r in done[shown + 1:]:  # round 0 is the initial model
            up = sum(x.get("bytes_up", 0) for x in done[: r["round"] + 1]) / 1e6
            acc = r.get("accuracy")
            print(f"[fedprune-study]     round {r['round']}/{rounds}: accuracy "
                  f"{acc if acc is None else f'{acc:.4f}'}, upload {up:.1f} MB", flush=True)
        shown = max(shown, len(done) - 1)
        if code is not None:
            return code
        time.sleep(every)


def _one(job_file: Path, engine: str, app_dir: Path) -> None:
    """Child process: run the job described in ``job_file`` (written by :func:`run_job`)."""
    from fedprune_lab.run import run_flwr_engine, run_simulation_engine

    spec = json.loads(job_file.read_text())
    exp = Experiment(path=job_file, overrides=spec["overrides"],
                     federation={**spec.get("federation", {}),
                                 "num-supernodes": spec["num-supernodes"]})
    out = job_file.parent.resolve()
    if engine == "flwr":
        run_flwr_engine(exp, out, app_dir)
    else:
        run_simulation_engine(exp, out)


def _fmt_s(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="fedprune-study", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, help="study YAML files (conf/study/*.yaml)")
    p.add_argument("--out", type=Path, default=Path("results/study"), help="results root")
    p.add_argument("--seeds", type=int, nargs="+", help="replace the files' seeds")
    p.add_argument("--only", nargs="+", metavar="GLOB",
                   help="run only jobs whose '<study>/<run>' matches one of these patterns")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config key in every job (repeatable)")
    p.add_argument("--engine", choices=("simulation", "flwr"), default="simulation")
    p.add_argument("--app-dir", type=Path, default=ROOT, help="project folder (flwr engine)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their state")
    p.add_argument("--rerun-stale", action="store_true",
                   help="run again the jobs whose stored results used a different run-config")
    p.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: run one job file
    args = p.parse_args(argv)
    if args.one:
        _one(args.one, args.engine, args.app_dir.resolve())
        return
    if not args.files:
        p.error("give at least one study file")
    extra = parse_set(args.set)
    try:
        jobs = [j for f in args.files for j in load_study(f, extra, args.seeds)]
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"fedprune-study: {exc}") from exc
    if args.only:
        jobs = [j for j in jobs if any(fnmatch.fnmatch(f"{j.study}/{j.run}", g) for g in args.only)]
    if not jobs:
        raise SystemExit("fedprune-study: no jobs match")
    root = args.out.resolve()
    restore_default(root)
    state: dict[str, str] = {}
    stale: dict[str, list[str]] = {}
    for j in jobs:
        res = root / j.key / "results.json"
        if not is_complete(res, job_rounds(j)):
            state[j.key] = "todo"
        elif drift := config_drift(res, j):
            state[j.key], stale[j.key] = "stale", drift
        else:
            state[j.key] = "done"
    todo = [j for j in jobs if state[j.key] == "todo"
            or (state[j.key] == "stale" and args.rerun_stale)]
    done = sum(s == "done" for s in state.values())
    print(f"[fedprune-study] {len(jobs)} jobs, {done} already done, {len(stale)} stale, "
          f"{len(todo)} to run; results in {root}", flush=True)
    if args.dry_run:
        try:
            for j in jobs:
                print(f"  {state[j.key]:<5} {j.key}  ({j.num_supernodes} clients)")
                for d in stale.get(j.key, []):
                    print(f"          {d}")
            sys.stdout.flush()
        except BrokenPipeError:  # the listing piped into `head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if stale and not args.rerun_stale:
        lines = [f"  {k}: " + "; ".join(d) for k, d in stale.items()]
        raise SystemExit(
            "fedprune-study: these results were made with a different run-config than the "
            "study file gives now (a changed default or file); pass --rerun-stale to run them "
            "again (the old results.json is kept as results.stale.json), or pin the old "
            "values in the study file:\n" + "\n".join(lines))
    failed, t_start = [], time.monotonic()
    for i, job in enumerate(todo, 1):
        out = root / job.key
        print(f"[fedprune-study] [{i}/{len(todo)}] {job.key} ...", flush=True)
        t0 = time.monotonic()
        rc = run_job(job, out, args.engine, args.app_dir.resolve())
        dt = time.monotonic() - t0
        res = out / "results.json"
        if rc != 0 or not is_complete(res, job_rounds(job)):
            failed.append(job.key)
            print(f"[fedprune-study]   FAILED (exit {rc}) after {_fmt_s(dt)}; see {out / 'log.txt'}",
                  flush=True)
            continue
        s = json.loads(res.read_text())["summary"]
        left = (time.monotonic() - t_start) / i * (len(todo) - i)
        print(f"[fedprune-study]   done in {_fmt_s(dt)}: final acc {s['final_accuracy']:.4f}, "
              f"best {s['best_accuracy']:.4f}, up {s['total_bytes_up'] / 1e6:.1f} MB"
              f" (about {_fmt_s(left)} left)", flush=True)
    pack_default(root, {j.study for j in todo if j.key not in failed})
    if failed:
        print("[fedprune-study] failed jobs:\n  " + "\n  ".join(failed), flush=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
