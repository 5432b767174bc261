"""``fedprune-scoreboard``: the fixed suite FedPrune must top, and one verdict table.

The suite is ``conf/scoreboard/suite.yaml`` (versioned): cells, each a grid
point of a study file beside it, and the methods (rows) to compare, each one
or several runs of that study (several: the best by last-5 accuracy, e.g.
FedAvg's learning-rate grid). For every job the scoreboard uses a stored run
whose configuration is the job's: its own folder under ``--runs``, or any
``results.json`` under ``--runs`` with the same resolved run-config (keys that
do not change what is computed, and keys the method does not read, aside), the
same seed and federation size, and every round. So runs of other studies
count, and the suite's cost is paid once per method change.

    fedprune-scoreboard                 # table from the stored runs; lists what is missing
    fedprune-scoreboard --run           # also run the missing jobs (resumable), one by one

Writes ``docs/results/scoreboard.md`` and ``docs/results/scoreboard.png``
(accuracy vs cumulative upload, one panel per cell). Per cell and method:
the last-5 accuracy (mean +- std over seeds), the best accuracy reached
within FedPrune's upload, the upload, the last-5 accuracy of the dense model
the server restores (where the method has one), when the runs were measured, and the
verdict of FedPrune against that method: win (ahead by more than one std,
the larger of the two), tie (within it) or loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedprune.config import ConfigError
from fedprune_lab.archive import measured_day, pack_default, restore_default
from fedprune_lab.experiments import Job, load_study
from fedprune_lab.report import _plt, cumulative_up, legend_below, method_style, seed_curve, zoom
from fedprune_lab.study import ROOT, drift_between, is_complete, job_rounds, run_job

SUITE = ROOT / "conf" / "scoreboard" / "suite.yaml"
LAST_K = 5


@dataclass(frozen=True)
class Cell:
    """One setting of the suite: a grid point of a study file and its method rows."""

    name: str
    title: str
    study: Path
    point: str  # the grid label of the study's runs ("" = no grid)
    metric: str  # the round field compared (centralized "accuracy" by default)
    methods: dict[str, list[str]]  # row label -> run names (several: the best of them)

    def jobs(self) -> dict[str, list[Job]]:
        """Run name -> its jobs (one per seed)."""
        out: dict[str, list[Job]] = {}
        wanted = {run for runs in self.methods.values() for run in runs}
        for job in load_study(self.study):
            base, _, point = job.run.partition("__")
            if base in wanted and point == self.point:
                out.setdefault(base, []).append(job)
        missing = wanted - set(out)
        if missing:
            raise ConfigError(f"{self.study}: no run {sorted(missing)} at point {self.point!r}")
        return out


def load_suite(path: Path = SUITE) -> tuple[int, str, list[Cell]]:
    """(version, the reference row's label, cells) of a suite file."""
    doc = yaml.safe_load(path.read_text())
    default_methods = doc.get("methods", {})
    cells = []
    for c in doc["cells"]:
        methods = c.get("methods", default_methods)
        cells.append(Cell(
            name=c["name"], title=c.get("title", c["name"]), study=path.parent / c["study"],
            point=str(c.get("point", "")), metric=c.get("metric", "accuracy"),
            methods={label: [runs] if isinstance(runs, str) else list(runs)
                     for label, runs in methods.items()}))
    reference = doc.get("reference", "FedPrune")
    if any(reference not in c.methods for c in cells):
        raise ConfigError(f"{path}: every cell needs the reference row {reference!r}")
    return int(doc["version"]), reference, cells


# -- finding stored runs ---------------------------------------------------------------

@dataclass(frozen=True)
class Stored:
    path: Path
    config: dict[str, Any]
    num_supernodes: int | None
    rounds_completed: int


def index(root: Path) -> list[Stored]:
    """Every results.json under ``root`` with its config (and federation size, from the
    job.json beside it when there is one)."""
    out = []
    for res in sorted(root.rglob("results.json")):
        try:
            doc = json.loads(res.read_text())
            config, done = doc["config"], int(doc["summary"]["rounds_completed"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        job = res.parent / "job.json"
        n = None
        if job.exists():
            try:
                n = int(json.loads(job.read_text())["num-supernodes"])
            except (OSError, ValueError, KeyError, TypeError):
                n = None
        out.append(Stored(res, config, n, done))
    return out


def find(job: Job, runs: Path, stored: list[Stored]) -> Path | None:
    """A complete results.json with the job's configuration: its own, else any stored."""
    own = runs / job.key / "results.json"
    rounds = job_rounds(job)
    if is_complete(own, rounds) and not drift_between(json.loads(own.read_text())["config"],
                                                      job.overrides):
        return own
    for s in stored:
        if (s.rounds_completed >= rounds and s.config.get("seed") == job.seed
                and s.num_supernodes in (None, job.num_supernodes)
                and not drift_between(s.config, job.overrides)):
            return s.path
    return None


# -- the table ----------------------------------------------------------------------------

def _series(rounds: list[dict[str, Any]], metric: str) -> list[float | None]:
    return [r.get(metric) for r in rounds]


def last_k(rounds: list[dict[str, Any]], metric: str, k: int = LAST_K) -> float | None:
    """Mean of ``metric`` over the last ``k`` rounds that have it (round 0 excluded)."""
    xs = [r[metric] for r in rounds if r.get("round", 1) > 0 and r.get(metric) is not None][-k:]
    return statistics.fmean(xs) if xs else None


def best_within(rounds: list[dict[str, Any]], metric: str, budget_mb: float) -> float | None:
    """Best ``metric`` reached with at most ``budget_mb`` uploaded."""
    best = None
    for r, up in zip(rounds, cumulative_up(rounds), strict=True):
        if up > budget_mb + 1e-9:
            break
        if r.get(metric) is not None:
            best = r[metric] if best is None else max(best, r[metric])
    return best


def _stats(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def measured(paths: list[Path]) -> str:
    """When the runs were measured: the newest of their days (:func:`measured_day`)."""
    days = [measured_day(p) for p in paths]
    return max(days) if days else "-"


@dataclass
class Row:
    label: str
    run: str  # the run chosen (for a list: the best)
    paths: list[Path]  # its seeds' results.json
    rounds: list[list[dict[str, Any]]]
    seeds_wanted: int
    incomplete: int = 0  # of a best-of row: candidates not fully measured


def rows(cell: Cell, runs: Path, stored: list[Stored]) -> tuple[list[Row], list[Job]]:
    """The cell's rows from the runs found, and the jobs still missing."""
    jobs = cell.jobs()
    found: dict[str, list[Path]] = {}
    missing: list[Job] = []
    for run, js in jobs.items():
        paths = [find(j, runs, stored) for j in js]
        missing += [j for j, p in zip(js, paths, strict=True) if p is None]
        found[run] = [p for p in paths if p is not None]
    out = []
    for label, candidates in cell.methods.items():
        best = None
        for run in candidates:
            rs = [json.loads(p.read_text())["rounds"] for p in found[run]]
            score = [last_k(r, cell.metric) for r in rs]
            score = [s for s in score if s is not None]
            mean = statistics.fmean(score) if score else float("-inf")
            if best is None or mean > best[0]:
                best = (mean, Row(label, run, found[run], rs, len(jobs[run])))
        assert best is not None
        # a best-of row is only final once every candidate has every seed
        best[1].incomplete = sum(len(found[r]) < len(jobs[r]) for r in candidates)
        out.append(best[1])
    return out, missing


def verdict(ref: list[float], other: list[float]) -> str:
    """FedPrune's last-5 results vs another method's: win / tie / loss by one std."""
    if not ref or not other:
        return "-"
    (m1, s1), (m2, s2) = _stats(ref), _stats(other)
    margin = max(s1, s2)
    return "win" if m1 - m2 > margin else "loss" if m2 - m1 > margin else "tie"


def cell_table(cell: Cell, rs: list[Row], reference: str) -> tuple[str, dict[str, str]]:
    """The cell's Markdown table and its verdicts (row label -> win / tie / loss)."""
    ref = next(r for r in rs if r.label == reference)
    ref_last = [x for x in (last_k(r, cell.metric) for r in ref.rounds) if x is not None]
    budgets = [cumulative_up(r)[-1] for r in ref.rounds]
    budget = statistics.fmean(budgets) if budgets else 0.0
    lines = [f"### {cell.title}", "",
             f"`{cell.study.relative_to(ROOT)}`{' at ' + cell.point if cell.point else ''}; "
             f"metric `{cell.metric}`; {reference}'s upload: {budget:.1f} MB per run", "",
             f"| method | seeds | last-{LAST_K} | best within {reference}'s upload | upload MB "
             f"| restored dense, last-{LAST_K} (minus sparse, global test set) | measured "
             f"| {reference} vs it |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = {}
    for r in rs:
        last = [x for x in (last_k(x, cell.metric) for x in r.rounds) if x is not None]
        within = [x for x in (best_within(x, cell.metric, budget) for x in r.rounds)
                  if x is not None]
        up = [cumulative_up(x)[-1] for x in r.rounds]
        # the dense model the server restores (FedPrune's W), where the run records it,
        # and its difference to the sparse model on the same (global) test set: in cells
        # whose metric is the clients' own accuracy the two are not comparable with it
        dense = [x for x in (last_k(x, "dense_accuracy") for x in r.rounds) if x is not None]
        gap = [d - a for d, a in zip((last_k(x, "dense_accuracy") for x in r.rounds),
                                     (last_k(x, "accuracy") for x in r.rounds), strict=True)
               if d is not None and a is not None]
        v = "" if r is ref else verdict(ref_last, last)
        if r is not ref:
            verdicts[r.label] = v
        name = r.label
        if len(cell.methods[r.label]) > 1:
            name += f": `{r.run}`" + (f" ({r.incomplete} of {len(cell.methods[r.label])} "
                                      "not measured yet)" if r.incomplete else "")
        seeds = f"{len(r.rounds)}/{r.seeds_wanted}"
        lines.append(f"| {name} | {seeds} | {_fmt(last)} | {_fmt(within)} | {_fmt(up, '.1f')} "
                     f"| {_dense(dense, gap)} | {measured(r.paths)} "
                     f"| {v or ('-' if r is not ref else '')} |")
    return "\n".join(lines) + "\n", verdicts


def _dense(dense: list[float], gap: list[float]) -> str:
    """The restored dense model's last-k accuracy and its mean difference to the sparse
    model's accuracy on the same test set, or ``-`` where the run has no dense model."""
    if not dense:
        return "-"
    return f"{_fmt(dense)} ({float(np.mean(gap)):+.4f})" if gap else _fmt(dense)


def _fmt(xs: list[float], spec: str = ".4f") -> str:
    if not xs:
        return "not measured"
    m, s = _stats(xs)
    return format(m, spec) if len(xs) == 1 else f"{format(m, spec)} +- {format(s, spec)}"


def plot(cells: list[tuple[Cell, list[Row]]], out: Path) -> Path:
    """Accuracy vs cumulative upload MB, one panel per cell: the mean over seeds with a
    one-std band, FedPrune first and thickest, each panel's y-axis zoomed to where its
    curves end, one legend below the panels."""
    plt = _plt()
    n = len(cells)
    cols = min(4, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, 3.5 * nrows + 0.8), squeeze=False)
    for ax, (cell, rs) in zip(axes.flat, cells, strict=False):
        curves = []
        for i, r in enumerate(rs):
            if not r.rounds:
                continue
            acc = [[x.get(cell.metric) or 0.0 for x in run[1:]] for run in r.rounds]
            up = [cumulative_up(run)[1:] for run in r.rounds]
            curves.append(seed_curve(ax, up, acc, r.label, method_style(i)))
        ax.set_title(textwrap.fill(cell.title, 44), fontsize=9)
        ax.set(xlabel="cumulative upload (MB, log)", ylabel=cell.metric.replace("_", " "),
               xscale="log")
        ax.grid(alpha=0.3)
        zoom(ax, curves)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    legend_below(fig, axes.flat[0])
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def scoreboard(suite: Path, runs: Path, out: Path, plots: bool = True) -> tuple[str, list[Job]]:
    """Write the table (and figure); return it and the missing jobs."""
    version, reference, cells = load_suite(suite)
    stored = index(runs)
    parts, missing, tallies = [], [], {"win": 0, "tie": 0, "loss": 0}
    drawn = []
    for cell in cells:
        rs, miss = rows(cell, runs, stored)
        missing += miss
        if not any(r.rounds for r in rs if r.label == reference):
            parts.append(f"### {cell.title}\n\nnot measured yet: {len(miss)} runs to go "
                         f"(`fedprune-scoreboard --run`)\n")
            continue
        table, verdicts = cell_table(cell, rs, reference)
        for v in verdicts.values():
            if v in tallies:
                tallies[v] += 1
        parts.append(table)
        drawn.append((cell, rs))
    head = [f"# Scoreboard (suite version {version})", "",
            f"Generated by `fedprune-scoreboard` from `{suite.relative_to(ROOT)}`; every run "
            f"at the defaults of the code that measured it (the `measured` column). Verdict: "
            f"{reference} at its defaults against each method, by last-{LAST_K} accuracy over "
            f"seeds: win = ahead by more than one std (the larger of the two), tie = within it.",
            "", f"**{reference}: {tallies['win']} wins, {tallies['tie']} ties, "
            f"{tallies['loss']} losses; {len(missing)} runs missing.**", ""]
    text = "\n".join(head) + "\n" + "\n".join(parts)
    if plots and drawn:
        plot(drawn, out.parent / "scoreboard.png")
        text += "\n![accuracy vs upload, one panel per cell](scoreboard.png)\n"
    out.write_text(text)
    return text, missing


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="fedprune-scoreboard", description=__doc__.splitlines()[0])
    p.add_argument("--suite", type=Path, default=SUITE)
    p.add_argument("--runs", type=Path, default=ROOT / "docs" / "results" / "runs",
                   help="stored runs (searched for matches; missing jobs are written here)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "scoreboard.md")
    p.add_argument("--run", action="store_true", help="run the missing jobs, one by one")
    p.add_argument("--only", nargs="*", default=None, help="with --run: only these cells")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--engine", choices=("simulation", "flwr"), default="simulation")
    args = p.parse_args(argv)
    restore_default(args.runs)
    try:
        text, missing = scoreboard(args.suite.resolve(), args.runs.resolve(), args.out.resolve(),
                                   not args.no_plots)
    except (ConfigError, OSError, KeyError) as exc:
        raise SystemExit(f"fedprune-scoreboard: {exc}") from exc
    print(text)
    if not args.run:
        if missing:
            print(f"[fedprune-scoreboard] {len(missing)} runs missing; `--run` runs them:")
            for j in missing:
                print(f"  {j.key}")
        return
    _, _, cells = load_suite(args.suite.resolve())
    studies = {load_study(c.study)[0].study for c in cells if args.only is None or c.name in args.only}
    todo = [j for j in missing if j.study in studies]
    for i, job in enumerate(todo, 1):
        out = args.runs.resolve() / job.key
        print(f"[fedprune-scoreboard] [{i}/{len(todo)}] {job.key} ...", flush=True)
        t0 = time.monotonic()
        rc = run_job(job, out, args.engine, ROOT)
        print(f"[fedprune-scoreboard]   exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        # the table after every job, so an interrupted suite leaves a current one
        scoreboard(args.suite.resolve(), args.runs.resolve(), args.out.resolve(), not args.no_plots)
    if todo:
        print(scoreboard(args.suite.resolve(), args.runs.resolve(), args.out.resolve(),
                         not args.no_plots)[0])
        pack_default(args.runs, {j.study for j in todo})


if __name__ == "__main__":
    main(sys.argv[1:])
