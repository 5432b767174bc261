"""One training plan per method: what a client does with a ``train`` message.

:meth:`FedPruneClient.fit <clients.numpy_client.FedPruneClient.fit>` loads the
received model, prepares the round (training settings, the readjustment hook), runs
the plan the message names, and reports. A plan is chosen by fields of the train
message's config (:func:`plan_for`):

* ``masked`` (every method's default): masked local SGD on the received masks,
  readjusting them part-way through when ``dst-alpha`` > 0 (FedDST, the static
  masks, FedMP), summing the dense gradients for growth votes when ``dst-votes`` > 0
  (FedPrune's server-side readjustment), summing squared gradients when PruneFL asks
  for them;
* ``partial`` (``fedbt-train`` names tensors): the same, with every other tensor
  frozen and only the named tensors' masks readjusted (FedBT, FedBT-prune);
* ``lotteryfl`` (``personal-prune``): prune and rewind to the initial weights when
  the received model is good enough on the local validation data, then train;
* ``subfedavg``: train, then prune the kept weights by magnitude;
* ``prunefl-initial``: PruneFL's initial pruning, training and pruning epoch by epoch.

Update attacks (:mod:`fedprune.attacks`) are not a plan: they wrap whatever a plan
returned (:meth:`FedPruneClient.fit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from fedprune import wire
from fedprune.flops import training_flops
from fedprune.masks import layer_budgets, prune_by_magnitude
from fedprune.partial import frozen_except
from fedprune.seeds import derive_seed
from fedprune.training import StepState, TrainConfig, TrainResult, evaluate, train


class FedPruneClient(Protocol):
    """What a plan uses of the client (:class:`clients.numpy_client.FedPruneClient`)."""

    model: nn.Module
    trainloader: Iterable[tuple[torch.Tensor, torch.Tensor]]
    testloader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None
    device: torch.device
    seed: int
    masks: MutableMapping[str, torch.Tensor]
    macs: Any  # per-layer MACs (fedprune.flops.layer_macs), None when not counted
    trainable: list[str] | None
    sq_grads: dict[str, torch.Tensor]
    grad_sums: dict[str, torch.Tensor]
    initial_state: dict[str, torch.Tensor] | None


@dataclass
class Round:
    """What one ``fit`` hands its plan."""

    cfg: TrainConfig  # this round's local training settings
    config: dict[str, Any]  # the train message's config
    hook: Callable[[StepState], None] | None  # per-step hook (readjustment), if any
    rnd: int  # the server round


@dataclass
class Outcome:
    """What a plan did: the training result, how many pruning steps it took (None
    for plans that do not prune) and its training FLOPs when it counted them itself."""

    result: TrainResult
    pruned: int | None = None
    flops: float | None = None


Plan = Callable[[FedPruneClient, Round], Outcome]


def masked(client: FedPruneClient, r: Round) -> Outcome:
    """Masked local SGD on the received masks (all tensors trained)."""
    return Outcome(_train(client, r))


def partial(client: FedPruneClient, r: Round) -> Outcome:
    """Masked local SGD on the tensors the message names (``client.trainable``); every
    other one frozen (no weight gradients, no backward below the lowest trained one)."""
    with frozen_except(client.model, client.trainable):
        return Outcome(_train(client, r))


def lotteryfl(client: FedPruneClient, r: Round) -> Outcome:
    """LotteryFL: prune and rewind first (when the received model is good enough
    locally), then train."""
    pruned = lottery_prune(client, r.config) if client.masks else 0
    return Outcome(_train(client, r), pruned)


def subfedavg(client: FedPruneClient, r: Round) -> Outcome:
    """Sub-FedAvg: train, then prune by magnitude."""
    result = _train(client, r)
    return Outcome(result, prune(client, r.config) if client.masks else 0)


def prunefl_initial(client: FedPruneClient, r: Round) -> Outcome:
    """PruneFL's initial pruning on one client: ``cfg.epochs`` epochs of training;
    after each but the last, ``prune-rate`` of each layer's kept weights go by
    magnitude, never below the ``target-density`` budgets, so the model is fine-tuned
    between pruning steps and returned at (or on its way to) the target density with
    the pruned weights at zero. FLOPs are counted epoch by epoch, as the masks shrink."""
    if not client.masks:
        return Outcome(_train(client, r), 0)
    one = dataclasses.replace(r.cfg, epochs=1)
    results, pruned, flops = [], 0, 0.0
    for e in range(r.cfg.epochs):
        res = train(client.model, client.trainloader, one, device=client.device,
                    masks=client.masks, on_step=r.hook, seed=derive_seed(client.seed, r.rnd, 13, e))
        if client.macs is not None:
            flops += float(training_flops(client.macs, res.num_examples, client.masks))
        results.append(res)
        if e < r.cfg.epochs - 1:
            pruned += prune(client, r.config)
    result = dataclasses.replace(results[-1], loss=float(np.mean([x.loss for x in results])),
                                 steps=sum(x.steps for x in results),
                                 first_loss=results[0].first_loss)
    return Outcome(result, pruned, flops)


PLANS: dict[str, Plan] = {"masked": masked, "partial": partial, "lotteryfl": lotteryfl,
                          "subfedavg": subfedavg, "prunefl-initial": prunefl_initial}


def plan_for(config: dict[str, Any]) -> str:
    """The plan a train message's config names: ``personal-prune`` if set, else
    ``partial`` when it names the tensors to train (``fedbt-train``), else ``masked``."""
    mode = config.get(wire.PERSONAL_PRUNE)
    if mode:
        if str(mode) not in PLANS:
            raise ValueError(f"unknown {wire.PERSONAL_PRUNE} {mode!r}; valid: "
                             "lotteryfl, subfedavg, prunefl-initial")
        return str(mode)
    return "partial" if config.get(wire.FEDBT_TRAIN) is not None else "masked"


def _train(client: FedPruneClient, r: Round) -> TrainResult:
    return train(client.model, client.trainloader, r.cfg, device=client.device,
                 masks=client.masks, on_step=r.hook, seed=derive_seed(client.seed, r.rnd),
                 sq_grads=client.sq_grads if r.config.get(wire.PRUNEFL_SQGRAD) else None,
                 grad_sums=client.grad_sums if float(r.config.get(wire.DST_VOTES, 0)) > 0 else None)


# -- personalised progressive pruning (LotteryFL, Sub-FedAvg, PruneFL's initial pruning)
def prune(client: FedPruneClient, config: dict[str, Any]) -> int:
    """Remove ``prune-rate`` of the kept weights per layer by magnitude, not below the
    ``target-density`` budgets; zero what was removed. Returns 1 if it pruned."""
    params = dict(client.model.named_parameters())
    shapes = {k: tuple(params[k].shape) for k in client.masks}
    floor = layer_budgets(shapes, float(config[wire.TARGET_DENSITY]),
                          str(config.get(wire.DENSITY_DISTRIBUTION, "erk")))
    if all(int(m.sum()) <= floor[k] for k, m in client.masks.items()):
        return 0
    new = prune_by_magnitude(params, client.masks, float(config[wire.PRUNE_RATE]), floor)
    with torch.no_grad():
        for k, m in new.items():
            params[k].mul_(m.to(params[k].device, params[k].dtype))
            client.masks[k] = m.float()
    return 1


def lottery_prune(client: FedPruneClient, config: dict[str, Any]) -> int:
    """LotteryFL: if the received model (on this client's mask) reaches
    ``lottery-threshold`` accuracy on the local validation data, prune and rewind the
    kept weights to the initial model."""
    if client.testloader is None:
        raise ValueError("LotteryFL needs local validation data (testloader)")
    if client.initial_state is None:
        raise ValueError("LotteryFL rewinds to the initial weights: pass initial_state")
    _, acc, _ = evaluate(client.model, client.testloader, device=client.device)
    if acc < float(config[wire.LOTTERY_THRESHOLD]) or not prune(client, config):
        return 0
    params = dict(client.model.named_parameters())
    with torch.no_grad():
        for k, m in client.masks.items():
            p = params[k]
            p.copy_(client.initial_state[k].to(p.device, p.dtype) * m.to(p.device, p.dtype))
    return 1
