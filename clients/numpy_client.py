"""A generic Flower ``NumPyClient`` that runs fedprune's (masked) local SGD loop.

Hand it any ``nn.Module`` and any iterables of ``(x, y)`` batches (a torch
``DataLoader`` works); it trains through :func:`fedprune.training.train`.

Parameters travel as a list of NumPy arrays in ``state_dict()`` order (Flower's
NumPyClient convention). Sparse training is driven by :attr:`masks`
(parameter name -> 0/1 tensor), which the ClientApp sets from the decoded
payload before calling :meth:`fit`; a client with no masks trains densely.
Weights, gradients and momentum outside the masks stay zero. When the round's
config carries ``dst-alpha`` > 0, the client readjusts its masks part-way
through local training (``dst-readjust-at``, a fraction of the local steps):
it drops the smallest-magnitude active weights and regrows as many inactive
ones with the largest gradient (``dst-growth`` = ``gradient``) or at random
(``random``); :attr:`masks` then holds the new masks for the upload.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient
from torch import nn

from fedprune import wire
from fedprune.attacks import UPDATE_ATTACKS, WIRE_ATTACKS, attack_update
from fedprune.dst import ReadjustReport, growth_votes, readjust_hook
from fedprune.flops import forward_order, layer_macs, partial_training_flops, training_flops
from fedprune.partial import on_masks
from fedprune.seeds import derive_seed
from fedprune.training import StepState, TrainConfig, evaluate

from .plans import PLANS, Round, plan_for

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class FedPruneClient(NumPyClient):
    """Masked local SGD behind Flower's NumPyClient interface.

    Parameters
    ----------
    model : the local model (its ``state_dict()`` order is the wire order)
    trainloader, testloader : batches of the client's local train / test data
    train_config : defaults for local training; ``fit``'s config may override
        ``lr``, ``local-epochs`` and ``proximal-mu`` per round
    device : torch device for training and evaluation
    seed : base seed; each round trains with a seed derived from (seed, round)
    metrics : extra scalars reported with every fit (e.g. ``client-id``)
    initial_state : the model's initial weights (LotteryFL rewinds kept weights to them)
    attack : ``none`` (honest), an update attack of :mod:`fedprune.attacks`, or
        ``malformed`` (trains honestly; the ClientApp breaks the reply's wire contract)
        (``sign-flip``, ``scale``, ``noise``) applied to what :meth:`fit` returns;
        ``attack_scale`` is the factor of ``scale``
    input_shape : one example's shape (no batch dimension); when given, every fit
        reports its training FLOPs under the mask (``train-flops``) and dense
        (``dense-flops``), counted by :mod:`fedprune.flops`
    """

    def __init__(
        self,
        model: nn.Module,
        trainloader: Batches,
        testloader: Batches | None = None,
        *,
        train_config: TrainConfig | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        metrics: dict[str, int | float] | None = None,
        initial_state: dict[str, torch.Tensor] | None = None,
        input_shape: tuple[int, ...] | None = None,
        attack: str = "none",
        attack_scale: float = 10.0,
    ) -> None:
        self.model = model
        self.trainloader = trainloader
        self.testloader = testloader
        self.train_config = train_config or TrainConfig()
        self.device = torch.device(device)
        self.seed = seed
        self.metrics = dict(metrics or {})
        self.masks: MutableMapping[str, torch.Tensor] = {}
        self.on_step: Callable[[StepState], None] | None = None
        # PruneFL: squared dense gradients of the masked tensors, summed over the
        # last fit's steps when the server asked for them (``prunefl-sqgrad``)
        self.sq_grads: dict[str, torch.Tensor] = {}
        # server-side readjustment: the dense gradients summed over the last fit's steps,
        # and from them the growth votes it uploads (name -> (votes, values); dst-votes)
        self.grad_sums: dict[str, torch.Tensor] = {}
        self.votes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._keys = list(model.state_dict().keys())
        self.initial_state = initial_state
        if attack not in ("none", *UPDATE_ATTACKS, *WIRE_ATTACKS):
            raise ValueError(f"client attack must be 'none' or one of {UPDATE_ATTACKS + WIRE_ATTACKS}, "
                             f"got {attack!r}")
        self.attack, self.attack_scale = attack, attack_scale
        self.macs = layer_macs(model, tuple(input_shape)) if input_shape is not None else None
        self._input_shape = tuple(input_shape) if input_shape is not None else None
        # partial training (FedBT): the tensors the last fit trained and uploads; None = all
        self.trainable: list[str] | None = None

    # -- parameters ----------------------------------------------------------
    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        """The model's state in ``state_dict()`` order."""
        return list(wire.state_to_numpy(self.model.state_dict()).values())

    def set_parameters(self, parameters: list[np.ndarray]) -> None:
        """Load a list of arrays in ``state_dict()`` order (shapes are checked)."""
        if len(parameters) != len(self._keys):
            raise ValueError(f"got {len(parameters)} arrays, the model has {len(self._keys)}")
        state = wire.numpy_to_state(
            dict(zip(self._keys, parameters, strict=True)), self.model.state_dict()
        )
        self.model.load_state_dict(state)

    # -- NumPyClient API -----------------------------------------------------
    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Train locally from ``parameters`` by the plan the config names
        (:mod:`clients.plans`); return (parameters, n, metrics)."""
        self.set_parameters(parameters)
        names = config.get(wire.FEDBT_TRAIN)
        self.trainable = None if names is None else [str(n) for n in names]
        plan = plan_for(config)
        if self.trainable is not None and plan != "partial":
            raise ValueError(f"partial training ({wire.FEDBT_TRAIN}) does not combine with "
                             f"{wire.PERSONAL_PRUNE} {plan!r}")
        received = ({k: np.array(p, copy=True) for k, p in zip(self._keys, parameters, strict=True)}
                    if self.attack in UPDATE_ATTACKS else None)
        cfg = self.train_config
        cfg = dataclasses.replace(
            cfg,
            epochs=int(config.get(wire.LOCAL_EPOCHS, cfg.epochs)),
            lr=float(config.get(wire.LR, cfg.lr)),
            proximal_mu=float(config.get(wire.PROXIMAL_MU, cfg.proximal_mu)),
        )
        rnd = int(config.get(wire.SERVER_ROUND, 0))
        hook = self.on_step
        alpha = float(config.get(wire.DST_ALPHA, 0.0))
        reports: list[ReadjustReport] = []
        if alpha > 0 and self.masks:
            readjust = readjust_hook(
                alpha, float(config.get(wire.DST_AT, 0.5)),
                str(config.get(wire.DST_GROWTH, "gradient")),
                seed=derive_seed(self.seed, rnd, 7), report=reports,
            )
            if self.trainable is not None:  # partial training: only the trained masks move
                readjust = on_masks(readjust, self.trainable)
            hook = _chain(hook, readjust)
        self.sq_grads, self.grad_sums, self.votes = {}, {}, {}
        out = PLANS[plan](self, Round(cfg, config, hook, rnd))
        vote = float(config.get(wire.DST_VOTES, 0.0))
        if vote > 0 and self.masks and self.grad_sums:
            self.votes = growth_votes(self.grad_sums, self.masks, vote)
        result = out.result
        metrics = {**self.metrics, wire.TRAIN_LOSS: result.loss, wire.LOSS_FIRST: result.first_loss,
                   wire.LOSS_LAST: result.last_loss}
        if out.pruned is not None:
            metrics[wire.PRUNED] = out.pruned
        if reports:
            metrics[wire.DST_MOVED] = sum(sum(r.moved.values()) for r in reports)
        if self.macs is not None:
            seen = result.num_examples * cfg.epochs
            if out.flops is not None:
                metrics[wire.TRAIN_FLOPS] = out.flops
            elif self.trainable is None:
                metrics[wire.TRAIN_FLOPS] = float(training_flops(self.macs, seen, self.masks))
            else:  # backward only down to the lowest trained layer, weight gradients of trained ones
                order = forward_order(self.model, self._input_shape)  # type: ignore[arg-type]
                metrics[wire.TRAIN_FLOPS] = float(partial_training_flops(
                    self.macs, seen, order, self.trainable, self.masks))
            metrics[wire.DENSE_FLOPS] = float(training_flops(self.macs, seen))
        self.model.to("cpu")
        params = self.get_parameters({})
        if received is not None:  # an update attack wraps whatever the plan returned
            masks = {k: m.detach().cpu().bool().numpy() for k, m in self.masks.items()}
            attacked = attack_update(received, dict(zip(self._keys, params, strict=True)), self.attack,
                                     scale=self.attack_scale, masks=masks,
                                     seed=derive_seed(self.seed, rnd, 11))
            params = [attacked[k] for k in self._keys]
        return params, result.num_examples, metrics

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        """Evaluate ``parameters`` on the local test data: (loss, n, {"accuracy"})."""
        if self.testloader is None:
            raise ValueError("this client has no test data")
        self.set_parameters(parameters)
        loss, acc, n = evaluate(self.model, self.testloader, device=self.device)
        return loss, n, {**self.metrics, "accuracy": acc}


def _chain(
    a: Callable[[StepState], None] | None, b: Callable[[StepState], None]
) -> Callable[[StepState], None]:
    """Call hook ``a`` (if any), then ``b``."""
    if a is None:
        return b

    def both(s: StepState) -> None:
        a(s)
        b(s)

    return both
