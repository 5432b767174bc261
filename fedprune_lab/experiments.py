"""Experiment files: YAML run-config overrides (and the federation size) for one run.

A file in ``conf/`` is a mapping of run-config keys (kebab-case, as in
``pyproject.toml``) plus an optional ``federation`` mapping::

    # FedProx on the embedded MNIST subset
    strategy: fedprox
    proximal-mu: 0.01
    federation:
      num-supernodes: 10

Every key is checked against :class:`fedprune.config.RunConfig`; an unknown
key or a bad value is an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedprune.config import ConfigError, RunConfig

# Flower's simulation federation options (``flwr run --federation-config``): clients, and
# each ClientApp's Ray resources (a fractional GPU lets several clients share one)
FEDERATION_KEYS = ("num-supernodes", "client-resources-num-cpus", "client-resources-num-gpus")


@dataclass(frozen=True)
class Experiment:
    """One experiment file, parsed and validated."""

    path: Path
    overrides: dict[str, Any]
    federation: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file's stem (``conf/fedprox.yaml`` -> ``fedprox``)."""
        return self.path.stem

    @property
    def num_supernodes(self) -> int:
        """Clients in the federation (default 10)."""
        return int(self.federation.get("num-supernodes", 10))

    @property
    def client_resources(self) -> dict[str, float]:
        """Ray resources of each simulated ClientApp (1 CPU, no GPU by default)."""
        return client_resources(self.federation)


def client_resources(federation: dict[str, Any]) -> dict[str, float]:
    """``{"num_cpus", "num_gpus"}`` from a federation mapping, checked."""
    cpus = float(federation.get("client-resources-num-cpus", 1))
    gpus = float(federation.get("client-resources-num-gpus", 0.0))
    if cpus <= 0 or gpus < 0:
        raise ConfigError(f"client resources must be > 0 CPUs and >= 0 GPUs, got {cpus}, {gpus}")
    return {"num_cpus": cpus, "num_gpus": gpus}


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A YAML file's mapping, and its checked ``federation`` section (popped from it)."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of run-config keys")
    federation = doc.pop("federation", {}) or {}
    bad = set(federation) - set(FEDERATION_KEYS)
    if bad:
        raise ConfigError(f"{path}: unknown federation keys {sorted(bad)}; valid: {FEDERATION_KEYS}")
    try:
        client_resources(federation)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return doc, federation


def load_experiment(path: str | Path, extra: dict[str, Any] | None = None) -> Experiment:
    """Read and validate an experiment file; ``extra`` overrides its keys."""
    path = Path(path)
    doc, federation = _read(path)
    overrides = {**doc, **(extra or {})}
    try:
        RunConfig.from_mapping(overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return Experiment(path=path, overrides=overrides, federation=dict(federation))


# -- studies: several runs, grids and seeds in one file -------------------------------------

STUDY_KEYS = ("study", "seeds", "runs", "grid", "federation")


@dataclass(frozen=True)
class Job:
    """One run of a study: a configuration and a seed."""

    study: str
    run: str  # the run's name within the study (method and grid labels)
    seed: int
    overrides: dict[str, Any]
    num_supernodes: int
    labels: dict[str, str] = field(default_factory=dict)  # grid axis -> label
    federation: dict[str, Any] = field(default_factory=dict)  # the file's federation section

    @property
    def key(self) -> str:
        """Relative results folder: ``<study>/<run>/seed-<seed>``."""
        return f"{self.study}/{self.run}/seed-{self.seed}"


def _axis(name: str, values: Any, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """A grid axis: ``key: [v1, v2]`` (a run-config key) or ``axis: {label: {overrides}}``."""
    if isinstance(values, list):
        if not values:
            raise ConfigError(f"{path}: grid axis {name!r} is empty")
        return [(f"{name}={v}", {name: v}) for v in values]
    if isinstance(values, dict) and values and all(isinstance(v, dict) for v in values.values()):
        return [(str(label), dict(ov)) for label, ov in values.items()]
    raise ConfigError(f"{path}: grid axis {name!r} must be a list of values of that run-config "
                      f"key or a mapping label -> overrides")


def load_study(
    path: str | Path, extra: dict[str, Any] | None = None, seeds: list[int] | None = None
) -> list[Job]:
    """Expand a study file into its jobs (every run x every grid point x every seed).

    A study file is an experiment file with optional extra keys::

        study: compare-mnist       # results folder name (default: the file's stem)
        seeds: [0, 1, 2]           # default: the file's ``seed`` (0)
        dataset: mnist             # ... every other top-level key: shared overrides
        runs:                      # named runs, each overrides on top (default: one run)
          fedavg: {strategy: fedavg}
          fedprune: {strategy: fedprune}
        grid:                      # a cartesian product applied to every run
          sparsity: [0.5, 0.8]                         # a run-config key and its values
          partition:                                   # or labelled sets of overrides
            dirichlet-0.3: {partitioner: dirichlet, dirichlet-alpha: 0.3}
            pathological-2: {partitioner: pathological, classes-per-client: 2}

    ``extra`` (``--set``) overrides everything; ``seeds`` replaces the file's seeds.
    Every job's configuration is validated here, before anything runs.
    """
    import itertools

    path = Path(path)
    doc, federation = _read(path)
    study = str(doc.pop("study", path.stem))
    file_seeds = doc.pop("seeds", None)
    runs = doc.pop("runs", None) or {path.stem: {}}
    grid = doc.pop("grid", None) or {}
    if not isinstance(runs, dict) or not all(isinstance(v, dict) or v is None for v in runs.values()):
        raise ConfigError(f"{path}: 'runs' must map run names to overrides")
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: 'grid' must be a mapping of axes")
    if seeds is None:
        seeds = file_seeds if file_seeds is not None else [int(doc.get("seed", 0))]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: 'seeds' must be a non-empty list of integers")
    axes = [(name, _axis(name, values, path)) for name, values in grid.items()]
    jobs = []
    for run, run_ov in runs.items():
        for point in itertools.product(*[a for _, a in axes]) if axes else [()]:
            labels = {name: label for (name, _), (label, _) in zip(axes, point, strict=True)}
            overrides = {**doc, **(run_ov or {})}
            for _, ov in point:
                overrides.update(ov)
            overrides.update(extra or {})
            fed = {**federation, **overrides.pop("federation", {})}
            name = "__".join([str(run), *labels.values()])
            for seed in seeds:
                ov = {**overrides, "seed": seed}
                try:
                    RunConfig.from_mapping(ov)
                except ConfigError as exc:
                    raise ConfigError(f"{path}: run {name!r}: {exc}") from exc
                jobs.append(Job(study=study, run=name, seed=seed, overrides=ov,
                                num_supernodes=int(fed.get("num-supernodes", 10)), labels=labels,
                                federation=dict(fed)))
    return jobs
