"""Run configuration: one frozen dataclass parsed once at the app edge.

The Flower app reads its run-config (the ``[tool.flwr.app.config]`` table of
``pyproject.toml``, overridden by ``flwr run --run-config``) and hands it to
:func:`RunConfig.from_mapping`, which checks every key and type. Inside
``fedprune/`` only plain values travel; no ``Context`` objects.

The defaults here equal the ``pyproject.toml`` table (``tests/test_config.py``
keeps them in step), so an in-process simulation, where Flower passes an empty
run-config, behaves like ``flwr run .``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedprune.attacks import ATTACKS
from fedprune.contribution import REFERENCES as CGSV_REFERENCES

if TYPE_CHECKING:
    from fedprune.data.partition import PartitionSpec

DATA_DIR_ENV = "FEDPRUNE_DATA_DIR"

# the ServerApp's strategies (strategies/server_app.py STRATEGIES; a test keeps them equal)
STRATEGY_NAMES = ("fedavg", "fedprune", "flower-fedavg", "fedavgm", "fedprox", "fedmedian",
                  "krum", "feddst", "static-magnitude", "static-random", "fedbt", "fedbt-prune",
                  "small-dense", "lotteryfl", "subfedavg", "fedmp", "prunefl")
NOISE_TYPES = ("none", "symmetric", "pairflip")
DEVICES = ("cpu", "cuda", "auto")
CODEC_DTYPES = ("float32", "float16")
OPTIMIZER_CHOICES = ("auto", "sgd", "adamw")
# optimizer = "auto": AdamW (with warm-up) for these models, the transformers; SGD otherwise
ADAMW_MODELS = frozenset({"vit", "bert-tiny", "gpt-char", "gpt-char-tied"})


def resolved_optimizer(optimizer: str, model: str) -> str:
    """The optimizer a run trains with: ``optimizer``, or for ``auto`` the model's
    (``adamw`` for :data:`ADAMW_MODELS`, ``sgd`` otherwise)."""
    if optimizer != "auto":
        return optimizer
    return "adamw" if model in ADAMW_MODELS else "sgd"


def computed(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run-config dict with ``optimizer = "auto"`` replaced by what it resolves to, so that
    two configs that train alike compare equal (stored runs, checkpoints)."""
    out = dict(config)
    if "optimizer" in out:
        out["optimizer"] = resolved_optimizer(str(out["optimizer"]), str(out.get("model", "")))
    return out
ADAPTIVE_DENSITY = ("none", "budget", "contribution")
FEDBT_MODES = ("pretrain", "finetune")  # see fedprune.partial


class ConfigError(ValueError):
    """A run-config key or value is wrong; the message says which and why."""


# Keys that do not change what a run computes: a resumed run may differ in them.
NOT_COMPUTED = frozenset({"resume", "overwrite", "checkpoint-every", "results-dir", "data-dir",
                          "download", "round-timeout"})

# Keys whose default, when they were added, differs from what the runs written
# before them did: a stored config (results.json, checkpoint) without the key ran
# with this value, not with today's default.
BEFORE_KEY: dict[str, Any] = {"cgsv-reference": "round", "round-average": 0.0, "optimizer": "sgd",
                              "readjustment": "client", "cgsv-scope": "model",
                              "cgsv-rule": "scores"}


@dataclass(frozen=True)
class RunConfig:
    """Every run-config key of the app, with its default (kebab-case on the wire)."""

    num_server_rounds: int = 15
    fraction_train: float = 0.5
    fraction_evaluate: float = 0.0
    min_train_clients: int = 2
    min_replies: int = 1
    local_epochs: int = 2
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "auto"
    batch_size: int = 32
    eval_batch_size: int = 1000
    eval_samples: int = 0
    dataset: str = "mnist-mini"
    partitioner: str = "iid"
    dirichlet_alpha: float = 0.3
    classes_per_client: int = 2
    shard_size: int = 20
    shards_per_client: int = 2
    test_fraction: float = 0.2
    max_client_samples: int = 0
    local_test: str = "split"
    noise_type: str = "none"
    noise_fraction: float = 0.0
    noise_rate_min: float = 0.8
    noise_rate_max: float = 0.8
    attack: str = "none"
    attack_fraction: float = 0.0
    attack_scale: float = 10.0
    model: str = "cnn-mnist"
    model_width: float = 1.0
    seed: int = 0
    strategy: str = "fedprune"
    # FedProx / FedAvgM (Flower's strategies)
    proximal_mu: float = 0.01
    server_lr: float = 1.0
    server_momentum: float = 0.9
    # Krum (Flower's): clients assumed malicious
    krum_malicious: int = 0
    # PruneFL
    reconfig_interval: int = 5
    prunefl_initial_epochs: int = 10
    # LotteryFL / Sub-FedAvg
    prune_rate: float = 0.2
    lottery_threshold: float = 0.6
    # FedMP: the densities its bandit chooses from (comma-separated)
    fedmp_arms: str = "0.1,0.2,0.35,0.5"
    # FedPrune (strategy "fedprune")
    sparsity: float = 0.8
    density_distribution: str = "erk"
    alpha0: float = 0.1
    readjust_interval: int = 5
    readjust_end: int = 0
    readjust_at: float = 0.5
    growth: str = "gradient"
    readjustment: str = "client"
    lambda0: float = 0.5
    lambda_schedule: str = "cosine"
    lambda_min: float = 0.0
    cgsv_beta: float = 0.5
    cgsv_floor: float = 0.001
    cgsv_leave_one_out: bool = False
    cgsv_reference: str = "trusted"
    cgsv_history_beta: float = 0.5
    cgsv_scope: str = "model"
    cgsv_rule: str = "scores"
    cgsv_root_samples: int = 100
    clip_updates: float = 2.0
    clip_window: int = 1
    grown_average: str = "all"
    grown_start: str = "zero"
    round_average: float = 0.75
    dynamic_topology: bool = True
    contribution_weighting: bool = True
    residual_restoration: bool = True
    # FedBT partial training (strategies "fedbt", "fedbt-prune"); see fedprune/partial.py
    fedbt_mode: str = "pretrain"
    fedbt_layers: int = 0
    fedbt_top: int = 1
    data_dir: str = ""
    download: bool = False
    results_dir: str = ""
    checkpoint_every: int = 0
    resume: bool = False
    device: str = "cpu"
    # mixed-precision local training (float16 autocast on CUDA, bfloat16 on CPU)
    amp: bool = False
    # dtype of the float values on the wire: float32 (exact) or float16 (lossy, half the bytes)
    codec_dtype: str = "float32"
    # FedPrune's per-client density: none (every client the global density), budget
    # (node-config compute-budget), contribution (low-CGSV clients get sparser sub-masks)
    adaptive_density: str = "none"
    adaptive_min: float = 0.25
    # simulated device budgets: client i gets budgets[i % len] unless its node-config sets
    # compute-budget (comma-separated fractions in (0, 1]; "" = every client 1)
    compute_budgets: str = ""
    round_timeout: float = 600.0
    round_retries: int = 0
    # a run into a results-dir that holds another run's results.json is refused unless
    # this is set (or resume continues that run)
    overwrite: bool = False
    # the most num-examples a training reply may claim (0 = the largest training partition
    # of this run, computed by the server from the run-config); larger claims are rejected
    max_num_examples: int = 0
    # Keys a caller may add on top (for example a plug-in app's own keys) are
    # kept here untouched when ``allow_extra`` is set in ``from_mapping``.
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def keys(cls) -> dict[str, dataclasses.Field[Any]]:
        """Kebab-case key -> dataclass field, for every run-config key."""
        return {f.name.replace("_", "-"): f for f in dataclasses.fields(cls) if f.name != "extra"}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Kebab-case key -> default value (the pyproject.toml table)."""
        base = cls()
        return {k: getattr(base, f.name) for k, f in cls.keys().items()}

    @classmethod
    def predated_defaults(cls) -> dict[str, Any]:
        """:meth:`defaults`, except that a key added with a default that changes what
        runs compute gives what the runs written before it ran with
        (:data:`BEFORE_KEY`): the base for a stored config that lacks keys."""
        return {**cls.defaults(), **BEFORE_KEY}

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any] | None = None, *, allow_extra: bool = False
    ) -> RunConfig:
        """Parse a run-config mapping (kebab-case keys); missing keys take defaults.

        Raises
        ------
        ConfigError
            On an unknown key (unless ``allow_extra``), a value of the wrong
            type, or a value out of range.
        """
        values = dict(values or {})
        known = cls.keys()
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in values.items():
            fld = known.get(key)
            if fld is None:
                if allow_extra:
                    extra[key] = value
                    continue
                raise ConfigError(
                    f"unknown run-config key {key!r}; valid keys: {', '.join(sorted(known))}"
                )
            kwargs[fld.name] = _coerce(key, value, type(getattr(cls(), fld.name)))
        cfg = cls(**kwargs, extra=extra)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The resolved config with kebab-case keys (what results.json records)."""
        out = {k: getattr(self, f.name) for k, f in self.keys().items()}
        out.update(self.extra)
        return out

    def validate(self) -> None:
        """Range checks; raise ConfigError naming the key."""
        for key, fld in self.keys().items():  # inf / nan pass every range check below
            value = getattr(self, fld.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"run-config {key!r} must be a finite number (got {value!r})")
        checks = [
            (self.seed >= 0, "seed", "must be >= 0"),
            (self.num_server_rounds >= 1, "num-server-rounds", "must be >= 1"),
            (0.0 < self.fraction_train <= 1.0, "fraction-train", "must be in (0, 1]"),
            (0.0 <= self.fraction_evaluate <= 1.0, "fraction-evaluate", "must be in [0, 1]"),
            (self.min_train_clients >= 1, "min-train-clients", "must be >= 1"),
            (self.min_replies >= 1, "min-replies", "must be >= 1"),
            (self.local_epochs >= 1, "local-epochs", "must be >= 1"),
            (self.lr > 0, "lr", "must be > 0"),
            (0.0 <= self.momentum < 1.0, "momentum", "must be in [0, 1)"),
            (self.weight_decay >= 0, "weight-decay", "must be >= 0"),
            (self.batch_size >= 1, "batch-size", "must be >= 1"),
            (self.eval_batch_size >= 1, "eval-batch-size", "must be >= 1"),
            (self.eval_samples >= 0, "eval-samples", "must be >= 0 (0 = the whole test set)"),
            (self.dirichlet_alpha > 0, "dirichlet-alpha", "must be > 0"),
            (self.classes_per_client >= 1, "classes-per-client", "must be >= 1"),
            (self.shard_size >= 1, "shard-size", "must be >= 1"),
            (self.shards_per_client >= 1, "shards-per-client", "must be >= 1"),
            (0.0 <= self.test_fraction < 1.0, "test-fraction", "must be in [0, 1)"),
            (self.max_client_samples >= 0, "max-client-samples", "must be >= 0 (0 = no cap)"),
            (self.local_test in ("split", "classes"), "local-test", "must be 'split' or 'classes'"),
            (self.noise_type in NOISE_TYPES, "noise-type", f"must be one of {NOISE_TYPES}"),
            (0.0 <= self.noise_fraction <= 1.0, "noise-fraction", "must be in [0, 1]"),
            (0.0 <= self.noise_rate_min <= 1.0, "noise-rate-min", "must be in [0, 1]"),
            (
                self.noise_rate_min <= self.noise_rate_max <= 1.0,
                "noise-rate-max",
                "must be in [noise-rate-min, 1]",
            ),
            (self.attack in ATTACKS, "attack", f"must be one of {ATTACKS}"),
            (0.0 <= self.attack_fraction <= 1.0, "attack-fraction", "must be in [0, 1]"),
            (self.attack_scale > 0, "attack-scale", "must be > 0"),
            (self.device in DEVICES, "device", f"must be one of {DEVICES}"),
            (self.codec_dtype in CODEC_DTYPES, "codec-dtype", f"must be one of {CODEC_DTYPES}"),
            (self.optimizer in OPTIMIZER_CHOICES, "optimizer", f"must be one of {OPTIMIZER_CHOICES}"),
            (self.adaptive_density in ADAPTIVE_DENSITY, "adaptive-density",
             f"must be one of {ADAPTIVE_DENSITY}"),
            (0.0 < self.adaptive_min <= 1.0, "adaptive-min", "must be in (0, 1]"),
            (not self.compute_budgets or _valid_arms(self.compute_budgets), "compute-budgets",
             "must be comma-separated fractions in (0, 1]"),
            (0.0 < self.model_width <= 4.0, "model-width", "must be in (0, 4]"),
            (self.proximal_mu >= 0, "proximal-mu", "must be >= 0"),
            (self.server_lr > 0, "server-lr", "must be > 0"),
            (self.krum_malicious >= 0, "krum-malicious", "must be >= 0"),
            (self.reconfig_interval >= 1, "reconfig-interval", "must be >= 1"),
            (self.prunefl_initial_epochs >= 1, "prunefl-initial-epochs", "must be >= 1"),
            (0.0 < self.prune_rate < 1.0, "prune-rate", "must be in (0, 1)"),
            (0.0 <= self.lottery_threshold <= 1.0, "lottery-threshold", "must be in [0, 1]"),
            (_valid_arms(self.fedmp_arms), "fedmp-arms",
             "must be comma-separated densities in (0, 1]"),
            (0.0 <= self.server_momentum < 1.0, "server-momentum", "must be in [0, 1)"),
            (0.0 <= self.sparsity < 1.0, "sparsity", "must be in [0, 1)"),
            (self.density_distribution in ("erk", "uniform"), "density-distribution",
             "must be 'erk' or 'uniform'"),
            (0.0 <= self.alpha0 <= 1.0, "alpha0", "must be in [0, 1]"),
            (self.readjust_interval >= 1, "readjust-interval", "must be >= 1"),
            (self.readjust_end >= 0, "readjust-end", "must be >= 0 (0 = 3/4 of the rounds)"),
            (0.0 < self.readjust_at <= 1.0, "readjust-at", "must be in (0, 1]"),
            (self.growth in ("gradient", "random"), "growth", "must be 'gradient' or 'random'"),
            (self.cgsv_scope in ("model", "features"), "cgsv-scope",
             "must be 'model' or 'features'"),
            (self.cgsv_rule in ("scores", "classes"), "cgsv-rule",
             "must be 'scores' or 'classes'"),
            (self.readjustment in ("client", "server"), "readjustment",
             "must be 'client' or 'server'"),
            (0.0 <= self.lambda0 <= 1.0, "lambda0", "must be in [0, 1]"),
            (self.lambda_schedule in ("cosine", "linear", "exponential", "constant"),
             "lambda-schedule", "must be cosine, linear, exponential or constant"),
            (0.0 <= self.lambda_min <= self.lambda0, "lambda-min",
             f"must be in [0, lambda0 = {self.lambda0}]"),
            (0.0 <= self.cgsv_beta < 1.0, "cgsv-beta", "must be in [0, 1)"),
            (0.0 < self.cgsv_floor < 1.0, "cgsv-floor", "must be in (0, 1)"),
            (self.cgsv_reference in CGSV_REFERENCES, "cgsv-reference",
             f"must be one of {CGSV_REFERENCES}"),
            (0.0 <= self.cgsv_history_beta < 1.0, "cgsv-history-beta", "must be in [0, 1)"),
            (self.cgsv_root_samples >= 1, "cgsv-root-samples", "must be >= 1"),
            (self.clip_updates >= 0, "clip-updates", "must be >= 0 (0 = off)"),
            (self.clip_window >= 1, "clip-window", "must be >= 1 (1 = this round only)"),
            (self.grown_average in ("holders", "all"), "grown-average", "must be 'holders' or 'all'"),
            (self.grown_start in ("zero", "residual"), "grown-start", "must be 'zero' or 'residual'"),
            (0.0 <= self.round_average < 1.0, "round-average",
             "must be in [0, 1) (0 = the last round's model)"),
            (self.fedbt_mode in FEDBT_MODES, "fedbt-mode", f"must be one of {FEDBT_MODES}"),
            (self.fedbt_layers >= 0, "fedbt-layers", "must be >= 0 (0 = FedBT's default)"),
            (self.fedbt_top >= 0, "fedbt-top", "must be >= 0"),
            (self.round_timeout > 0, "round-timeout", "must be > 0"),
            (self.round_retries >= 0, "round-retries", "must be >= 0 (0 = skip the round)"),
            (self.max_num_examples >= 0, "max-num-examples",
             "must be >= 0 (0 = the largest training partition of the run)"),
            (self.checkpoint_every >= 0, "checkpoint-every", "must be >= 0 (0 = no checkpoints)"),
        ]
        for ok, key, why in checks:
            if not ok:
                raise ConfigError(f"run-config {key!r} {why} (got {self.to_dict()[key]!r})")
        self._check_names()

    def _check_names(self) -> None:
        """The strategy, dataset and model must be registered names (with a "did you
        mean" for a typo), so a wrong one fails here, before anything starts."""
        import fedprune.data  # noqa: F401  (registers every data set; imports config)
        from fedprune.data.datasets import dataset_names
        from fedprune.models import model_names

        for key, value, valid in (("strategy", self.strategy, STRATEGY_NAMES),
                                  ("dataset", self.dataset, dataset_names()),
                                  ("model", self.model, model_names())):
            if value not in valid:
                close = difflib.get_close_matches(value, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"run-config {key!r}: unknown {value!r}{hint} (valid: "
                                  f"{', '.join(sorted(valid))})")

    def partition_spec(self, num_partitions: int) -> PartitionSpec:
        """The partition of the training set this run-config describes."""
        from fedprune.data.partition import PartitionSpec  # local: fedprune.data imports config

        return PartitionSpec(
            partitioner=self.partitioner, num_partitions=num_partitions, seed=self.seed,
            dirichlet_alpha=self.dirichlet_alpha, classes_per_client=self.classes_per_client,
            shard_size=self.shard_size, shards_per_client=self.shards_per_client,
        )

    def fedmp_arms_tuple(self) -> tuple[float, ...]:
        """``fedmp-arms`` as a tuple of densities."""
        return tuple(float(a) for a in self.fedmp_arms.split(","))

    def resolved_data_dir(self) -> Path:
        """Data directory: run-config ``data-dir``, else $FEDPRUNE_DATA_DIR, else a cache."""
        return resolve_data_dir(self.data_dir)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Run-config value, else ``$FEDPRUNE_DATA_DIR``, else ``~/.cache/fedprune/data``."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "fedprune" / "data"


def _valid_arms(text: str) -> bool:
    try:
        arms = [float(a) for a in text.split(",")]
    except ValueError:
        return False
    return bool(arms) and all(0.0 < a <= 1.0 for a in arms)


def _coerce(key: str, value: Any, want: type) -> Any:
    """Coerce a TOML/YAML scalar to the field's type, or raise ConfigError."""
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif want is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif want is str:
        if isinstance(value, str):
            return value
    raise ConfigError(
        f"run-config {key!r} must be {want.__name__}, got {type(value).__name__} {value!r}"
    )
