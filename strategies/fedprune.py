"""FedPrune: dynamic sparse training + CGSV-weighted aggregation + residual restoration.

FedPrune is the sparse server core (:class:`strategies.sparse.SparseServer`:
the dense model ``W``, the global mask ``M``, validation and the round's
aggregation) with these parts (:mod:`strategies.parts`): CGSV weights, a
dynamic mask, update clipping, grown positions averaged over all clients, and
residual restoration. One round (docs/design.md, "One round of FedPrune"):

1. ``configure_train``: sample clients; send each the sparse model (values of
   ``W`` on ``M`` plus the packed mask, :mod:`fedprune.codec`), the dense
   non-prunable tensors, and ``dst-alpha`` = alpha_t on readjustment rounds.
2. Clients train masked SGD, readjust part-way on readjustment rounds, and
   upload values on their own masks + the masks + dense tensors.
3. ``aggregate_train``: validate and decode every reply (a bad one is
   rejected with a logged reason), score clients with CGSV, weight them by
   ``p_i = lambda_t n_i/sum n + (1 - lambda_t) r_i/sum r``, average each
   position over the clients whose masks hold it, choose the new global mask
   as the per-layer top-|value| positions of the union within the layer
   budget, and keep every other position's value as a residual in ``W``.
4. Evaluation: ``accuracy`` of the sparse model (what clients receive) by the
   ServerApp's ``evaluate_fn``; ``dense_accuracy`` of ``W`` here.

Ablation switches: ``dynamic_topology=False`` (static mask, no
readjustment), ``contribution_weighting=False`` (data-size weights),
``residual_restoration=False`` (pruned positions zeroed in ``W``).

Adaptive per-client density (``adaptive_density``): a client with factor
``f`` in ``[adaptive_min, 1]`` gets a sub-mask of ``M``, the largest-|W|
``round(f * budget)`` positions of ``M`` per layer, so it downloads, trains
and uploads about ``f`` times the weights of a full client. ``budget``: ``f``
is the client's ``compute-budget`` (reported with its client id; 1 when
absent). ``contribution``: ``f = adaptive_min + (1 - adaptive_min) r_i /
max_j r_j`` from the CGSV scores ``r`` (1 for clients not yet scored), so
clients that contribute little get sparser models. Positions outside every
client's sub-mask keep their values (the mask-aware average), and the
global mask is refilled from ``M`` where the union is short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from torch import nn

from fedprune import wire
from fedprune.contribution import ContributionState, tradeoff
from fedprune.masks import prunable_names

from .common import EvaluateFn, RecordingMixin
from .parts import (
    CGSVWeighting,
    DataSizeWeighting,
    DynamicMask,
    NormClip,
    RoundAverage,
    ServerReadjustment,
    StaticMask,
)
from .results import RoundRecorder
from .sparse import DenseEvaluateFn, SparseServer

ADAPTIVE = ("none", "budget", "contribution")
READJUSTMENT = ("client", "server")
CGSV_SCOPE = ("model", "features")
# (server_round, the sparse model sent this round, its masks) -> that model after the
# server's own local training on its root data (cgsv_reference="server")
ServerUpdateFn = Callable[[int, Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                          Mapping[str, np.ndarray]]


class FedPruneCore(SparseServer):
    """The FedPrune server: the sparse core with FedPrune's parts (see :class:`FedPrune`,
    which adds the accounting; FedBT-prune adds partial training to this one).

    Parameters
    ----------
    initial_state : the dense model, name -> array (``state_dict()`` order)
    prunable : names of the prunable tensors (:func:`fedprune.masks.prunable_names`)
    num_rounds : T, for the lambda schedule and the default readjustment end
    sparsity : fraction of prunable weights removed (density = 1 - sparsity)
    density_distribution : ``erk`` or ``uniform`` layer densities
    alpha0, readjust_interval, readjust_end, readjust_at, growth :
        dynamic sparse training (alpha_t cosine-decays from alpha0 over
        readjustment rounds t % interval == 0, t <= readjust_end; 0 = 3/4 of
        num_rounds); readjust_at is the fraction of local steps after which
        clients readjust; growth ``gradient`` (RigL) or ``random`` (SET)
    readjustment : ``client`` (each client drops and regrows on its own mask part-way
        through local training, FedDST's) or ``server`` (clients vote with their summed
        gradients, the server grows and drops: :class:`strategies.parts.ServerReadjustment`)
    lambda0, lambda_schedule, lambda_min : trade-off between data size and contribution:
        lambda_t decays from lambda0 towards the floor lambda_min by the schedule
    cgsv_beta, cgsv_floor : CGSV moving-average factor and floor
    dynamic_topology, contribution_weighting, residual_restoration : ablation switches
    initial_mask : ``magnitude`` (largest initial weights) or ``random`` (seeded)
    dense_evaluate : optional ``fn(dense_state) -> {"accuracy", "loss"}`` for the dense model
    adaptive_density, adaptive_min : per-client sub-mask densities (module docstring):
        ``none``, ``budget`` or ``contribution``; the smallest factor of the global density
    cgsv_leave_one_out : score each client against the aggregate of the others
    cgsv_reference, cgsv_history_beta : what CGSV scores against: ``round`` (the
        round's aggregate), ``trusted`` (the aggregate of the half of the round
        most aligned with the running direction of the applied updates, smoothed
        with cgsv_history_beta) or ``server`` (the server's own update on its root
        data, from server_update_fn); see :mod:`fedprune.contribution`
    cgsv_scope : what CGSV compares: the whole update (``model``) or the feature layers
        only (``features``: without the output layer, :func:`head_keys`)
    cgsv_rule : how the scores become weights: in proportion over the round (``scores``)
        or within the classes each client pushes (``classes``: each class keeps its
        data-size mass, shared among the clients whose output-bias update raises it, by
        score; a model whose output layer has no bias, e.g. a tied language-model head,
        gets ``scores``, with a warning)
    server_update_fn : ``fn(round, sent_state, masks) -> trained_state``, needed by
        ``cgsv_reference="server"``: the model sent this round after the same masked
        local training on the server's root data (the ServerApp builds it from
        run-config ``cgsv-root-samples``)
    grown_average, grown_start : how positions clients grew are averaged and where
        their values start (:class:`strategies.sparse.SparseServer`)
    clip_updates, clip_window : c > 0 scales every update longer than c x the median
        update norm over clip_window rounds down to it (0 = off;
        :class:`strategies.parts.NormClip`)
    round_average : beta in (0, 1): the output model (evaluated, returned, saved,
        restored dense) is the average of W over rounds, A <- beta A + (1 - beta) W;
        0 = the last round's W (:class:`strategies.parts.RoundAverage`)
    **kwargs : sampling (:class:`strategies.fedavg.ValidatingStrategy`)
    """

    def __init__(
        self,
        *,
        initial_state: Mapping[str, np.ndarray],
        prunable: Iterable[str],
        num_rounds: int,
        sparsity: float = 0.8,
        density_distribution: str = "erk",
        alpha0: float = 0.1,
        readjust_interval: int = 5,
        readjust_end: int = 0,
        readjust_at: float = 0.5,
        growth: str = "gradient",
        readjustment: str = "client",
        lambda0: float = 0.5,
        lambda_schedule: str = "cosine",
        lambda_min: float = 0.0,
        cgsv_beta: float = 0.5,
        cgsv_floor: float = 1e-3,
        dynamic_topology: bool = True,
        contribution_weighting: bool = True,
        residual_restoration: bool = True,
        initial_mask: str = "magnitude",
        dense_evaluate: DenseEvaluateFn | None = None,
        adaptive_density: str = "none",
        adaptive_min: float = 0.25,
        cgsv_leave_one_out: bool = False,
        clip_updates: float = 2.0,
        clip_window: int = 1,
        grown_average: str = "all",
        grown_start: str = "zero",
        cgsv_reference: str = "trusted",
        cgsv_history_beta: float = 0.5,
        cgsv_scope: str = "model",
        cgsv_rule: str = "scores",
        server_update_fn: ServerUpdateFn | None = None,
        round_average: float = 0.75,
        **kwargs: Any,
    ) -> None:
        if adaptive_density not in ADAPTIVE:
            raise ValueError(f"adaptive density must be one of {ADAPTIVE}, got {adaptive_density!r}")
        if not 0.0 < adaptive_min <= 1.0:
            raise ValueError(f"adaptive_min must be in (0, 1], got {adaptive_min}")
        if clip_updates < 0:
            raise ValueError(f"clip_updates must be >= 0 (0 = off), got {clip_updates}")
        bias = None
        if contribution_weighting and cgsv_rule == "classes":
            bias = next((k for k in head_keys(initial_state) if np.ndim(initial_state[k]) == 1),
                        None)
            if bias is None:  # no class signal to read: the round-wide rule, said once
                log(WARNING, "cgsv-rule 'classes' reads the updates of the output layer's "
                    "bias, and this model's output layer has none: CGSV weights are "
                    "proportional to the scores over the round ('scores')")
                cgsv_rule = "scores"
        weighting: CGSVWeighting | DataSizeWeighting = DataSizeWeighting()
        if contribution_weighting:
            root = None
            if server_update_fn is not None:
                def root(rnd: int) -> np.ndarray:  # the server's own update this round
                    sent = self.sparse_state()
                    masks = {k: m.copy() for k, m in self.M.items()}
                    return self.flat_update(rnd, server_update_fn(rnd, sent, masks))
            weighting = CGSVWeighting(
                num_rounds=num_rounds, lambda0=lambda0, schedule=lambda_schedule,
                lambda_min=lambda_min, beta=cgsv_beta, floor=cgsv_floor,
                leave_one_out=cgsv_leave_one_out, reference=cgsv_reference,
                history_beta=cgsv_history_beta, rule=cgsv_rule, server_update=root)
        else:  # checked all the same: a typo must not pass because CGSV is off
            tradeoff(1, num_rounds, lambda0, lambda_schedule, lambda_min)
            ContributionState(reference=cgsv_reference, history_beta=cgsv_history_beta,
                              rule=cgsv_rule)
        if cgsv_scope not in CGSV_SCOPE:
            raise ValueError(f"cgsv_scope must be one of {CGSV_SCOPE}, got {cgsv_scope!r}")
        if readjustment not in READJUSTMENT:
            raise ValueError(f"readjustment must be one of {READJUSTMENT}, got {readjustment!r}")
        end = readjust_end or max(1, int(0.75 * num_rounds))
        policy: StaticMask | DynamicMask | ServerReadjustment = StaticMask(readjust_at, growth)
        if dynamic_topology and readjustment == "server":
            policy = ServerReadjustment(alpha0=alpha0, interval=readjust_interval, end=end)
        elif dynamic_topology:
            policy = DynamicMask(alpha0=alpha0, interval=readjust_interval, end=end,
                                 readjust_at=readjust_at, growth=growth)
        super().__init__(
            initial_state=initial_state, prunable=prunable, weighting=weighting,
            mask_policy=policy,
            update_filter=NormClip(clip_updates, clip_window) if clip_updates > 0 else None,
            round_average=RoundAverage(round_average) if round_average > 0 else None,
            sparsity=sparsity, density_distribution=density_distribution,
            initial_mask=initial_mask, residuals=residual_restoration,
            grown_average=grown_average, grown_start=grown_start,
            density=None if adaptive_density == "none" else self.density_factor,
            dense_evaluate=dense_evaluate,
            unscored=head_keys(initial_state) if cgsv_scope == "features" else (),
            class_bias=bias, **kwargs)
        self.adaptive_density, self.adaptive_min = adaptive_density, adaptive_min

    @property
    def contributions(self) -> ContributionState | None:
        """The CGSV state (scores, last weights, history); None with data-size weights."""
        return self.weighting.contributions if isinstance(self.weighting, CGSVWeighting) else None

    def density_factor(self, client: int) -> float:
        """The fraction of the global density that ``client`` gets this round."""
        lo = self.adaptive_min
        if self.adaptive_density == "budget":
            budget = self.directory.reported.get(client, {}).get(wire.COMPUTE_BUDGET, 1.0)
            return float(min(1.0, max(lo, budget)))
        scores = self.weighting.scores()  # "contribution"
        if client not in scores or not scores or max(scores.values()) <= 0:
            return 1.0
        return lo + (1.0 - lo) * scores[client] / max(scores.values())


def head_keys(state: Mapping[str, np.ndarray]) -> list[str]:
    """The output layer of a model known by its arrays: its last floating-point tensor of
    at least 2 dimensions and the 1-D float tensors after it (its bias)."""
    floats = [k for k, v in state.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    matrices = [i for i, k in enumerate(floats) if np.ndim(state[k]) >= 2]
    if not matrices:
        return []
    return [k for k in floats[matrices[-1]:] if k == floats[matrices[-1]] or np.ndim(state[k]) < 2]


def shape_rule(state: Mapping[str, np.ndarray]) -> list[str]:
    """The prunable tensors of a model known only by its arrays: the floating-point
    ones with at least 2 dimensions (weight matrices, convolution kernels, embeddings;
    biases and normalisation parameters are 1-D)."""
    return [k for k, v in state.items()
            if np.issubdtype(np.asarray(v).dtype, np.floating) and np.ndim(v) >= 2]


class FedPrune(RecordingMixin, FedPruneCore):
    """FedPrune with per-round accounting in a :class:`RoundRecorder`.

    For use in another Flower app, as Flower's own strategies are used:
    ``FedPrune(sparsity=0.8, fraction_train=0.5)`` then
    ``strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
    num_rounds=T, evaluate_fn=...)``: the model, the number of rounds and the prunable
    tensors come from ``start`` (prunable: the float tensors of at least 2 dimensions,
    :func:`shape_rule`); ``FedPrune(model=model, ...)`` takes them from the model
    instead (:func:`fedprune.masks.prunable_names`, which also knows the layer types).
    ``recorder`` is optional (rounds kept in memory, ``strategy.recorder``), and
    ``evaluate_fn`` also scores the restored dense model unless ``dense_evaluate`` is
    given. The other arguments are :class:`FedPruneCore`'s.
    """

    def __init__(self, *, model: nn.Module | None = None, recorder: RoundRecorder | None = None,
                 **kwargs: Any) -> None:
        self._default_recorder = recorder is None
        self.recorder = recorder if recorder is not None else RoundRecorder(
            None, {}, int(kwargs.get("num_rounds", 0)))
        if model is not None:
            if "initial_state" in kwargs or "prunable" in kwargs:
                raise TypeError("give either model or initial_state and prunable, not both")
            kwargs["initial_state"] = wire.state_to_numpy(model.state_dict())
            kwargs["prunable"] = prunable_names(model)
        elif "initial_state" in kwargs and "prunable" not in kwargs:
            kwargs["prunable"] = shape_rule(kwargs["initial_state"])
        self._deferred: dict[str, Any] | None = None
        if "initial_state" not in kwargs or "num_rounds" not in kwargs:
            self._deferred = kwargs  # built in start(), from its initial_arrays / num_rounds
            return
        super().__init__(**kwargs)

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: EvaluateFn | None = None) -> Result:
        """Flower's ``start``; ``initial_arrays`` defaults to the sparse initial model, and
        ``evaluate_fn`` also scores the restored dense model when no ``dense_evaluate``
        was given. A strategy made without a model is built here from
        ``initial_arrays`` and ``num_rounds``."""
        if self._deferred is not None:
            if initial_arrays is None and "initial_state" not in self._deferred:
                raise TypeError("FedPrune made without a model needs start(initial_arrays=...)")
            kwargs, self._deferred = self._deferred, None
            state = kwargs.pop("initial_state", None)
            if state is None:
                state = {k: np.asarray(v.numpy()) for k, v in initial_arrays.items()}
            kwargs.setdefault("prunable", shape_rule(state))
            kwargs.setdefault("num_rounds", num_rounds)
            if self._default_recorder:
                self.recorder = RoundRecorder(None, {}, int(kwargs["num_rounds"]))
            FedPruneCore.__init__(self, initial_state=state, **kwargs)
            initial_arrays = None  # the sparse initial model, below
        if self.dense_evaluate is None and evaluate_fn is not None:
            fn = evaluate_fn

            def dense(state: Mapping[str, np.ndarray]) -> Mapping[str, float]:
                res = fn(0, ArrayRecord({k: Array(np.asarray(v)) for k, v in state.items()}))
                return dict(res) if res is not None else {}

            self.dense_evaluate = dense
        return super().start(grid, initial_arrays if initial_arrays is not None
                             else self.initial_arrays, num_rounds, timeout, train_config,
                             evaluate_config, evaluate_fn)
