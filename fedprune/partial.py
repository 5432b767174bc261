"""Partial training (FedBT): a model's layers, which of them a round trains, and freezing.

FedBT (Wang Xin'ao et al., Journal of Software 36(9), 2025, "an efficient
training framework for BERT based on federated learning"; it extends the
same first author's FedBFPT, IJCAI 2023, to fine-tuning) has clients train
and upload only a few transformer layers of the global model per round; the
server averages what was uploaded and keeps the rest. A layer subset is a
*structured* mask (whole tensors in or out), so it composes with the
unstructured masks of :mod:`fedprune.masks`: the client trains the
intersection.

Layers (:func:`layer_groups`), chosen by rule, never by model name:

* a model holding a stack of repeated composite blocks (the largest
  ``nn.ModuleList`` of >= 2 children of one class that have submodules, e.g.
  the encoder blocks of ``vit`` and ``bert-tiny``) is grouped as ``stem``
  (every tensor before the first block in ``state_dict()`` order: token /
  patch embedding, class token, positions), one group per block, and ``head``
  (every tensor after the last block: final norm and classifier);
* any other model is grouped by module prefix: the first component of the
  name, extended through containers (``Sequential`` / ``ModuleList`` /
  ``ModuleDict``) to their children (``conv1``, ``fcs.0``, ``layer1.0``); a
  group without a >= 2-D tensor (a lone norm layer) joins the group before
  it. The last group is the head, the others are the blocks; there is no stem.

Schedules (:class:`PartialSchedule`), for round ``t = 1..T`` (``i = t - 1``,
``n`` blocks, ``w`` = ``layers``; every round also trains the top ``top``
groups, by default the head, FedBT's output layer; the stem, FedBT's
embedding layer, is never trained):

* ``pretrain`` (FedBT's "shallow progressive training" for further
  pre-training): a window of ``w`` consecutive blocks (FedBT: 1) starting at
  the progressive index ``l(i)``, which spends the first ``ceil(T/2)`` rounds
  at 0, half of the remaining rounds at 1, half of what then remains at 2,
  and so on, capped at ``n - w``. T = 10 gives l = 0,0,0,0,0,1,1,1,2,3.
* ``finetune`` (FedBT's "cyclic decreasing training" for downstream
  fine-tuning): blocks ``[l(i), n)`` with ``l(i) = n - 1 - (i mod c)``, the
  cycle factor ``c = w`` (FedBT: 6 of BERT-base's 12 blocks; default here
  ``ceil(n/2)``), so rounds train the top 1, 2, ..., c blocks in turn.

What FedBT does beyond this and fedprune does not: its clients run a
*shallower* local model (the blocks above the trained one are sampled from
the global model's deeper blocks, "deep-layer sampling"), which cuts their
forward cost, and they keep a local copy of the model, so they download
only the layers that changed. Here every client receives and runs the whole
model (forward over every block), trains only the scheduled tensors, and
uploads only those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from torch import nn

from fedprune.config import FEDBT_MODES
from fedprune.training import StepState

MODES = FEDBT_MODES  # ("pretrain", "finetune")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class LayerGroups:
    """A model's ``state_dict()`` keys grouped into ordered layers, bottom to top.

    Attributes
    ----------
    names : group labels, e.g. ``("stem", "blocks.0", ..., "head")``
    tensors : per group, its ``state_dict()`` keys (in ``state_dict()`` order)
    blocks : indices into ``names`` of the schedulable blocks, bottom to top
    """

    names: tuple[str, ...]
    tensors: tuple[tuple[str, ...], ...]
    blocks: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.names)

    def keys(self, groups: Iterable[int]) -> list[str]:
        """The tensors of ``groups``, bottom to top (so in ``state_dict()`` order)."""
        return [k for g in sorted(set(groups)) for k in self.tensors[g]]

    def group_of(self, key: str) -> int:
        """Index of the group holding tensor ``key``."""
        for g, keys in enumerate(self.tensors):
            if key in keys:
                return g
        raise KeyError(f"{key!r} is in no layer group")


def _stack(model: nn.Module) -> str | None:
    """Name of the largest stack of repeated composite blocks, or None."""
    best, best_n = None, -1
    for name, mod in model.named_modules():
        kids = list(mod.children()) if isinstance(mod, nn.ModuleList) else []
        if (len(kids) >= 2 and len({type(k) for k in kids}) == 1
                and all(any(True for _ in k.children()) for k in kids)):
            n = sum(p.numel() for p in mod.parameters())
            if n > best_n:
                best, best_n = name, n
    return best


def _prefix(model: nn.Module, key: str) -> str:
    """The layer a state_dict key belongs to by module prefix (through containers)."""
    parts = key.split(".")
    mod: nn.Module = model
    out = []
    for part in parts[:-1]:
        out.append(part)
        mod = getattr(mod, part)
        if not isinstance(mod, _CONTAINERS):
            break
    return ".".join(out) or key  # a parameter of the root module is a layer of its own


def layer_groups(model: nn.Module) -> LayerGroups:
    """Group ``model``'s ``state_dict()`` keys into ordered layers (see the module docstring)."""
    state = model.state_dict()
    keys = list(state)
    order: list[str] = []
    members: dict[str, list[str]] = {}
    stack = _stack(model)
    if stack is not None:
        n = len(getattr_path(model, stack)) if stack else len(model)  # type: ignore[arg-type]
        dot = f"{stack}." if stack else ""
        block_of = {f"{dot}{i}.": f"{dot}{i}" for i in range(n)}
        seen_block = False
        for k in keys:
            label = next((lab for p, lab in block_of.items() if k.startswith(p)), None)
            if label is None:
                label = "head" if seen_block else "stem"
            else:
                seen_block = True
            if label not in members:
                order.append(label)
                members[label] = []
            members[label].append(k)
        names = tuple(order)
        blocks = tuple(i for i, lab in enumerate(names) if lab not in ("stem", "head"))
        return LayerGroups(names, tuple(tuple(members[n]) for n in names), blocks)
    for k in keys:
        label = _prefix(model, k)
        if label not in members:
            order.append(label)
            members[label] = []
        members[label].append(k)
    # a group of 1-D tensors only (a norm layer, a lone bias) joins the group before it
    merged: list[tuple[str, list[str]]] = []
    for label in order:
        matrix = any(state[k].dim() >= 2 for k in members[label])
        if merged and not matrix:
            merged[-1][1].extend(members[label])
        else:
            merged.append((label, list(members[label])))
    if len(merged) >= 2 and not any(state[k].dim() >= 2 for k in merged[0][1]):
        first = merged.pop(0)  # a leading group of 1-D tensors joins the next one
        merged[0] = (merged[0][0], first[1] + merged[0][1])
    names = tuple(lab for lab, _ in merged)
    return LayerGroups(names, tuple(tuple(ks) for _, ks in merged), tuple(range(len(names) - 1)))


def getattr_path(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``."""
    mod = model
    for part in filter(None, path.split(".")):
        mod = getattr(mod, part)
    return mod


def progressive_index(i: int, num_rounds: int) -> int:
    """FedBT's progressive layer index of round ``i`` (0-based) out of ``num_rounds``.

    The first ``ceil(T/2)`` rounds give 0; then each further index takes
    ``ceil(r/2)`` of the ``r`` rounds still left (FedBT's flow chart: start
    with ``r = T``; when ``i`` reaches ``T - floor(r/2)`` the index grows by
    one and ``r = T - i``). T = 10: 0,0,0,0,0,1,1,1,2,3.
    """
    level, r = 0, num_rounds
    boundary = num_rounds - r // 2
    while r // 2 > 0 and i >= boundary:
        level += 1
        r = num_rounds - boundary
        boundary = num_rounds - r // 2
    return level


@dataclass(frozen=True)
class PartialSchedule:
    """Which layer groups round ``t`` trains (FedBT's schedules; module docstring).

    Parameters
    ----------
    groups : the model's layers (:func:`layer_groups`)
    mode : ``pretrain`` (progressive window from the bottom) or ``finetune``
        (the top 1..c blocks, cycling)
    num_rounds : T
    layers : pretrain: blocks per window (0 = FedBT's 1); finetune: the cycle
        factor c, the most blocks a round trains (0 = ceil(n/2), FedBT's 6 of 12)
    top : top groups trained every round (1 = the head, FedBT's output layer)

    Raises
    ------
    ValueError
        On an unknown mode, ``layers`` beyond the model's blocks, ``top``
        beyond its groups, or a schedule that trains nothing.
    """

    groups: LayerGroups
    mode: str
    num_rounds: int
    layers: int = 0
    top: int = 1

    def __post_init__(self) -> None:
        n = len(self.groups.blocks)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {self.num_rounds}")
        if not 0 <= self.layers <= n:
            raise ValueError(f"layers must be in [0, {n}] (0 = FedBT's default); the model has "
                             f"{n} blocks ({', '.join(self.groups.names[b] for b in self.groups.blocks)})")
        if not 0 <= self.top <= len(self.groups):
            raise ValueError(f"top must be in [0, {len(self.groups)}] (the model's layer groups: "
                             f"{', '.join(self.groups.names)})")
        if self.width == 0 and self.top == 0:
            raise ValueError("this schedule trains nothing: the model has no blocks and top is 0")

    @property
    def width(self) -> int:
        """``layers`` resolved: pretrain window (default 1), finetune cycle (default ceil(n/2))."""
        n = len(self.groups.blocks)
        if self.layers or n == 0:
            return self.layers
        return 1 if self.mode == "pretrain" else math.ceil(n / 2)

    def groups_for(self, server_round: int) -> tuple[int, ...]:
        """Indices of the groups round ``server_round`` (1-based) trains, bottom to top."""
        blocks, w = self.groups.blocks, self.width
        i = max(server_round - 1, 0)
        chosen: set[int] = set()
        if w:
            if self.mode == "pretrain":
                start = min(progressive_index(i, self.num_rounds), len(blocks) - w)
                chosen.update(blocks[start:start + w])
            else:
                chosen.update(blocks[len(blocks) - 1 - (i % w):])
        chosen.update(range(len(self.groups) - self.top, len(self.groups)))
        return tuple(sorted(chosen))

    def tensors_for(self, server_round: int) -> list[str]:
        """The ``state_dict()`` keys round ``server_round`` trains and clients upload."""
        return self.groups.keys(self.groups_for(server_round))


@contextlib.contextmanager
def frozen_except(model: nn.Module, trainable: Collection[str] | None) -> Iterator[list[str]]:
    """Within the block, only parameters named in ``trainable`` require gradients.

    ``None`` changes nothing (dense training). Frozen parameters get no weight
    gradient, and autograd computes no backward below the lowest trainable
    tensor (nothing there needs a gradient). Yields the frozen names; the
    previous ``requires_grad`` flags are restored on exit.

    Raises
    ------
    ValueError
        When ``trainable`` names a tensor the model's ``state_dict()`` lacks.
    """
    if trainable is None:
        yield []
        return
    unknown = set(trainable) - set(model.state_dict())
    if unknown:
        raise ValueError(f"asked to train tensors the model lacks: {sorted(unknown)}")
    frozen = [(n, p) for n, p in model.named_parameters() if n not in trainable and p.requires_grad]
    for _, p in frozen:
        p.requires_grad_(False)
    try:
        yield [n for n, _ in frozen]
    finally:
        for _, p in frozen:
            p.requires_grad_(True)


def on_masks(
    hook: Callable[[StepState], None], names: Collection[str]
) -> Callable[[StepState], None]:
    """An ``on_step`` hook that shows ``hook`` only the masks of ``names`` (the trained
    tensors), so a readjustment moves those masks and leaves the frozen ones alone."""

    def restricted(s: StepState) -> None:
        sub = {k: m for k, m in s.masks.items() if k in names}
        hook(dataclasses.replace(s, masks=sub))
        s.masks.update(sub)

    return restricted


def trained_fraction(groups: LayerGroups, sizes: Mapping[str, int], chosen: Iterable[int]) -> float:
    """Share of the model's values (``sizes``: key -> element count) in groups ``chosen``."""
    total = sum(sizes.values())
    return sum(sizes[k] for k in groups.keys(chosen)) / total if total else 0.0
