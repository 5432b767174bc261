"""``fedprune-summary``: a folder of results.json files -> Markdown tables and PNG plots.

    fedprune-summary docs/results/runs --out docs/results --target 0.9

Runs are found as ``<study>/<run>/seed-<s>/results.json`` (what
``fedprune-study`` writes). A run's name is ``<method>__<grid labels>``; runs
of one study that share their grid labels are compared with each other. For
each (study, run) the tables give the mean +- std over seeds of:

* final accuracy, the mean over the last 5 rounds (runs with noisy clients
  swing by tens of points from round to round), best accuracy, and the
  restored dense model's final accuracy (FedPrune family);
* total upload MB (array payloads; and the bytes Flower serialises, "wire MB",
  for runs that recorded them), and the upload MB and wall-clock seconds until the
  accuracy first reaches ``--target`` (``k/n`` when only k of n seeds got there);
* ``acc@FP``: the best accuracy reached with no more upload than the FedPrune
  run of the same grid point used in all (accuracy at equal bytes);
* client training GFLOPs per round under the masks, and as a fraction of
  the same training on the dense model;
* the server's aggregation time per round (``aggregate_train``) and its
  share of the rounds' wall-clock time;
* with noisy or attacking clients: the share of the sampled clients they
  were, and the share of the aggregation weight they got; and a second table
  that groups the rounds by that share (none, under 30%, 30-50%, half or
  more) with the mean accuracy change, and their share of the clients
  against their share of the weight, in each.

Plots (one PNG per study and grid point): accuracy vs round and vs cumulative
upload MB for every method; contribution scores of clean vs noisy (or
attacking) clients over rounds; per-layer density and mask changes over
rounds; and for sweeps (grid labels ``key=value``) final accuracy vs value.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedprune_lab.archive import restore_default

MB = 1e6
LAST_K = 5  # rounds averaged by the "last-k acc" column


@dataclass
class Run:
    """One results.json, located in the study tree."""

    study: str
    run: str
    seed: int
    data: dict[str, Any]

    @property
    def method(self) -> str:
        return self.run.split("__")[0]

    @property
    def point(self) -> str:
        """The grid labels (``''`` when the study has no grid)."""
        return "__".join(self.run.split("__")[1:])

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return self.data["rounds"]


def load_runs(root: Path) -> list[Run]:
    """Every complete ``<study>/<run>/seed-<s>/results.json`` under ``root``."""
    runs = []
    for path in sorted(root.glob("*/*/seed-*/results.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        want = int(data.get("config", {}).get("num-server-rounds", 0))
        if data.get("summary", {}).get("rounds_completed", 0) < want:
            continue  # still running, or stopped: not summarised
        seed = int(path.parent.name.split("-", 1)[1])
        runs.append(Run(path.parents[2].name, path.parents[1].name, seed, data))
    return runs


# -- per-run metrics ---------------------------------------------------------------------

def cumulative_up(rounds: Sequence[dict[str, Any]]) -> list[float]:
    """Cumulative upload MB after each round."""
    out, up = [], 0
    for r in rounds:
        up += r["bytes_up"]
        out.append(up / MB)
    return out


def to_target(rounds: Sequence[dict[str, Any]], target: float) -> tuple[float, float] | None:
    """(upload MB, wall seconds) when the accuracy first reaches ``target``; None if never."""
    up, t = 0, 0.0
    for r in rounds:
        up += r["bytes_up"]
        t += r.get("wall_s", 0.0)
        if r.get("accuracy") is not None and r["accuracy"] >= target:
            return up / MB, t
    return None


def last_mean(rounds: Sequence[dict[str, Any]], k: int = LAST_K) -> float | None:
    """Mean accuracy over the last ``k`` rounds (fewer if the run is shorter; round 0,
    the initial model, excluded): less at the mercy of one round's swing than the final."""
    accs = [r["accuracy"] for r in rounds if r.get("round", 1) > 0
            and r.get("accuracy") is not None][-k:]
    return statistics.fmean(accs) if accs else None


def accuracy_within(rounds: Sequence[dict[str, Any]], budget_mb: float) -> float:
    """Best accuracy reached with at most ``budget_mb`` uploaded."""
    best = 0.0
    for r, up in zip(rounds, cumulative_up(rounds), strict=True):
        if up > budget_mb + 1e-9:
            break
        best = max(best, r.get("accuracy") or 0.0)
    return best


def flops_per_round(rounds: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """(mean client GFLOPs per round, fraction of dense), or None when not recorded."""
    rs = [r for r in rounds if r.get("dense_client_flops")]
    if not rs:
        return None
    sparse = sum(r["client_flops"] for r in rs)
    dense = sum(r["dense_client_flops"] for r in rs)
    return sparse / len(rs) / 1e9, sparse / dense


def server_share(rounds: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """(mean server aggregation seconds per round, their share of the rounds' wall time),
    or None when not recorded."""
    rs = [r for r in rounds if r.get("aggregate_s") is not None and r.get("wall_s")]
    if not rs:
        return None
    agg = sum(r["aggregate_s"] for r in rs)
    return agg / len(rs), agg / sum(r["wall_s"] for r in rs)


def group_share(rounds: Sequence[dict[str, Any]], kind: str) -> tuple[float, float] | None:
    """For ``kind`` = ``noisy`` or ``attacker``: (their share of the sampled clients, their
    share of the aggregation weight), averaged over rounds where any took part."""
    rs = [r for r in rounds if r.get(f"{kind}_clients") and r.get("clients")]
    if not rs or all(f"{kind}_weight" not in r for r in rs):
        return None
    share = statistics.fmean(len(r[f"{kind}_clients"]) / r["clients"] for r in rs)
    weight = statistics.fmean(r.get(f"{kind}_weight", 0.0) for r in rs)
    return share, weight


# -- tables ---------------------------------------------------------------------------------

def _ms(xs: Iterable[float | None], spec: str = ".4f") -> str:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "-"
    if len(xs) == 1:
        return format(xs[0], spec)
    return f"{format(statistics.fmean(xs), spec)} +- {format(statistics.stdev(xs), spec)}"


def _reached(values: list[tuple[float, float] | None], i: int, spec: str) -> str:
    got = [v[i] for v in values if v is not None]
    if not got:
        return "never"
    s = _ms(got, spec)
    return s if len(got) == len(values) else f"{s} ({len(got)}/{len(values)})"


@dataclass
class Group:
    """The seeds of one (study, run)."""

    study: str
    run: str
    runs: list[Run] = field(default_factory=list)


def groups(runs: list[Run]) -> list[Group]:
    out: dict[tuple[str, str], Group] = {}
    for r in runs:
        out.setdefault((r.study, r.run), Group(r.study, r.run)).runs.append(r)
    return list(out.values())


def ordered_groups(runs: list[Run]) -> list[Group]:
    """:func:`groups` by grid point, FedPrune first within each, then by run name."""
    return sorted(groups(runs), key=lambda g: (g.runs[0].point, g.runs[0].method != "fedprune",
                                               g.run))


def _wire_mb(run: Run, direction: str) -> float | None:
    """MB the run's messages took on the wire (``up`` or ``down``), None if not recorded."""
    v = run.data["summary"].get(f"total_wire_bytes_{direction}")
    return None if v is None else v / MB


def study_table(study: str, runs: list[Run], target: float) -> str:
    """The Markdown table of one study."""
    # FedPrune's upload per grid point and seed: the budget for "accuracy at equal bytes"
    budget = {(r.point, r.seed): r.data["summary"]["total_bytes_up"] / MB
              for r in runs if r.method == "fedprune"}
    has_dense = any(r.rounds[-1].get("dense_accuracy") is not None for r in runs)
    has_noise = any(group_share(r.rounds, "noisy") for r in runs)
    has_attack = any(x.get("attacker_clients") for r in runs for x in r.rounds)
    has_wire = any("total_wire_bytes_up" in r.data["summary"] for r in runs)
    head = ["run", "seeds", "final acc", f"last-{LAST_K} acc", "best acc"]
    head += ["dense acc"] if has_dense else []
    head += ["up MB"] + (["wire MB up", "wire MB down"] if has_wire else [])
    head += [f"MB to {target:.0%}", f"s to {target:.0%}", "acc@FP", "GFLOP/round",
             "of dense", "agg s/round", "agg share"]
    head += ["noisy share", "noisy weight"] if has_noise else []
    head += ["attacker share", "attacker weight"] if has_attack else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in ordered_groups(runs):
        rs = sorted(g.runs, key=lambda r: r.seed)
        tt = [to_target(r.rounds, target) for r in rs]
        eq = [accuracy_within(r.rounds, budget[(r.point, r.seed)]) if (r.point, r.seed) in budget
              else None for r in rs]
        fl = [flops_per_round(r.rounds) for r in rs]
        sv = [server_share(r.rounds) for r in rs]
        row = [g.run, str(len(rs)), _ms(r.data["summary"]["final_accuracy"] for r in rs),
               _ms(last_mean(r.rounds) for r in rs),
               _ms(r.data["summary"]["best_accuracy"] for r in rs)]
        if has_dense:
            row.append(_ms(r.rounds[-1].get("dense_accuracy") for r in rs))
        row += [_ms((r.data["summary"]["total_bytes_up"] / MB for r in rs), ".1f")]
        if has_wire:  # runs recorded before wire bytes were counted show "-"
            row += [_ms((_wire_mb(r, d) for r in rs), ".1f") for d in ("up", "down")]
        row += [_reached(tt, 0, ".1f"), _reached(tt, 1, ".0f"), _ms(eq),
                _ms((f[0] if f else None for f in fl), ".2f"), _ms((f[1] if f else None for f in fl), ".3f"),
                _ms((v[0] if v else None for v in sv), ".3f"), _ms((v[1] if v else None for v in sv), ".3f")]
        if has_noise:
            ns = [group_share(r.rounds, "noisy") for r in rs]
            row += [_ms((n[0] if n else None for n in ns), ".3f"),
                    _ms((n[1] if n else None for n in ns), ".3f")]
        if has_attack:
            at = [group_share(r.rounds, "attacker") for r in rs]
            shares = [statistics.fmean(len(x.get("attacker_clients") or []) / x["clients"]
                                       for x in r.rounds[1:] if x.get("clients")) for r in rs]
            row += [_ms(shares, ".3f"), _ms((a[1] if a else None for a in at), ".3f")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# Bins of a round's share of noisy (or attacking) aggregated clients, for
# :func:`share_table`: exactly 0, then [lo, hi) (the last bin includes 1).
SHARE_BINS = ((0.0, 0.0, "none"), (0.0, 0.3, "under 30%"), (0.3, 0.5, "30-50%"),
              (0.5, 1.0, "half or more"))


def _share_bin(share: float) -> str:
    if share == 0.0:
        return SHARE_BINS[0][2]
    for lo, hi, label in SHARE_BINS[1:]:
        if lo <= share < hi or (hi == 1.0 and share == 1.0):
            return label
    raise ValueError(f"share {share} outside [0, 1]")


def rounds_by_share(rounds: Sequence[dict[str, Any]], kind: str = "noisy"
                    ) -> dict[str, list[tuple[float, float, float | None]]]:
    """Rounds grouped by the share of ``kind`` clients among those aggregated: per bin of
    :data:`SHARE_BINS`, (accuracy change from the previous round, their share, the weight
    they got). Rounds that did not record ``<kind>_clients`` are left out."""
    out: dict[str, list[tuple[float, float, float | None]]] = defaultdict(list)
    for prev, r in zip(rounds[:-1], rounds[1:], strict=True):
        if (not r.get("clients") or f"{kind}_clients" not in r  # not recorded: unknown
                or r.get("accuracy") is None or prev.get("accuracy") is None):
            continue
        share = len(r[f"{kind}_clients"]) / r["clients"]
        out[_share_bin(share)].append(
            (r["accuracy"] - prev["accuracy"], share, r.get(f"{kind}_weight")))
    return out


def share_table(study: str, runs: list[Run], kind: str = "noisy") -> str | None:
    """Per method and grid point, pooled over seeds: how the accuracy moved in rounds where
    ``kind`` clients were none / a few / half or more of the round, and their share of the
    clients against their share of the weight. None when no run of the study had such
    clients."""
    if not any(x.get(f"{kind}_clients") for r in runs for x in r.rounds):
        return None
    head = ["run"] + [f"{label}: rounds, acc change, share -> weight"
                      for *_, label in SHARE_BINS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in ordered_groups(runs):
        pooled: dict[str, list[tuple[float, float, float | None]]] = defaultdict(list)
        seeds = 0
        for r in g.runs:
            by = rounds_by_share(r.rounds, kind)
            seeds += bool(by)
            for label, vals in by.items():
                pooled[label].extend(vals)
        if not any(pooled[label] for label in pooled if label != "none"):
            continue
        cells = []
        for *_, label in SHARE_BINS:
            vals = pooled.get(label, [])
            if not vals:
                cells.append("-")
                continue
            cell = f"{len(vals)}, {statistics.fmean(v[0] for v in vals):+.3f}"
            ws = [v[2] for v in vals if v[2] is not None]
            if label != "none":
                weight = f"{statistics.fmean(ws):.2f}" if ws else "?"
                cell += f", {statistics.fmean(v[1] for v in vals):.2f} -> {weight}"
            cells.append(cell)
        lines.append(f"| {g.run} ({seeds} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close a figure; return its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


_LINES = ("-", "--", "-.", ":")


def method_style(i: int) -> dict[str, Any]:
    """Colour and line style of the i-th method of a figure: 20 distinct colours
    (matplotlib's tab20, dark shades first) times 4 line styles, so no two of up to
    80 methods look alike; the first (the method under study) is drawn thicker."""
    plt = _plt()
    cmap = plt.get_cmap("tab20")
    colour = cmap((2 * i) % 20 + (i // 10) % 2)  # 0, 2, .., 18, then the light shades
    return {"color": colour, "linestyle": _LINES[(i // 20) % len(_LINES)] if i >= 20
            else _LINES[i % 2], "lw": 2.4 if i == 0 else 1.4}


def seed_curve(ax: Any, xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]],
               label: str, style: dict[str, Any]) -> list[float]:
    """Plot the mean over seeds of ``ys`` against the mean of ``xs`` with a band of
    one standard deviation (the seeds' spread); returns the mean curve."""
    k = min(len(y) for y in ys)
    x = [statistics.fmean(v[j] for v in xs) for j in range(k)]
    mean = [statistics.fmean(v[j] for v in ys) for j in range(k)]
    ax.plot(x, mean, label=label if len(ys) == 1 else f"{label} ({len(ys)} seeds)", **style)
    if len(ys) > 1:
        sd = [statistics.stdev(v[j] for v in ys) for j in range(k)]
        ax.fill_between(x, [m - d for m, d in zip(mean, sd, strict=True)],
                        [m + d for m, d in zip(mean, sd, strict=True)],
                        color=style["color"], alpha=0.15, lw=0)
    return mean


def zoom(ax: Any, curves: Iterable[Sequence[float]]) -> None:
    """Limit the y-axis to where the curves end: from a little below the lowest value
    of any curve's second half to a little above the highest value, within [0, 1],
    so that 0.90 and 0.97 are told apart instead of squeezed at the top of 0-1."""
    tails = [v for c in curves for v in c[len(c) // 2:]]
    highs = [v for c in curves for v in c]
    if not tails:
        return
    lo, hi = min(tails), max(highs)
    pad = max(0.02, 0.08 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))


def legend_below(fig: Any, ax: Any) -> None:
    """One legend for the figure, below its panels (never over a curve)."""
    handles, labels = ax.get_legend_handles_labels()
    rows = (len(labels) + 3) // 4
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, min(0.45, 0.06 * rows + 0.02), 1, 1))


def plot_curves(study: str, point: str, runs: list[Run], out: Path) -> Path:
    """Accuracy vs round and vs cumulative upload MB, every method: the mean over
    seeds with a one-std band, distinct colours and line styles, FedPrune first and
    thickest, a y-axis zoomed to where the curves end, the legend below."""
    plt = _plt()
    by: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by[r.method].append(r)
    methods = sorted(by, key=lambda m: (m != "fedprune", m))
    rows = (len(methods) + 3) // 4
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.4 + 0.28 * rows))
    curves = []
    for i, method in enumerate(methods):
        rs, style = by[method], method_style(i)
        acc = [[x.get("accuracy") or 0.0 for x in r.rounds] for r in rs]
        seed_curve(a, [list(range(len(v))) for v in acc], acc, method, style)
        curves.append(seed_curve(b, [cumulative_up(r.rounds) for r in rs], acc, method, style))
    a.set(xlabel="round", ylabel="test accuracy", title=f"{study} {point}".strip())
    b.set(xlabel="cumulative upload (MB, log)", ylabel="test accuracy", xscale="log",
          title="accuracy per byte")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        zoom(ax, curves)
    legend_below(fig, a)
    path = out / f"{study}{'__' + point if point else ''}__accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_contributions(run: Run, out: Path) -> Path | None:
    """Mean CGSV score and aggregation weight of clean vs noisy / attacking clients per round."""
    kind = "attacker" if any(r.get("attacker_clients") for r in run.rounds) else "noisy"
    # runs without CGSV (FedDST, the data-size ablation) record weights but no scores
    rows = [r for r in run.rounds if r.get("contributions")
            and all(v.get("score") is not None for v in r["contributions"].values())]
    if not rows or not any(r.get(f"{kind}_clients") for r in rows):
        return None
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for label, pick in ((kind, True), ("clean", False)):
        xs, score, weight = [], [], []
        for r in rows:
            bad = {str(c) for c in r.get(f"{kind}_clients") or []}
            sel = [v for c, v in r["contributions"].items() if (c in bad) == pick]
            if sel:
                xs.append(r["round"])
                score.append(statistics.fmean(v["score"] for v in sel))
                weight.append(statistics.fmean(v["weight"] for v in sel))
        a.plot(xs, score, "o-", ms=3, label=label)
        b.plot(xs, weight, "o-", ms=3, label=label)
    a.set(xlabel="round", ylabel="mean smoothed CGSV score", title=f"{run.study}/{run.run} seed {run.seed}")
    b.set(xlabel="round", ylabel="mean aggregation weight per client")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out / f"{run.study}__{run.run}__contributions.png")


def plot_masks(run: Run, out: Path) -> Path | None:
    """Per-layer density and per-layer mask changes (positions newly kept) over rounds."""
    rows = [r for r in run.rounds if r.get("layer_density")]
    if not rows:
        return None
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for layer in rows[0]["layer_density"]:
        xs = [r["round"] for r in rows]
        a.plot(xs, [r["layer_density"][layer] for r in rows], label=layer)
        b.plot(xs, [r.get("layer_mask_changes", {}).get(layer, 0) for r in rows], label=layer)
    a.set(xlabel="round", ylabel="density", title=f"{run.study}/{run.run} seed {run.seed}", yscale="log")
    b.set(xlabel="round", ylabel="mask positions changed")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    return _save(fig, out / f"{run.study}__{run.run}__masks.png")


def plot_sweep(study: str, runs: list[Run], out: Path) -> Path | None:
    """Final accuracy (mean +- std over seeds) against a swept hyper-parameter, one line
    per method and setting (the grid's other labels)."""
    pts: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    key = None
    for r in runs:
        parts = r.point.split("__")
        labels = [p for p in parts if "=" in p]
        if len(labels) != 1:
            return None
        key, value = labels[0].split("=", 1)
        series = ", ".join([r.method, *[p for p in parts if "=" not in p and p]])
        try:
            pts[series][float(value)].append(r.data["summary"]["final_accuracy"])
        except ValueError:
            return None
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, vals in sorted(pts.items()):
        xs = sorted(vals)
        ys = [statistics.fmean(vals[x]) for x in xs]
        es = [statistics.stdev(vals[x]) if len(vals[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    ax.set(xlabel=key, ylabel="final test accuracy", title=study)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out / f"{study}__sweep.png")


# -- command -------------------------------------------------------------------------------

def summarise(root: Path, out: Path, target: float, plots: bool = True) -> str:
    """Write ``summary.md`` and the plots under ``out``; return the Markdown."""
    runs = load_runs(root)
    out.mkdir(parents=True, exist_ok=True)
    figs = out / "figures"
    parts = [f"# Study summary\n\nFrom `{root}` ({len(runs)} complete runs); target accuracy "
             f"{target:.0%}. Mean +- std over seeds.\n"]
    for study in sorted({r.study for r in runs}):
        rs = [r for r in runs if r.study == study]
        parts.append(f"\n## {study}\n\n{study_table(study, rs, target)}\n")
        for kind in ("noisy", "attacker"):
            table = share_table(study, rs, kind)
            if table:
                parts.append(f"\nRounds by the share of {kind} clients among the aggregated "
                             f"(pooled over seeds): how many, the mean accuracy change from "
                             f"the round before, and the {kind} clients' mean share of the "
                             f"clients -> of the aggregation weight ('?' where the strategy "
                             f"does not report weights).\n\n{table}\n")
        if not plots:
            continue
        figs.mkdir(parents=True, exist_ok=True)
        made = []
        for point in sorted({r.point for r in rs}):
            made.append(plot_curves(study, point, [r for r in rs if r.point == point], figs))
        first = {}
        for r in sorted(rs, key=lambda r: r.seed):
            first.setdefault(r.run, r)
        for r in first.values():
            made.append(plot_contributions(r, figs))
            if r.method == "fedprune":
                made.append(plot_masks(r, figs))
        made.append(plot_sweep(study, rs, figs))
        parts.append("\n" + "\n".join(f"![{p.stem}]({p.relative_to(out)})" for p in made if p) + "\n")
    text = "".join(parts)
    (out / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="fedprune-summary", description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="folder of <study>/<run>/seed-<s>/results.json")
    p.add_argument("--out", type=Path, help="where summary.md and figures/ go (default: root)")
    p.add_argument("--target", type=float, default=0.9, help="target accuracy (default 0.9)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    restore_default(args.root)
    if not args.root.is_dir():
        raise SystemExit(f"fedprune-summary: no folder {args.root}")
    if not load_runs(args.root):
        raise SystemExit(f"fedprune-summary: no complete results.json under {args.root} "
                         "(expected <study>/<run>/seed-<s>/results.json)")
    text = summarise(args.root, args.out or args.root, args.target, plots=not args.no_plots)
    print(text)


if __name__ == "__main__":
    main()
