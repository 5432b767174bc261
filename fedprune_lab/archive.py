"""The study results kept in git: one compact JSON per study.

The study runner writes every run's full ``results.json`` (per-client weights, layer
densities, rejected replies: tens of kilobytes each, thousands of runs) under
``docs/results/runs/<study>/<run>/seed-<s>/``, a folder git ignores. What the report,
``fedprune-summary`` and ``fedprune-scoreboard`` read (each run's config, summary and
scalar round metrics) is kept in git as ``docs/results/studies/<study>.json``, one line
per run.

    python -m fedprune_lab.archive pack       # runs folder -> docs/results/studies/*.json
    python -m fedprune_lab.archive restore    # the archive -> the runs folder (what is missing)

``fedprune-study``, ``fedprune-scoreboard`` and ``fedprune-summary`` restore the
archive into the default runs folder before they read it, and ``fedprune-study`` packs
the studies it ran. A restored ``results.json`` holds the scalar round metrics only:
the analyses of per-client weights (``fedprune_lab.weight_stats``,
``fedprune_lab.class_weight``) need the full runs, which the study's command re-makes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "results" / "runs"
STUDIES = ROOT / "docs" / "results" / "studies"
_SCALAR = (int, float, str, bool, type(None))
_ABSENT: dict[str, Any] = {}  # a table cell of a metric the round lacks


def compact(doc: dict[str, Any]) -> dict[str, Any]:
    """A results.json with its scalar round metrics only (no per-client or per-layer
    detail), and its config and summary. The rounds are a table: the metric names once
    (``columns``), then one row of values per round, ``{}`` where a round lacks the
    metric (never a metric's value: those are scalars)."""
    rounds = [{k: v for k, v in r.items() if isinstance(v, _SCALAR)} for r in doc["rounds"]]
    columns: list[str] = []
    for r in rounds:
        columns += [k for k in r if k not in columns]
    rows = [[r.get(k, _ABSENT) if k in r else _ABSENT for k in columns] for r in rounds]
    return {"config": doc["config"], "summary": doc["summary"],
            "rounds": {"columns": columns, "rows": rows}}


def expand(entry: dict[str, Any]) -> dict[str, Any]:
    """The results.json that :func:`compact` made ``entry`` from (its scalar metrics)."""
    t = entry["rounds"]
    rounds = [{k: v for k, v in zip(t["columns"], row, strict=True) if v != _ABSENT}
              for row in t["rows"]]
    return {"config": entry["config"], "rounds": rounds, "summary": entry["summary"]}


_ARCHIVES: dict[Path, dict[str, Any]] = {}  # studies/<study>.json, read once


def _archived(path: Path) -> dict[str, Any] | None:
    """The archive's entry for ``path`` (a runs-folder results.json), if it holds the
    same run."""
    runs = path.resolve().parents[2]
    if runs.parent.resolve() != RUNS.resolve():
        return None
    f = STUDIES / f"{runs.name}.json"
    if f not in _ARCHIVES:
        _ARCHIVES[f] = _read(f)
    entry = _ARCHIVES[f].get(f"{path.parents[1].name}/{path.parent.name}")
    if entry is None:
        return None
    try:
        same = compact(json.loads(path.read_text())) == {
            k: entry[k] for k in ("config", "summary", "rounds")}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if same else None


def measured_day(path: Path) -> str:
    """The day a run was measured: the commit of its results.json where git holds it
    unchanged, else the archived day of the same run, else the file's modification day
    (which :func:`restore` sets to the archived day)."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    if git("ls-files", "--error-unmatch", "--", str(path)).returncode == 0 and \
            git("diff", "--quiet", "HEAD", "--", str(path)).returncode == 0:
        day = git("log", "-1", "--format=%cs", "--", str(path)).stdout.strip()
        if day:
            return day
    entry = _archived(path)
    if entry is not None:
        return str(entry["measured"])
    return date.fromtimestamp(path.stat().st_mtime).isoformat()


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def pack(runs: Path = RUNS, studies: Path = STUDIES, only: set[str] | None = None) -> list[Path]:
    """Write ``studies/<study>.json`` for every study folder under ``runs`` (or those in
    ``only``): its complete runs, plus the archived runs the folder lacks. Returns the
    files written."""
    studies.mkdir(parents=True, exist_ok=True)
    written = []
    for folder in sorted(p for p in runs.iterdir() if p.is_dir()):
        if only is not None and folder.name not in only:
            continue
        entries = _read(studies / f"{folder.name}.json")
        for res in sorted(folder.glob("*/seed-*/results.json")):
            try:
                doc = json.loads(res.read_text())
                rounds_done = int(doc["summary"]["rounds_completed"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written, or broken: not archived
            if rounds_done < int(doc["config"].get("num-server-rounds", 0)):
                continue  # still running or stopped
            key = f"{res.parents[1].name}/{res.parent.name}"
            entry = {"measured": measured_day(res), **compact(doc)}
            job = _read(res.parent / "job.json")
            if "num-supernodes" in job:
                entry["num-supernodes"] = int(job["num-supernodes"])
            old = entries.get(key)
            if old is not None and {k: v for k, v in old.items() if k != "measured"} == \
                    {k: v for k, v in entry.items() if k != "measured"}:
                entry["measured"] = old["measured"]  # the same run, restored: keep its day
            entries[key] = entry
        if not entries:
            continue
        out = studies / f"{folder.name}.json"
        lines = [f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}"
                 for k, v in sorted(entries.items())]
        out.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        written.append(out)
    return written


def restore(runs: Path = RUNS, studies: Path = STUDIES) -> int:
    """Write every archived run that ``runs`` lacks (a complete results.json there is
    never replaced), dated by when it was measured. Returns how many were written."""
    if not studies.is_dir():
        return 0
    n = 0
    for f in sorted(studies.glob("*.json")):
        for key, entry in json.loads(f.read_text()).items():
            folder = runs / f.stem / key
            res = folder / "results.json"
            if res.exists():
                continue
            folder.mkdir(parents=True, exist_ok=True)
            doc = expand(entry)
            tmp = folder / ".results.restore.tmp"
            tmp.write_text(json.dumps(doc, indent=1))
            if "num-supernodes" in entry:
                (folder / "job.json").write_text(
                    json.dumps({"num-supernodes": entry["num-supernodes"]}))
            stamp = time.mktime(datetime.fromisoformat(entry["measured"]).timetuple())
            os.utime(tmp, (stamp, stamp))
            tmp.replace(res)
            n += 1
    return n


def restore_default(root: Path) -> None:
    """:func:`restore` when ``root`` is the default runs folder or inside it (another
    folder is the user's own and left as it is)."""
    if root.resolve() == RUNS.resolve() or RUNS.resolve() in root.resolve().parents:
        n = restore()
        if n:
            print(f"[fedprune] restored {n} archived runs from {STUDIES.relative_to(ROOT)} "
                  f"into {RUNS.relative_to(ROOT)}", flush=True)


def pack_default(root: Path, studies: set[str]) -> None:
    """:func:`pack` of ``studies`` when ``root`` is the default runs folder."""
    if root.resolve() == RUNS.resolve() and studies:
        for f in pack(only=studies):
            print(f"[fedprune] archived {f.relative_to(ROOT)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["pack", "restore"])
    p.add_argument("--runs", type=Path, default=RUNS)
    p.add_argument("--studies", type=Path, default=STUDIES)
    args = p.parse_args(argv)
    if args.action == "pack":
        for f in pack(args.runs, args.studies):
            print(f)
    else:
        print(f"restored {restore(args.runs, args.studies)} runs into {args.runs}")


if __name__ == "__main__":
    main()
