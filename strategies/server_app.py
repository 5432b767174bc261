"""The fedprune ServerApp: run-config -> strategy -> rounds -> results.json.

``flwr run .`` calls :func:`main`; tests and other apps can call :func:`run`
with their own Grid and :class:`~fedprune.config.RunConfig`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy
from torch import nn

from fedprune import wire
from fedprune.config import ConfigError, RunConfig
from fedprune.data import load_dataset
from fedprune.data.datasets import ImageData
from fedprune.data.loader import TensorLoader, largest_train_size, seeded_subset, test_loader
from fedprune.data.partition import cached_partition_indices
from fedprune.masks import prunable_names
from fedprune.models import model_from_config
from fedprune.partial import PartialSchedule, layer_groups
from fedprune.seeds import derive_seed
from fedprune.training import evaluate, resolve_device, train, train_config_of

from .checkpoints import setup_checkpoints
from .fedavg import FedAvg, ValidatingStrategy
from .fedbt import FedBT, FedBTPrune
from .feddst import FedDST, StaticSparse
from .fedprune import FedPrune, ServerUpdateFn
from .flower_baselines import (
    FlowerFedAvg,
    FlowerFedAvgM,
    FlowerFedMedian,
    FlowerFedProx,
    FlowerKrum,
)
from .personalized import FedMP, LotteryFL, SubFedAvg
from .prunefl import PruneFL
from .results import RoundRecorder
from .sparse import SparseServer

StrategyFactory = Callable[[RunConfig, RoundRecorder, nn.Module], Strategy]


def _fedavg(cfg: RunConfig, recorder: RoundRecorder, model: nn.Module) -> Strategy:
    return FedAvg(recorder=recorder, **_sampling(cfg))


def _sampling(cfg: RunConfig) -> dict[str, Any]:
    return {"fraction_train": cfg.fraction_train, "min_train_clients": cfg.min_train_clients,
            "fraction_evaluate": cfg.fraction_evaluate, "seed": cfg.seed,
            "min_replies": cfg.min_replies}


def _flower_sampling(cfg: RunConfig) -> dict[str, Any]:
    n = cfg.min_train_clients
    return {"fraction_train": cfg.fraction_train, "fraction_evaluate": cfg.fraction_evaluate,
            "min_train_nodes": n, "min_evaluate_nodes": 1 if cfg.fraction_evaluate > 0 else 0,
            "min_available_nodes": n, "seed": cfg.seed}


def _fedprune(cfg: RunConfig, recorder: RoundRecorder, model: nn.Module,
              strategy_cls: type = FedPrune, **fixed: Any) -> Strategy:
    """FedPrune from the run-config (``strategy_cls``: FedPrune, or FedBTPrune, which takes
    the same arguments and ``fixed`` ones of its own)."""
    args: dict[str, Any] = dict(
        sparsity=cfg.sparsity, density_distribution=cfg.density_distribution, alpha0=cfg.alpha0,
        readjust_interval=cfg.readjust_interval, readjust_end=cfg.readjust_end,
        readjust_at=cfg.readjust_at, growth=cfg.growth, readjustment=cfg.readjustment,
        lambda0=cfg.lambda0,
        lambda_schedule=cfg.lambda_schedule, lambda_min=cfg.lambda_min, cgsv_beta=cfg.cgsv_beta,
        cgsv_floor=cfg.cgsv_floor,
        dynamic_topology=cfg.dynamic_topology, contribution_weighting=cfg.contribution_weighting,
        residual_restoration=cfg.residual_restoration,
        adaptive_density=cfg.adaptive_density, adaptive_min=cfg.adaptive_min,
        cgsv_leave_one_out=cfg.cgsv_leave_one_out, clip_updates=cfg.clip_updates,
        clip_window=cfg.clip_window,
        grown_average=cfg.grown_average, grown_start=cfg.grown_start,
        cgsv_reference=cfg.cgsv_reference,
        cgsv_history_beta=cfg.cgsv_history_beta, cgsv_scope=cfg.cgsv_scope,
        cgsv_rule=cfg.cgsv_rule,
        round_average=cfg.round_average,
    )
    args.update(fixed)
    if args["contribution_weighting"] and args["cgsv_reference"] == "server":
        args["server_update_fn"] = root_update_fn(cfg, model)
    return strategy_cls(
        recorder=recorder, initial_state=wire.state_to_numpy(model.state_dict()),
        prunable=prunable_names(model), num_rounds=cfg.num_server_rounds, **args,
        **_sampling(cfg),
    )


_ROOT_SEED = 0x5007  # derive_seed(seed, _ROOT_SEED, ...): the root set and its batch order


def root_update_fn(cfg: RunConfig, model: nn.Module) -> ServerUpdateFn:
    """``cgsv-reference = server``: the model sent in a round after the clients' local
    training (same epochs, lr, momentum, batch size, masks) on the server's root data,
    ``cgsv-root-samples`` examples of the training split drawn once by seed (loaded at
    the first call). Batch order and dropout are seeded by round, so a resumed run
    computes the same references."""
    net = copy.deepcopy(model)
    device = resolve_device(cfg.device)
    tc = train_config_of(cfg)

    @functools.cache
    def root() -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...], tuple[float, ...]]:
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        keep = seeded_subset(len(data.y_train), cfg.cgsv_root_samples,
                             derive_seed(cfg.seed, _ROOT_SEED))
        return data.x_train[keep], data.y_train[keep], data.mean, data.std

    def fn(server_round: int, state: Mapping[str, np.ndarray],
           masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, y, mean, std = root()
        loader = TensorLoader(x, y, mean, std, cfg.batch_size, shuffle=True,
                              seed=derive_seed(cfg.seed, _ROOT_SEED, server_round))
        net.load_state_dict(wire.numpy_to_state(state, net.state_dict()))
        train(net, loader, tc, device=device, seed=derive_seed(cfg.seed, _ROOT_SEED + 1, server_round),
              masks={k: torch.as_tensor(m) for k, m in masks.items()})
        # copies: state_to_numpy's arrays share memory with the net, trained again next round
        return {k: v.copy() for k, v in wire.state_to_numpy(net.state_dict()).items()}

    return fn


def _fedbt_schedule(cfg: RunConfig, model: nn.Module) -> PartialSchedule:
    """FedBT's layer schedule for ``model`` from run-config ``fedbt-*``."""
    try:
        return PartialSchedule(layer_groups(model), cfg.fedbt_mode, cfg.num_server_rounds,
                               cfg.fedbt_layers, cfg.fedbt_top)
    except ValueError as exc:
        raise ConfigError(f"run-config fedbt-layers={cfg.fedbt_layers} / fedbt-top={cfg.fedbt_top} "
                          f"do not fit model {cfg.model!r}: {exc}") from exc


def _personal(cls: type, cfg: RunConfig, rec: RoundRecorder, model: nn.Module) -> Strategy:
    extra: dict[str, Any]
    if cls is FedMP:
        extra = {"arms": cfg.fedmp_arms_tuple()}
    else:
        extra = {"prune_rate": cfg.prune_rate, "lottery_threshold": cfg.lottery_threshold}
    return _sparse(cls, cfg, rec, model, **extra)


def _sparse(cls: type, cfg: RunConfig, rec: RoundRecorder, model: nn.Module,
            **args: Any) -> Strategy:
    """A sparse baseline of the server core at the run's sparsity and sampling."""
    return cls(recorder=rec, initial_state=wire.state_to_numpy(model.state_dict()),
               prunable=prunable_names(model), num_rounds=cfg.num_server_rounds,
               sparsity=cfg.sparsity, density_distribution=cfg.density_distribution,
               **args, **_sampling(cfg))


def _feddst(cfg: RunConfig, rec: RoundRecorder, model: nn.Module) -> Strategy:
    return _sparse(FedDST, cfg, rec, model, alpha0=cfg.alpha0,
                   readjust_interval=cfg.readjust_interval, readjust_end=cfg.readjust_end,
                   readjust_at=cfg.readjust_at, growth=cfg.growth)


STRATEGIES: dict[str, StrategyFactory] = {
    "fedavg": _fedavg,
    "fedprune": _fedprune,
    "flower-fedavg": lambda cfg, rec, model: FlowerFedAvg(recorder=rec, **_flower_sampling(cfg)),
    "fedavgm": lambda cfg, rec, model: FlowerFedAvgM(
        recorder=rec, server_learning_rate=cfg.server_lr, server_momentum=cfg.server_momentum,
        **_flower_sampling(cfg)),
    "fedprox": lambda cfg, rec, model: FlowerFedProx(
        recorder=rec, proximal_mu=cfg.proximal_mu, **_flower_sampling(cfg)),
    "fedmedian": lambda cfg, rec, model: FlowerFedMedian(recorder=rec, **_flower_sampling(cfg)),
    "krum": lambda cfg, rec, model: FlowerKrum(
        recorder=rec, num_malicious_nodes=cfg.krum_malicious, **_flower_sampling(cfg)),
    "feddst": _feddst,
    "static-magnitude": lambda cfg, rec, model: _sparse(
        StaticSparse, cfg, rec, model, initial_mask="magnitude"),
    "static-random": lambda cfg, rec, model: _sparse(
        StaticSparse, cfg, rec, model, initial_mask="random"),
    # FedBT partial training (strategies/fedbt.py): dense, and with FedPrune's sparsity
    "fedbt": lambda cfg, rec, model: FedBT(
        recorder=rec, schedule=_fedbt_schedule(cfg, model), **_sampling(cfg)),
    "fedbt-prune": lambda cfg, rec, model: _fedprune(
        cfg, rec, model, FedBTPrune, schedule=_fedbt_schedule(cfg, model)),
    # a dense model as small as FedPrune's kept weights (see fedprune.models.model_from_config)
    "small-dense": _fedavg,
    "lotteryfl": lambda cfg, rec, model: _personal(LotteryFL, cfg, rec, model),
    "subfedavg": lambda cfg, rec, model: _personal(SubFedAvg, cfg, rec, model),
    "fedmp": lambda cfg, rec, model: _personal(FedMP, cfg, rec, model),
    "prunefl": lambda cfg, rec, model: _sparse(
        PruneFL, cfg, rec, model, reconfig_interval=cfg.reconfig_interval,
        initial_epochs=cfg.prunefl_initial_epochs),
}


def build_strategy(cfg: RunConfig, recorder: RoundRecorder, model: nn.Module) -> Strategy:
    """The strategy named by run-config ``strategy``."""
    if cfg.strategy not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {cfg.strategy!r}; valid names: {', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[cfg.strategy](cfg, recorder, model)


def centralized_evaluate(
    model: nn.Module, loader: TensorLoader, device: torch.device
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """``evaluate_fn`` for Strategy.start: test accuracy and loss of the arrays received."""

    def fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc, _ = evaluate(model, loader, device=device)
        return MetricRecord({"accuracy": acc, "loss": loss})

    return fn


def check_partition(cfg: RunConfig, data: ImageData, nodes: int) -> None:
    """Fail before any client starts when the run-config's partitioner cannot split the
    training set over the ``nodes`` connected so far (a split that fails for them fails
    for more clients too; 0 nodes: nothing to check yet)."""
    if nodes <= 0:
        return
    try:
        cached_partition_indices(data.y_train.numpy(), cfg.partition_spec(nodes),
                                 data.writers_train)
    except ValueError as exc:
        raise ConfigError(f"run-config partitioner {cfg.partitioner!r} cannot split "
                          f"{cfg.dataset!r} over {nodes} clients: {exc}") from exc


def partition_cap(cfg: RunConfig, data: ImageData) -> Callable[[int], int]:
    """``num_partitions -> `` the largest training-set size a client of this run has
    (what an honest client reports as ``num-examples``), computed once per count."""

    @functools.cache
    def cap(num_partitions: int) -> int:
        size = largest_train_size(
            data, cfg.partition_spec(num_partitions), test_fraction=cfg.test_fraction,
            local_test=cfg.local_test, seed=cfg.seed, max_train=cfg.max_client_samples)
        log(INFO, "[fedprune] num-examples cap: %d (the largest of %d training partitions)",
            size, num_partitions)
        return size

    return cap


FINAL_MODEL = "final_model.pt"  # the last global model (what clients receive)
FINAL_DENSE_MODEL = "final_dense_model.pt"  # FedPrune family: the restored dense model W


def save_final_models(
    out: Path, arrays: ArrayRecord, dense: Mapping[str, np.ndarray] | None = None
) -> None:
    """Write the final model as a ``state_dict`` (``torch.load`` + ``load_state_dict``),
    and the restored dense model when the strategy keeps one; atomically."""
    out.mkdir(parents=True, exist_ok=True)
    states = {FINAL_MODEL: arrays.to_torch_state_dict()}
    if dense is not None:
        states[FINAL_DENSE_MODEL] = {k: torch.from_numpy(np.array(v)) for k, v in dense.items()}
    for name, state in states.items():
        tmp = out / f".{name}.tmp"
        torch.save(state, tmp)
        tmp.replace(out / name)
    log(INFO, "[fedprune] final model: %s", ", ".join(str(out / n) for n in states))


RESULTS_FILE = "results.json"


def run(grid: Grid, cfg: RunConfig) -> RoundRecorder:
    """Run the whole federated job described by ``cfg`` on ``grid``."""
    existing = Path(cfg.results_dir) / RESULTS_FILE if cfg.results_dir else None
    if existing is not None and existing.exists() and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"results-dir {cfg.results_dir} already holds the results.json of "
                          "another run: choose another results-dir, set resume=true to continue "
                          "that run from its checkpoint, or overwrite=true to replace it")
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    device = resolve_device(cfg.device)
    model = model_from_config(cfg, data.input_shape, data.num_classes)
    recorder = RoundRecorder(cfg.results_dir, cfg.to_dict(), cfg.num_server_rounds)
    strategy = build_strategy(cfg, recorder, model)
    evaluate_fn = centralized_evaluate(
        model, test_loader(data, cfg.eval_batch_size, cfg.eval_samples, cfg.seed), device)
    if isinstance(strategy, (FedPrune, FedBTPrune, FedDST, StaticSparse)):  # their W, evaluated too
        strategy.dense_evaluate = lambda state: evaluate_fn(
            0, ArrayRecord({k: Array(v) for k, v in state.items()})
        )
    # no reply may claim more examples than the largest real client (data-size weights)
    strategy.max_num_examples = cfg.max_num_examples  # type: ignore[attr-defined]
    strategy.partition_cap = partition_cap(cfg, data)  # type: ignore[attr-defined]
    initial = getattr(strategy, "initial_arrays", None) or ArrayRecord(model.state_dict())
    recorder.model_bytes = wire.nbytes(wire.state_to_numpy(model.state_dict()))
    initial = setup_checkpoints(cfg, strategy, initial)
    remaining = cfg.num_server_rounds - getattr(strategy, "round_offset", 0)
    log(INFO, "[fedprune] strategy %s, model %s (%d parameters), dataset %s, partitioner %s",
        cfg.strategy, cfg.model, sum(p.numel() for p in model.parameters()), cfg.dataset,
        cfg.partitioner)
    if remaining <= 0:
        log(INFO, "[fedprune] the checkpoint already holds all %d rounds", cfg.num_server_rounds)
        return recorder
    train_config = ConfigRecord({wire.LR: cfg.lr, wire.LOCAL_EPOCHS: cfg.local_epochs})
    if cfg.adaptive_density != "none" and not isinstance(strategy, FedPrune):
        raise ConfigError(f"adaptive-density {cfg.adaptive_density!r} needs a FedPrune-based "
                          f"strategy (fedprune, feddst, static-*), not {cfg.strategy!r}")
    if cfg.codec_dtype != "float32":
        if not isinstance(strategy, ValidatingStrategy):
            raise ConfigError(f"codec-dtype {cfg.codec_dtype!r} needs one of fedprune's own "
                              f"strategies; {cfg.strategy!r} is Flower's and sends float32")
        strategy.value_dtype = cfg.codec_dtype
    if cfg.round_retries > 0 and hasattr(strategy, "retry_policy"):
        strategy.retry_policy = (cfg.min_replies, cfg.round_retries, cfg.seed)
    check_partition(cfg, data, len(list(grid.get_node_ids())))
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=remaining,
        timeout=cfg.round_timeout,
        train_config=train_config,
        evaluate_fn=evaluate_fn,
    )
    if cfg.results_dir:
        save_final_models(Path(cfg.results_dir), result.arrays,
                          strategy.dense_state() if isinstance(strategy, SparseServer) else None)
    s = recorder.to_dict()["summary"]
    ratio = s.get("upload_vs_dense")
    log(INFO, "[fedprune] done: final accuracy %.4f, best %.4f, upload %.2f MB (%s), "
        "download %.2f MB, %.1f s%s", s["final_accuracy"] or float("nan"),
        s["best_accuracy"] or float("nan"), s["total_bytes_up"] / 1e6,
        f"{ratio:.2f}x dense" if ratio is not None else "no dense reference",
        s["total_bytes_down"] / 1e6, s["wall_s"],
        f"; results in {recorder.path}" if recorder.path else "")
    return recorder


def make_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp running :func:`run`; ``overrides`` sit on top of the run-config.

    In-process simulations (``flwr.simulation.run_simulation``) pass an empty
    run-config, so tests and benchmarks hand their settings in ``overrides``.
    """
    sapp = ServerApp()

    @sapp.main()
    def _main(grid: Grid, context: Context) -> None:
        run(grid, RunConfig.from_mapping({**context.run_config, **(overrides or {})}))

    return sapp


app = make_server_app()
