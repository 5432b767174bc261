"""The one local training loop (masked SGD) and evaluation.

Every method of the project trains through :func:`train`. A dense run passes
no mask (equivalent to an all-ones mask). With a mask, for every masked
parameter ``p`` with mask ``m`` (same shape, 0/1):

* before training ``p <- p * m``;
* after every backward ``grad <- grad * m``, so SGD's momentum buffer, AdamW's
  two moments and the weight-decay term (``wd * p`` with ``p = 0``) stay zero
  outside the mask (readjustment zeroes the state of moved positions:
  :func:`fedprune.dst.apply_readjustment`);
* after every optimizer step ``p <- p * m`` (keeps the invariant exact).

Small hooks extend the loop without copying it: ``proximal_mu`` adds FedProx's
``mu/2 * ||w - w_start||^2`` to the loss, and ``on_step`` is called after each
optimizer step (dynamic sparse training uses it to readjust the mask
part-way through local training).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from fedprune.config import RunConfig


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters."""

    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    # mixed precision: autocast to float16 on CUDA (with loss scaling) or bfloat16 on
    # CPU; parameters, optimizer state and the masks stay float32
    amp: bool = False
    # ``sgd`` (with ``momentum``) or ``adamw`` (betas 0.9 / 0.999, decoupled weight decay)
    optimizer: str = "sgd"
    # fraction of the local steps over which the lr rises linearly to ``lr`` (each round
    # starts a fresh optimizer, so its first Adam steps are the large ones)
    warmup: float = 0.0


OPTIMIZERS = ("sgd", "adamw")
ADAMW_WARMUP = 0.1  # the warm-up that goes with adamw (optimizer_settings)


def optimizer_settings(name: str) -> dict[str, object]:
    """The :class:`TrainConfig` fields of optimizer ``name``: ``adamw`` comes with a
    warm-up over the first :data:`ADAMW_WARMUP` of the local steps, ``sgd`` with none."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    return {"optimizer": name, "warmup": ADAMW_WARMUP if name == "adamw" else 0.0}


def train_config_of(cfg: RunConfig) -> TrainConfig:
    """The local training of a run: its epochs, lr, momentum, weight decay, precision and
    optimizer (``auto`` resolved for its model: :func:`fedprune.config.resolved_optimizer`)."""
    from fedprune.config import resolved_optimizer

    return TrainConfig(epochs=cfg.local_epochs, lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay, amp=cfg.amp,
                       **optimizer_settings(resolved_optimizer(cfg.optimizer, cfg.model)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg``'s optimizer over ``model``'s parameters."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


@dataclass(frozen=True)
class TrainResult:
    """What local training reports."""

    loss: float  # mean training loss over all steps (proximal term excluded)
    num_examples: int  # examples seen in one epoch
    steps: int
    first_loss: float = float("nan")  # loss of the first step (the received model)
    last_loss: float = float("nan")  # mean loss of the last epoch


@dataclass
class StepState:
    """Passed to ``on_step`` hooks after each optimizer step."""

    step: int  # 1-based count of optimizer steps so far
    total_steps: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    masks: MutableMapping[str, torch.Tensor]
    batch: tuple[torch.Tensor, torch.Tensor]


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss of one batch: the model's own ``training_loss(x, y)`` when it
    has one (:class:`fedprune.models.CausalLM` scores every position of a sequence),
    else the cross-entropy of ``model(x)`` against ``y``."""
    own = getattr(model, "training_loss", None)
    if own is not None:
        return own(x, y)
    return nn.functional.cross_entropy(model(x).float(), y)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (error if unavailable) or ``auto`` (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every masked parameter outside its mask, in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():
            params[name].mul_(m.to(params[name].device, params[name].dtype))


def train(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    masks: MutableMapping[str, torch.Tensor] | None = None,
    on_step: Callable[[StepState], None] | None = None,
    seed: int | None = None,
    sq_grads: MutableMapping[str, torch.Tensor] | None = None,
    grad_sums: MutableMapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place with masked SGD or AdamW for ``cfg.epochs`` epochs.

    Parameters
    ----------
    model : the module; its parameters named in ``masks`` are trained sparsely
    loader : iterable of ``(x, y)`` batches (a DataLoader or a TensorLoader)
    cfg : hyper-parameters
    masks : parameter name -> 0/1 tensor of the parameter's shape, or None
        (dense). ``on_step`` hooks may change the masks in place.
    on_step : called after every optimizer step with a :class:`StepState`
    seed : seeds torch's global RNG for the duration (dropout, etc.)
    sq_grads : if given, the squared *dense* gradients (before masking) of every
        masked parameter are summed into it over all steps (PruneFL's importance)
    grad_sums : if given, the dense gradients themselves (before masking) of every
        masked parameter are summed into it over all steps (growth votes, fedprune.dst)
    """
    device = torch.device(device)
    model.to(device).train()
    masks = {} if masks is None else masks
    for name in list(masks):
        masks[name] = masks[name].to(device=device, dtype=torch.float32)
    apply_masks(model, masks)
    params = dict(model.named_parameters())
    unknown = set(masks) - set(params)
    if unknown:
        raise KeyError(f"masks name parameters the model lacks: {sorted(unknown)}")
    opt = make_optimizer(model, cfg)
    start = (
        {n: p.detach().clone() for n, p in params.items()} if cfg.proximal_mu > 0 else None
    )
    try:
        n_batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n_batches = 0
    total_steps = n_batches * cfg.epochs
    warm = math.ceil(cfg.warmup * total_steps) if cfg.warmup > 0 else 0
    autocast, scaler = _mixed_precision(cfg.amp, device)
    loss_sum, steps, seen = 0.0, 0, 0
    first_loss, last_sum, last_steps = float("nan"), 0.0, 0
    rng_ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng_ctx:
        if seed is not None:
            torch.manual_seed(seed)
        for epoch in range(cfg.epochs):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                if steps < warm:
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr * (steps + 1) / warm
                elif steps == warm and warm:
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr
                opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = loss_of(model, x, y)
                total = loss
                if start is not None:
                    prox = sum(((p - start[n]) ** 2).sum() for n, p in params.items())
                    total = loss + 0.5 * cfg.proximal_mu * prox
                if scaler is not None:
                    scaler.scale(total).backward()
                    scaler.unscale_(opt)  # true gradients for the masks and sq_grads
                else:
                    total.backward()
                for name, m in masks.items():
                    g = params[name].grad
                    if g is not None:
                        if sq_grads is not None:
                            sq = g.detach() ** 2
                            sq_grads[name] = sq_grads[name] + sq if name in sq_grads else sq
                        if grad_sums is not None:
                            d = g.detach()
                            grad_sums[name] = grad_sums[name] + d if name in grad_sums else d.clone()
                        g.mul_(m)
                if scaler is not None:
                    scaler.step(opt)  # skipped when the gradients overflowed
                    scaler.update()
                else:
                    opt.step()
                with torch.no_grad():
                    for name, m in masks.items():
                        params[name].mul_(m)
                steps += 1
                if epoch == 0:
                    seen += len(y)
                value = float(loss.detach())
                loss_sum += value
                if steps == 1:
                    first_loss = value
                if epoch == cfg.epochs - 1:
                    last_sum, last_steps = last_sum + value, last_steps + 1
                if on_step is not None:
                    on_step(StepState(steps, total_steps, model, opt, masks, (x, y)))
    mean_loss = loss_sum / max(steps, 1)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training diverged: mean loss {mean_loss}")
    return TrainResult(loss=mean_loss, num_examples=seen, steps=steps, first_loss=first_loss,
                       last_loss=last_sum / max(last_steps, 1))


def _mixed_precision(
    amp: bool, device: torch.device
) -> tuple[Callable[[], contextlib.AbstractContextManager[object]], torch.amp.GradScaler | None]:
    """(autocast context factory, gradient scaler or None) for ``amp`` on ``device``."""
    if not amp:
        return contextlib.nullcontext, None
    if device.type == "cuda":
        return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")
    if device.type == "cpu":  # bfloat16 has float32's range: no loss scaling needed
        return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), None
    raise ValueError(f"mixed precision is supported on cpu and cuda, not {device.type}")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | str = "cpu",
) -> tuple[float, float, int]:
    """Return (mean cross-entropy loss, accuracy, number of examples)."""
    device = torch.device(device)
    model.to(device).eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    if n == 0:
        return float("nan"), float("nan"), 0
    return loss_sum / n, correct / n, n
