"""FedPrune: dynamic sparse training + CGSV-weighted aggregation + residual restoration.

The strategy holds the dense model ``W`` (the "large" model), the global mask
``M`` over the prunable tensors and the clients' contribution scores. One
round (docs/design.md, "One round of FedPrune"):

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
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedprune import codec, wire
from fedprune.aggregation import masked_average, restore_residuals, select_global_mask
from fedprune.checkpoint import CheckpointError, join, split
from fedprune.contribution import ContributionState, data_size_weights, tradeoff
from fedprune.dst import GROWTH, readjust_fraction
from fedprune.masks import DISTRIBUTIONS, ceil_count, density_of, layer_budgets, magnitude_masks
from strategies.common import RecordingMixin
from strategies.fedavg import ValidatingStrategy
from strategies.replies import Reply
from strategies.results import RoundRecorder

ADAPTIVE = ("none", "budget", "contribution")
GROWN_AVERAGE = ("holders", "all")
GROWN_START = ("zero", "residual")
DenseEvaluateFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, float]]
# (server_round, the sparse model sent this round, its masks) -> that model after the
# server's own local training on its root data (cgsv_reference="server")
ServerUpdateFn = Callable[[int, Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                          Mapping[str, np.ndarray]]


class FedPruneCore(ValidatingStrategy):
    """The FedPrune server (without accounting; see :class:`FedPrune`).

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
    server_update_fn : ``fn(round, sent_state, masks) -> trained_state``, needed by
        ``cgsv_reference="server"``: the model sent this round after the same masked
        local training on the server's root data (the ServerApp builds it from
        run-config ``cgsv-root-samples``)
    grown_average : how a position the clients received as 0 (grown this round) is
        averaged: ``holders`` (over the clients that grew it, as FedDST) or ``all``
        (the others vote 0 with their weight; see :func:`masked_average`)
    grown_start : where a grown weight's value starts on the server: ``zero`` (the
        clients' values replace the residual) or ``residual`` (they are updates on top
        of it, so a regrown weight resumes from its residual; needs residual_restoration
        to differ from ``zero``)
    clip_updates : c > 0 scales every update whose L2 norm exceeds c times the
        round's median update norm down to that bound (0 = off); an update is
        the client's values minus what it received, on its support
    clip_window : the median is taken over the raw update norms of this many rounds
        (this one and the ones before it). 1 = this round only; with more, attackers
        who are half of one round cannot move the bound, as they can at 1
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
        server_update_fn: ServerUpdateFn | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if cgsv_reference == "server" and contribution_weighting and server_update_fn is None:
            raise ValueError("cgsv_reference='server' needs server_update_fn (the server's own "
                             "training on its root data; the ServerApp builds it from "
                             "run-config cgsv-root-samples)")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if density_distribution not in DISTRIBUTIONS:
            raise ValueError(f"density distribution must be one of {DISTRIBUTIONS}")
        if growth not in GROWTH:
            raise ValueError(f"growth must be one of {GROWTH}")
        if adaptive_density not in ADAPTIVE:
            raise ValueError(f"adaptive density must be one of {ADAPTIVE}, got {adaptive_density!r}")
        if grown_average not in GROWN_AVERAGE:
            raise ValueError(f"grown_average must be one of {GROWN_AVERAGE}, got {grown_average!r}")
        if grown_start not in GROWN_START:
            raise ValueError(f"grown_start must be one of {GROWN_START}, got {grown_start!r}")
        if clip_updates < 0:
            raise ValueError(f"clip_updates must be >= 0 (0 = off), got {clip_updates}")
        if clip_window < 1:
            raise ValueError(f"clip_window must be >= 1, got {clip_window}")
        if not 0.0 < adaptive_min <= 1.0:
            raise ValueError(f"adaptive_min must be in (0, 1], got {adaptive_min}")
        tradeoff(1, num_rounds, lambda0, lambda_schedule, lambda_min)  # validates schedule, floor
        self.W = {k: np.array(v, copy=True) for k, v in initial_state.items()}
        self.prunable = [k for k in initial_state if k in set(prunable)]
        if not self.prunable:
            raise ValueError("no prunable tensor in the model")
        self.shapes = {k: tuple(v.shape) for k, v in self.W.items()}
        self.dtypes = {k: v.dtype for k, v in self.W.items()}
        self.round_alpha = 0.0  # alpha_t sent this round: how far a client's mask may move
        self.num_rounds = num_rounds
        self.sparsity = sparsity
        self.density_distribution = density_distribution
        self.budgets = layer_budgets(
            {k: self.shapes[k] for k in self.prunable}, 1.0 - sparsity, density_distribution
        )
        self.M = initial_masks(
            {k: self.W[k] for k in self.prunable}, self.budgets, initial_mask, self.seed
        )
        if not residual_restoration:
            self.W = restore_residuals(self.W, self.M, residual=False)
        self.alpha0 = alpha0 if dynamic_topology else 0.0
        self.readjust_interval = readjust_interval
        self.readjust_end = readjust_end or max(1, int(0.75 * num_rounds))
        self.readjust_at = readjust_at
        self.growth = growth
        self.lambda0 = lambda0
        self.lambda_schedule = lambda_schedule
        self.lambda_min = lambda_min
        self.dynamic_topology = dynamic_topology
        self.contribution_weighting = contribution_weighting
        self.residual_restoration = residual_restoration
        self.contributions = ContributionState(
            beta=cgsv_beta, floor=cgsv_floor, leave_one_out=cgsv_leave_one_out,
            reference=cgsv_reference, history_beta=cgsv_history_beta)
        self.clip_updates = clip_updates
        self.clip_window = clip_window
        self._clip_norms: list[list[float]] = []  # raw update norms of the last rounds
        self.grown_average = grown_average
        self.grown_start = grown_start
        self.dense_evaluate = dense_evaluate
        self.server_update_fn = server_update_fn
        self._float_keys = [k for k, v in self.W.items() if np.issubdtype(v.dtype, np.floating)]
        self.last_accepted: list[Reply] = []  # the replies aggregated in the last round
        self.adaptive_density = adaptive_density
        self.adaptive_min = adaptive_min
        self._client_masks: dict[int, dict[str, np.ndarray]] = {}  # node -> sub-mask sent

    # -- views of the state --------------------------------------------------
    def sparse_state(self) -> dict[str, np.ndarray]:
        """W on M (zeros elsewhere): the model clients receive."""
        return {k: (np.where(self.M[k], v, 0).astype(v.dtype) if k in self.M else v)
                for k, v in self.W.items()}

    @property
    def initial_arrays(self) -> ArrayRecord:
        """What round 0 evaluates and ``start`` is given: the sparse initial model."""
        return self.sparse_arrays()

    def sparse_arrays(self) -> ArrayRecord:
        """The sparse model as an ArrayRecord in dense layout (for evaluation)."""
        return ArrayRecord({k: Array(v) for k, v in self.sparse_state().items()})

    def density(self) -> float:
        """Fraction of prunable weights kept by M."""
        return density_of(self.M)

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t├── FedPrune: sparsity %.3f (density %.4f, %d kept of %d prunable)",
            self.sparsity, self.density(), sum(self.budgets.values()),
            sum(m.size for m in self.M.values()))
        log(INFO, "\t├── DST: dynamic %s, alpha0 %.3f, every %d rounds until %d, at %.2f of "
            "local steps, growth %s", self.dynamic_topology, self.alpha0,
            self.readjust_interval, self.readjust_end, self.readjust_at, self.growth)
        log(INFO, "\t└── CGSV: on %s, against the %s, lambda0 %.2f (%s to %.2f), beta %.2f; "
            "residuals %s", self.contribution_weighting, self.contributions.reference,
            self.lambda0, self.lambda_schedule, self.lambda_min, self.contributions.beta,
            self.residual_restoration)

    # -- round ---------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.directory.sample(
            grid, server_round, self.fraction_train, self.min_train_clients
        )
        alpha = readjust_fraction(
            server_round, self.alpha0, self.readjust_interval, self.readjust_end
        )
        config[wire.DST_ALPHA] = alpha
        self.round_alpha = alpha
        config[wire.DST_AT] = self.readjust_at
        config[wire.DST_GROWTH] = self.growth
        self.recorder.add(server_round, alpha=alpha)  # type: ignore[attr-defined]
        log(INFO, "configure_train: %d clients (alpha_t %.4f): %s", len(nodes), alpha,
            ", ".join(self.directory.label(n) for n in nodes))
        self._client_masks = {}
        if self.adaptive_density == "none":
            payload = codec.encode_state(self.W, self.M, self.value_dtype)
            record = ArrayRecord({k: Array(v) for k, v in payload.items()})
            return self.train_messages(server_round, nodes, record, config)
        msgs, densities = [], {}
        for n in nodes:  # each client its own sub-mask of M
            masks = self.sub_mask(self.density_factor(self.directory.client_of.get(n, -1)))
            densities[self.directory.label(n)] = density_of(masks)
            msgs.append(self.masked_message(server_round, n, masks, config))
        self.recorder.add(server_round, client_density=densities)  # type: ignore[attr-defined]
        return msgs

    def masked_message(
        self, server_round: int, node: int, masks: dict[str, np.ndarray], config: ConfigRecord
    ) -> Message:
        """The TRAIN message giving ``node`` the model W on its own ``masks``, which are
        remembered as what it was sent (its budget, and the base of its update)."""
        self._client_masks[node] = masks
        payload = codec.encode_state(self.W, masks, self.value_dtype)
        record = ArrayRecord({k: Array(v) for k, v in payload.items()})
        return self.train_messages(server_round, [node], record, config)[0]

    def density_factor(self, client: int) -> float:
        """The fraction of the global density that ``client`` gets this round."""
        lo = self.adaptive_min
        if self.adaptive_density == "budget":
            budget = self.directory.reported.get(client, {}).get(wire.COMPUTE_BUDGET, 1.0)
            return float(min(1.0, max(lo, budget)))
        if self.adaptive_density == "contribution":
            scores = self.contributions.scores
            if client not in scores or not scores or max(scores.values()) <= 0:
                return 1.0
            return lo + (1.0 - lo) * scores[client] / max(scores.values())
        return 1.0

    def sub_mask(self, factor: float) -> dict[str, np.ndarray]:
        """Per layer the ``round(factor * kept)`` largest-|W| positions of ``M`` (at least 1)."""
        if factor >= 1.0:
            return self.M
        out = {}
        for k, m in self.M.items():
            kept = int(m.sum())
            keep = max(1, int(round(factor * kept))) if kept else 0
            score = np.where(m, np.abs(self.W[k]), -1.0).reshape(-1)
            order = np.lexsort((np.arange(score.size), -score))[:keep]
            sub = np.zeros(score.size, bool)
            sub[order] = True
            out[k] = sub.reshape(m.shape)
        return out

    def decode_payload(
        self, arrays: dict[str, np.ndarray], node: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        try:
            state, masks = codec.decode_state(arrays, self.shapes, self.dtypes, self.value_dtype)
        except codec.CodecError as exc:
            raise wire.InvalidUpdate(f"undecodable payload: {exc}") from exc
        if set(masks) != set(self.prunable):
            raise wire.InvalidUpdate(
                f"sparse tensors {sorted(masks)} differ from the prunable ones {self.prunable}"
            )
        budgets = self.budget_for(node)
        sent = self._client_masks.get(node, self.M)
        for k, m in masks.items():
            kept = int(np.count_nonzero(m))
            if kept > budgets[k]:
                raise wire.InvalidUpdate(
                    f"{k}: {kept} kept weights exceed the layer budget {budgets[k]}"
                )
            # a readjustment drops and grows at most ceil(alpha_t * active) weights per
            # layer (fedprune.dst); on a round without one the mask cannot move at all
            n_sent = int(np.count_nonzero(sent[k]))
            grown = int(np.count_nonzero(m & ~sent[k]))
            dropped = int(np.count_nonzero(sent[k] & ~m))
            may_grow, may_drop = ceil_count(self.round_alpha, n_sent), self.max_dropped(k, n_sent)
            if grown > may_grow or dropped > may_drop:
                raise wire.InvalidUpdate(
                    f"{k}: the mask grew {grown} and dropped {dropped} of the {n_sent} positions "
                    f"sent; this round allows {may_grow} and {may_drop} "
                    f"(alpha_t {self.round_alpha:.4f})")
        for k, v in state.items():
            if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
                raise wire.InvalidUpdate(f"{k}: non-finite values")
        return state, masks

    def max_dropped(self, name: str, sent: int) -> int:
        """Most of the ``sent`` kept weights of tensor ``name`` a client may drop this
        round: a readjustment's ``ceil(alpha_t * sent)`` (0 without one)."""
        return ceil_count(self.round_alpha, sent)

    def budget_for(self, node: int) -> Mapping[str, int]:
        """Most weights ``node`` may keep per layer: its sub-mask's, else the global budget."""
        masks = self._client_masks.get(node)
        if masks is None:
            return self.budgets
        return {k: int(m.sum()) for k, m in masks.items()}

    def aggregate_replies(
        self, server_round: int, ok: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.last_accepted = ok
        clients = [r.client for r in ok]
        n = [r.num_examples for r in ok]
        masks = [r.payload[1] for r in ok]
        need = self.contribution_weighting or self.clip_updates > 0
        deltas = [self._delta(r) for r in ok] if need else []
        clipped: list[int] = []
        if self.clip_updates > 0:
            deltas, clipped = self._clip(ok, deltas)
        states = [r.payload[0] for r in ok]
        weights, phis, lam = self._weights(server_round, deltas, clients, n)
        zeros = None
        if self.grown_average == "all" or self.grown_start == "residual":
            # one complement per distinct mask sent (shared)
            inverted: dict[int, dict[str, np.ndarray]] = {}
            zeros = []
            for r in ok:
                sent = self._client_masks.get(r.node, self.M)
                if id(sent) not in inverted:
                    inverted[id(sent)] = {k: ~m for k, m in sent.items()}
                zeros.append(inverted[id(sent)])
        agg, union = masked_average(states, masks, [weights[c] for c in clients], self.W, zeros,
                                    zero_votes=self.grown_average == "all",
                                    residual_start=self.grown_start == "residual")
        new_mask = (
            select_global_mask(agg, union, self.budgets, fallback=self.M)
            if self.dynamic_topology else self.M
        )
        changes = {k: int((new_mask[k] & ~self.M[k]).sum()) for k in self.M}
        self.W = restore_residuals(agg, new_mask, self.residual_restoration)
        self.M = new_mask
        noisy = [r.client for r in ok if wire.is_noisy(r.metrics)]
        bad = [r.client for r in ok if wire.is_attacker(r.metrics)]
        self.recorder.add(  # type: ignore[attr-defined]
            server_round,
            density=self.density(),
            mask_changes=int(sum(changes.values())),
            layer_mask_changes=changes,
            layer_density={k: float(m.mean()) for k, m in self.M.items()},
            contributions={
                str(c): {"score": self.contributions.scores.get(c), "phi": phis.get(c),
                         "weight": weights[c]} for c in clients
            },
            noisy_clients=noisy,
            noisy_weight=float(sum(weights[c] for c in noisy)),
            attacker_clients=bad,
            attacker_weight=float(sum(weights[c] for c in bad)),
            **({"clipped_clients": clipped} if self.clip_updates > 0 else {}),
            # who built the CGSV reference (trusted reference, once there is a history)
            **({"trusted_clients": list(self.contributions.last_trusted)}
               if phis and self.contributions.reference == "trusted" else {}),
            lambda_t=lam,
            dst_moved=int(sum(int(r.metrics.get(wire.DST_MOVED, 0)) for r in ok)),
        )
        loss = float(np.average([float(r.metrics.get(wire.TRAIN_LOSS, np.nan)) for r in ok],
                                weights=n))
        return self.sparse_arrays(), MetricRecord(
            {wire.TRAIN_LOSS: loss, wire.NUM_EXAMPLES: int(sum(n))}
        )

    def _delta(self, r: Reply) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Client ``r``'s update on its support only (memory O(support)): per float
        tensor (flat positions, what it received there, its values minus that)."""
        state, masks = r.payload
        sent_masks = self._client_masks.get(r.node, self.M)  # what this client received
        out = {}
        for k in self._float_keys:
            flat = np.flatnonzero(masks[k]) if k in masks else np.arange(self.W[k].size)
            # index first, then widen: O(support) per client, not O(model)
            base = self.W[k].reshape(-1)[flat].astype(np.float64)
            if k in sent_masks:  # positions the client grew started from 0
                base = np.where(sent_masks[k].reshape(-1)[flat], base, 0.0)
            out[k] = (flat, base, np.asarray(state[k]).reshape(-1)[flat].astype(np.float64) - base)
        return out

    def _server_update(self, server_round: int) -> np.ndarray:
        """The server's update this round on its root data, flattened like the clients'
        (float tensors in order; prunable ones on M only)."""
        assert self.server_update_fn is not None  # checked in __init__
        sent = self.sparse_state()
        new = self.server_update_fn(server_round, sent, {k: m.copy() for k, m in self.M.items()})
        parts = []
        for k in self._float_keys:
            v = np.asarray(new[k], np.float64)
            if v.shape != self.W[k].shape:
                raise ValueError(f"server update: {k} has shape {v.shape}, expected "
                                 f"{self.W[k].shape}")
            d = (v - sent[k]).reshape(-1)
            parts.append(np.where(self.M[k].reshape(-1), d, 0.0) if k in self.M else d)
        out = np.concatenate(parts)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"round {server_round}: the server's update on its root "
                                     "data is not finite")
        return out

    def _clip(
        self, ok: list[Reply], deltas: list[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]
    ) -> tuple[list[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]], list[int]]:
        """Scale updates above ``clip_updates`` x the median norm (over ``clip_window``
        rounds) down to it, in the replies' states too; return the new deltas and the
        clients clipped."""
        norms = np.array([np.sqrt(sum(float(np.sum(d * d)) for _, _, d in dl.values()))
                          for dl in deltas])
        past = self._clip_norms[-(self.clip_window - 1):] if self.clip_window > 1 else []
        pooled = np.concatenate([np.asarray(x, float) for x in past] + [norms])
        bound = self.clip_updates * float(np.median(pooled))
        if self.clip_window > 1:
            self._clip_norms = [*past, [float(x) for x in norms]]
        out, clipped = [], []
        for r, dl, norm in zip(ok, deltas, norms, strict=True):
            if norm <= bound or norm == 0:
                out.append(dl)
                continue
            c = bound / norm
            clipped.append(r.client)
            state = dict(r.payload[0])
            for k, (flat, base, d) in dl.items():
                v = np.asarray(state[k]).copy()
                v.reshape(-1)[flat] = base + c * d
                state[k] = v.astype(np.asarray(r.payload[0][k]).dtype)
            r.payload = (state, r.payload[1])
            out.append({k: (flat, base, c * d) for k, (flat, base, d) in dl.items()})
        return out, clipped

    def _weights(
        self, server_round: int, deltas: list[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]],
        clients: list[int], n: list[int],
    ) -> tuple[dict[int, float], dict[int, float], float | None]:
        """Aggregation weights (CGSV blend, or data size when switched off)."""
        if not self.contribution_weighting:
            return data_size_weights(clients, n), {}, None
        offsets, size = {}, 0
        for k in self._float_keys:
            offsets[k], size = size, size + self.W[k].size
        indices = [np.concatenate([flat + offsets[k] for k, (flat, _, _) in dl.items()])
                   for dl in deltas]
        values = [np.concatenate([d for _, _, d in dl.values()]) for dl in deltas]
        lam = tradeoff(server_round, self.num_rounds, self.lambda0, self.lambda_schedule,
                       self.lambda_min)
        if self.contributions.reference == "server":
            self.contributions.server_update = self._server_update(server_round)
        if self.contributions.has_reference:
            phis = self.contributions.update_sparse(clients, indices, values, size, n)
            weights = self.contributions.weights(clients, n, lam)
        else:  # nothing to score against yet (trusted reference, first round)
            phis, weights = {}, data_size_weights(clients, n)
        self.contributions.observe(indices, values, [weights[c] for c in clients], size)
        return weights, phis, lam

    # -- checkpoints -------------------------------------------------------------
    def extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Dense model W, global mask M, the contribution scores (and CGSV history H)."""
        h = self.contributions.history
        return {**join("W", self.W), **join("M", self.M),
                **({"H/history": h} if h is not None else {})}, {
            "contributions": self.contributions.to_dict(), "clip_norms": self._clip_norms}

    def load_extra_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`; the checkpoint must match this model."""
        W, M = split(arrays, "W"), split(arrays, "M")
        if {k: v.shape for k, v in W.items()} != {k: v.shape for k, v in self.W.items()} or \
                set(M) != set(self.M):
            raise CheckpointError("checkpoint's model does not match this run's model")
        self.W = {k: W[k].astype(self.W[k].dtype) for k in self.W}
        self.M = {k: M[k].astype(bool) for k in self.M}
        c = meta["contributions"]
        self.contributions.scores = {int(k): float(v) for k, v in c["scores"].items()}
        self.contributions.last_weight = {int(k): float(v) for k, v in c["last_weight"].items()}
        h = split(arrays, "H").get("history")
        if h is not None and h.size != sum(self.W[k].size for k in self._float_keys):
            raise CheckpointError("checkpoint's CGSV history does not match this run's model")
        self.contributions.history = None if h is None else h.astype(np.float64).reshape(-1)
        # checkpoints written before clip-window have none: the window restarts empty
        self._clip_norms = [[float(x) for x in r] for r in meta.get("clip_norms", [])]

    def round_metrics(self, server_round: int) -> dict[str, Any]:
        """Dense-model accuracy and loss (the restored large model W)."""
        out: dict[str, Any] = {"density": self.density()}
        if self.dense_evaluate is not None:
            res = self.dense_evaluate(self.W)
            out["dense_accuracy"] = float(res["accuracy"])
            out["dense_loss"] = float(res["loss"])
        return out


def initial_masks(
    weights: Mapping[str, np.ndarray], budgets: Mapping[str, int], how: str, seed: int
) -> dict[str, np.ndarray]:
    """The first global mask: per layer the largest-|w| positions, or a seeded random draw."""
    import torch  # local: the strategy module otherwise needs no torch

    if how == "magnitude":
        t = {k: torch.from_numpy(np.asarray(w)) for k, w in weights.items()}
        return {k: m.numpy() for k, m in magnitude_masks(t, budgets).items()}
    if how == "random":
        rng = np.random.default_rng([seed, 4242])
        out = {}
        for k, w in weights.items():
            m = np.zeros(np.size(w), bool)
            m[rng.choice(np.size(w), size=budgets[k], replace=False)] = True
            out[k] = m.reshape(np.shape(w))
        return out
    raise ValueError(f"initial mask must be 'magnitude' or 'random', got {how!r}")


class FedPrune(RecordingMixin, FedPruneCore):
    """FedPrune with per-round accounting in a :class:`RoundRecorder`."""

    def __init__(self, *, recorder: RoundRecorder, **kwargs: Any) -> None:
        self.recorder = recorder
        super().__init__(**kwargs)
