"""``fedprune-run``: run experiment files from ``conf/`` (YAML) end to end.

    fedprune-run conf/fedprox.yaml                      # in-process Flower simulation
    fedprune-run conf/fedprune.yaml --set sparsity=0.9 --results-dir /abs/out
    fedprune-run conf/feddst.yaml --engine flwr         # through `flwr run . --stream`

``--engine simulation`` (default) runs Flower's Simulation Engine in this
process; ``--engine flwr`` writes the overrides to a TOML file, calls
``flwr run <app> --stream --run-config <file>`` from the project folder and
then checks the run's real status with ``flwr ls`` (``flwr run`` exits 0
even when the run fails). Results go to ``<results-dir>/results.json``
(default ``results/<experiment name>/``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fedprune.config import ConfigError
from fedprune_lab.experiments import Experiment, load_experiment


def parse_set(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs, values parsed as YAML scalars (``0.9``, ``true``, ``mnist``)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_simulation_engine(exp: Experiment, results_dir: Path) -> dict:
    """In-process Flower simulation of one experiment; returns its results.json."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from fedprune_lab.simulation import simulate  # deferred: imports Ray

    return simulate(exp.num_supernodes, exp.overrides, results_dir,
                    client_resources=exp.client_resources)


def flwr_cli() -> str:
    """The ``flwr`` command beside this Python (its virtual environment), else on PATH."""
    here = Path(sys.executable).parent / "flwr"
    return str(here) if here.exists() else "flwr"


def local_superlink_pids() -> set[int]:
    """PIDs of the local simulation SuperLink that ``flwr run`` starts for this FLWR_HOME."""
    home = Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").resolve()
    db = f"--database {home}/local-superlink/state.db"
    pids = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in cmd and db in cmd:
            pids.add(int(proc.name))
    return pids


def run_flwr_engine(exp: Experiment, results_dir: Path, app_dir: Path) -> dict:
    """``flwr run`` on the local simulation SuperLink; fails unless the run completed.

    A SuperLink that this call started is stopped (by PID) before returning.
    """
    before = local_superlink_pids()
    try:
        return _flwr_run(exp, results_dir, app_dir)
    finally:
        for pid in local_superlink_pids() - before:
            os.kill(pid, signal.SIGTERM)


def _flwr_run(exp: Experiment, results_dir: Path, app_dir: Path) -> dict:
    import tomli_w

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(tomli_w.dumps({**exp.overrides, "results-dir": str(results_dir)}))
        toml_path = f.name
    try:
        subprocess.run(
            [flwr_cli(), "run", str(app_dir), "--stream", "--run-config", toml_path,
             "--federation-config", " ".join(
                 f"{k}={v}" for k, v in {**exp.federation,
                                         "num-supernodes": exp.num_supernodes}.items())],
            check=True, env=env,
        )
    finally:
        os.unlink(toml_path)
    ls = subprocess.run([flwr_cli(), "ls", "--format", "json"], check=True, env=env,
                        capture_output=True, text=True)
    runs = json.loads(ls.stdout).get("runs", [])
    status = max(runs, key=lambda r: r["pending-at"])["status"] if runs else "none"
    if status != "finished:completed":
        raise SystemExit(f"{exp.name}: flwr run ended with status {status!r}")
    return json.loads((results_dir / "results.json").read_text())


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="fedprune-run", description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="+", type=Path, help="YAML files (conf/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config key (repeatable)")
    p.add_argument("--num-supernodes", type=int, help="override the federation size")
    p.add_argument("--results-dir", type=Path, help="folder for results.json (one experiment)")
    p.add_argument("--engine", choices=("simulation", "flwr"), default="simulation")
    p.add_argument("--app-dir", type=Path, default=Path.cwd(), help="project folder (flwr engine)")
    args = p.parse_args(argv)
    if args.results_dir and len(args.experiments) > 1:
        raise SystemExit("--results-dir needs a single experiment file")
    extra = parse_set(args.set)
    try:  # every file checked before the first run starts; one line per error
        exps = [load_experiment(path, extra) for path in args.experiments]
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"fedprune-run: {exc}") from None
    for exp in exps:
        if args.num_supernodes:
            exp.federation["num-supernodes"] = args.num_supernodes
        out = (args.results_dir or Path("results") / exp.name).resolve()
        print(f"[fedprune-run] {exp.name}: {exp.num_supernodes} clients, results in {out}",
              flush=True)
        if args.engine == "flwr":
            res = run_flwr_engine(exp, out, args.app_dir.resolve())
        else:
            res = run_simulation_engine(exp, out)
        s = res["summary"]
        print(f"[fedprune-run] {exp.name}: final accuracy {s['final_accuracy']:.4f} (best "
              f"{s['best_accuracy']:.4f}), upload {s['total_bytes_up'] / 1e6:.2f} MB, "
              f"download {s['total_bytes_down'] / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
