"""The sparse server core every sparse method is built from.

:class:`SparseServer` holds the dense model ``W`` (the "large" model) and the
global mask ``M`` over the prunable tensors, sends each sampled client ``W`` on
a mask (:mod:`fedprune.codec`), checks what comes back against what was sent,
and runs one round's aggregation from the parts it is given
(:mod:`strategies.parts`): a weighting, a mask policy and an optional update
filter, plus how positions clients grew are averaged and whether pruned
positions keep their values (residual restoration). FedPrune, FedDST, the
static-mask controls, PruneFL, LotteryFL, Sub-FedAvg, FedMP and FedBT-prune
each pick their parts here; none inherits another method.

One round of :meth:`SparseServer.aggregate_replies`, top to bottom:

1. each accepted reply's update on its support (values minus what it received);
2. the update filter (clipping) scales long updates down, in the replies too;
3. the weighting gives each client its weight;
4. the mask-aware average of the clients' values (a position held by no client
   keeps its value in ``W``);
5. the mask policy chooses the next global mask;
6. ``W`` becomes the average, with pruned positions kept as residuals or
   zeroed (and, with a round average, is folded into it); the round's
   bookkeeping goes to the recorder.

The restored dense model (:meth:`SparseServer.dense_state`, what the dense
evaluation and ``final_dense_model.pt`` hold) is ``W`` on the positions that
have been trained: on the current mask, or holding anything but their initial
value. At 80% sparsity most pruned positions never entered any client's mask;
their residual is the random initialisation, which carries nothing learnt and
only adds noise to the dense model, so the dense model holds 0 there. This
changes no sparse model, mask or update (``W`` itself is untouched).
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
from fedprune.aggregation import masked_average, restore_residuals
from fedprune.checkpoint import CheckpointError, join, split
from fedprune.masks import DISTRIBUTIONS, ceil_count, density_of, layer_budgets, magnitude_masks

from .fedavg import ValidatingStrategy
from .parts import Flat, MaskPolicy, NormClip, RoundAverage, Update, Weighting
from .replies import Reply

GROWN_AVERAGE = ("holders", "all")
GROWN_START = ("zero", "residual")
INITIAL_MASKS = ("magnitude", "random")
DenseEvaluateFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, float]]
# client id -> the fraction of the global density it gets this round (1 = the global mask)
DensityFn = Callable[[int], float]


class SparseServer(ValidatingStrategy):
    """The dense model ``W``, the global mask ``M`` and one round of sparse aggregation.

    Parameters
    ----------
    initial_state : the dense model, name -> array (``state_dict()`` order)
    prunable : names of the prunable tensors (:func:`fedprune.masks.prunable_names`)
    weighting, mask_policy : the parts (:mod:`strategies.parts`)
    update_filter : optional :class:`~strategies.parts.NormClip`
    sparsity, density_distribution : fraction of prunable weights removed; ``erk`` or
        ``uniform`` layer budgets
    initial_mask : ``magnitude`` (largest initial weights) or ``random`` (seeded)
    residuals : pruned positions keep their values in ``W`` (residual restoration) or
        are zeroed
    grown_average : a position the clients received as 0 is averaged over the clients
        holding it (``holders``, FedDST's) or over all, the others voting 0 (``all``)
    grown_start : a grown weight's value replaces the residual (``zero``) or is an
        update on top of it (``residual``)
    density : optional ``fn(client id) -> factor``: the client gets the sub-mask of the
        ``round(factor * kept)`` largest-|W| positions of ``M`` per layer
    dense_evaluate : optional ``fn(dense_state) -> {"accuracy", "loss"}`` for ``W``
    unscored : tensors left out of the updates a weighting scores (their positions
        count 0 in every flattened update; clipping still sees them)
    """

    def __init__(
        self,
        *,
        initial_state: Mapping[str, np.ndarray],
        prunable: Iterable[str],
        weighting: Weighting,
        mask_policy: MaskPolicy,
        update_filter: NormClip | None = None,
        round_average: RoundAverage | None = None,
        sparsity: float = 0.8,
        density_distribution: str = "erk",
        initial_mask: str = "magnitude",
        residuals: bool = True,
        grown_average: str = "holders",
        grown_start: str = "zero",
        density: DensityFn | None = None,
        dense_evaluate: DenseEvaluateFn | None = None,
        unscored: Iterable[str] = (),
        class_bias: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if density_distribution not in DISTRIBUTIONS:
            raise ValueError(f"density distribution must be one of {DISTRIBUTIONS}")
        if grown_average not in GROWN_AVERAGE:
            raise ValueError(f"grown_average must be one of {GROWN_AVERAGE}, got {grown_average!r}")
        if grown_start not in GROWN_START:
            raise ValueError(f"grown_start must be one of {GROWN_START}, got {grown_start!r}")
        self.W = {k: np.array(v, copy=True) for k, v in initial_state.items()}
        self.prunable = [k for k in initial_state if k in set(prunable)]
        if not self.prunable:
            raise ValueError("no prunable tensor in the model")
        self.shapes = {k: tuple(v.shape) for k, v in self.W.items()}
        self.dtypes = {k: v.dtype for k, v in self.W.items()}
        self.sparsity, self.density_distribution = sparsity, density_distribution
        self.budgets = layer_budgets({k: self.shapes[k] for k in self.prunable},
                                     1.0 - sparsity, density_distribution)
        self.M = initial_masks({k: self.W[k] for k in self.prunable}, self.budgets,
                               initial_mask, self.seed)
        self.residuals = residuals
        # the initialisation of the prunable tensors: a position whose W still equals it
        # was never trained (see dense_state)
        self._initial = {k: np.array(self.W[k], copy=True) for k in self.prunable}
        if not residuals:
            self.W = restore_residuals(self.W, self.M, residual=False)
        self.weighting, self.mask_policy, self.update_filter = weighting, mask_policy, update_filter
        self.round_average = round_average
        self.grown_average, self.grown_start = grown_average, grown_start
        self.density_fn, self.dense_evaluate = density, dense_evaluate
        self.round_alpha = 0.0  # alpha_t sent this round: how far a client's mask may move
        self.round_votes = 0.0  # growth votes asked this round (server-side readjustment)
        self._float_keys = [k for k, v in self.W.items() if np.issubdtype(v.dtype, np.floating)]
        self.unscored = frozenset(unscored)
        if self.unscored - set(self._float_keys):
            raise ValueError(f"unscored names tensors that are not float tensors of the model: "
                             f"{sorted(self.unscored - set(self._float_keys))}")
        if class_bias is not None and (class_bias not in self._float_keys
                                       or self.W[class_bias].ndim != 1):
            raise ValueError(f"class_bias must name a 1-D float tensor of the model (the "
                             f"output layer's bias), got {class_bias!r}")
        self.class_bias = class_bias  # whose updates Flat.pushes carries
        self.last_accepted: list[Reply] = []  # the replies aggregated in the last round
        self._client_masks: dict[int, dict[str, np.ndarray]] = {}  # node -> mask sent

    # -- views of the state --------------------------------------------------
    def sparse_state(self) -> dict[str, np.ndarray]:
        """W on M (zeros elsewhere): the model clients receive."""
        return self._on_mask(self.W)

    def _on_mask(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: (np.where(self.M[k], v, 0).astype(v.dtype) if k in self.M else v)
                for k, v in state.items()}

    def _output_W(self) -> Mapping[str, np.ndarray]:
        """W, or with a :class:`~strategies.parts.RoundAverage` its average over rounds."""
        return self.W if self.round_average is None else self.round_average.of(self.W)

    def output_state(self) -> dict[str, np.ndarray]:
        """The sparse model the method outputs (evaluated, returned, saved): the output
        W (:meth:`_output_W`) on M."""
        return self._on_mask(self._output_W())

    def dense_state(self) -> dict[str, np.ndarray]:
        """The restored dense model: W (or its round average), except at prunable
        positions off the mask that still hold their initial value (never trained by
        anyone), which are 0."""
        out = {}
        for k, v in self._output_W().items():
            if k in self.M:
                keep = self.M[k] | (self.W[k] != self._initial[k])
                v = np.where(keep, v, 0).astype(v.dtype)
            out[k] = v
        return out

    @property
    def initial_arrays(self) -> ArrayRecord:
        """What round 0 evaluates and ``start`` is given: the sparse initial model."""
        return self.sparse_arrays()

    def sparse_arrays(self) -> ArrayRecord:
        """The output model (:meth:`output_state`) as an ArrayRecord in dense layout:
        what is evaluated and what ``start`` returns."""
        return ArrayRecord({k: Array(v) for k, v in self.output_state().items()})

    def density(self) -> float:
        """Fraction of prunable weights kept by M."""
        return density_of(self.M)

    def summary(self) -> None:
        super().summary()
        log(INFO, "\t├── %s: sparsity %.3f (density %.4f, %d kept of %d prunable)",
            type(self).__name__, self.sparsity, self.density(), sum(self.budgets.values()),
            sum(m.size for m in self.M.values()))
        log(INFO, "\t├── %s", self.mask_policy.describe())
        log(INFO, "\t└── weights: %s; clipping %s; residuals %s; round average %s",
            self.weighting.describe(),
            f"at {self.update_filter.c} x median" if self.update_filter else "off", self.residuals,
            f"beta {self.round_average.beta:.2f}" if self.round_average else "off")

    # -- sending -------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.directory.sample(grid, server_round, self.fraction_train,
                                      self.min_train_clients)
        alpha = self.round_alpha = self.mask_policy.alpha(server_round)
        votes = self.round_votes = self.mask_policy.vote_fraction(server_round)
        extra = self.mask_policy.client_config()
        config[wire.DST_ALPHA] = alpha
        config[wire.DST_AT] = extra["readjust_at"]
        config[wire.DST_GROWTH] = extra["growth"]
        if votes > 0 or wire.DST_VOTES in config:  # Flower hands every round the same record
            config[wire.DST_VOTES] = votes
        self.recorder.add(server_round, alpha=max(alpha, votes))  # type: ignore[attr-defined]
        log(INFO, "configure_train: %d clients (alpha_t %.4f): %s", len(nodes), max(alpha, votes),
            ", ".join(self.directory.label(n) for n in nodes))
        self._client_masks = {}
        if self.density_fn is None:  # one payload for everyone
            payload = codec.encode_state(self.W, self.M, self.value_dtype)
            record = ArrayRecord({k: Array(v) for k, v in payload.items()})
            return self.train_messages(server_round, nodes, record, config)
        msgs, densities = [], {}
        for n in nodes:  # each client its own sub-mask of M
            masks = self.sub_mask(self.density_fn(self.directory.client_of.get(n, -1)))
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

    # -- checking what came back ---------------------------------------------
    def decode_payload(
        self, arrays: dict[str, np.ndarray], node: int
    ) -> tuple[dict[str, np.ndarray], ...]:
        """(state, masks), and on a round that asked for growth votes (state, masks,
        votes): the reply checked against what ``node`` was sent."""
        grow = {k: v for k, v in arrays.items() if wire.GROW_SUFFIX in k}
        arrays = {k: v for k, v in arrays.items() if wire.GROW_SUFFIX not in k}
        try:
            state, masks = codec.decode_state(arrays, self.shapes, self.dtypes, self.value_dtype)
        except codec.CodecError as exc:
            raise wire.InvalidUpdate(f"undecodable payload: {exc}") from exc
        if set(masks) != set(self.prunable):
            raise wire.InvalidUpdate(
                f"sparse tensors {sorted(masks)} differ from the prunable ones {self.prunable}")
        budgets = self.budget_for(node)
        sent = self._client_masks.get(node, self.M)
        for k, m in masks.items():
            kept = int(np.count_nonzero(m))
            if kept > budgets[k]:
                raise wire.InvalidUpdate(f"{k}: {kept} kept weights exceed the layer budget "
                                         f"{budgets[k]}")
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
        if self.round_votes <= 0:
            if grow:
                raise wire.InvalidUpdate("growth votes sent on a round that asked for none")
            return state, masks
        return state, masks, self._votes(grow, sent)

    def _votes(self, grow: dict[str, np.ndarray], sent: Mapping[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
        """A reply's growth votes, checked: one sparse tensor per prunable one, on positions
        outside the mask it was sent, at most ``ceil(votes * kept)`` of them, finite."""
        shapes = {k + wire.GROW_SUFFIX: self.shapes[k] for k in self.prunable}
        try:
            values, held = codec.decode_state(grow, shapes, value_dtype=self.value_dtype)
        except codec.CodecError as exc:
            raise wire.InvalidUpdate(f"undecodable growth votes: {exc}") from exc
        out = {}
        for k in self.prunable:
            v, m = values[k + wire.GROW_SUFFIX], held.get(k + wire.GROW_SUFFIX)
            if m is None:
                raise wire.InvalidUpdate(f"{k}{wire.GROW_SUFFIX}: growth votes must be sparse")
            may = ceil_count(self.round_votes, int(np.count_nonzero(sent[k])))
            if int(np.count_nonzero(m)) > may or (m & sent[k]).any():
                raise wire.InvalidUpdate(
                    f"{k}{wire.GROW_SUFFIX}: {int(np.count_nonzero(m))} votes, "
                    f"{int(np.count_nonzero(m & sent[k]))} of them on kept positions; this "
                    f"round allows {may} outside the mask")
            if not np.isfinite(v).all():
                raise wire.InvalidUpdate(f"{k}{wire.GROW_SUFFIX}: non-finite values")
            out[k] = np.where(m, v, 0).astype(np.float32)
        return out

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

    # -- one round -------------------------------------------------------------
    def aggregate_replies(
        self, server_round: int, ok: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.last_accepted = ok
        clients, n = [r.client for r in ok], [r.num_examples for r in ok]
        # 1-2. the updates on the clients' supports, long ones scaled down
        need = self.weighting.needs_updates or self.update_filter is not None
        updates = [self._update(r) for r in ok] if need else []
        clipped = self._clip(ok, updates) if self.update_filter is not None else []
        # 3. the weights
        w = self.weighting.weights(server_round, clients, n, lambda: self._flat(updates))
        # 4. the mask-aware average (grown positions as the method says)
        zeros = None
        if self.grown_average == "all" or self.grown_start == "residual":
            inverted: dict[int, dict[str, np.ndarray]] = {}  # one complement per mask sent
            zeros = []
            for r in ok:
                sent = self._client_masks.get(r.node, self.M)
                if id(sent) not in inverted:
                    inverted[id(sent)] = {k: ~m for k, m in sent.items()}
                zeros.append(inverted[id(sent)])
        agg, union = masked_average([r.payload[0] for r in ok], [r.payload[1] for r in ok],
                                    [w.weights[c] for c in clients], self.W, zeros,
                                    zero_votes=self.grown_average == "all",
                                    residual_start=self.grown_start == "residual")
        # 5-6. the next mask; W keeps or zeroes what it prunes
        if self.round_votes > 0:  # server-side readjustment: the round's growth votes
            self.mask_policy.take_votes([r.payload[2] for r in ok],
                                        [w.weights[c] for c in clients], self.round_votes)
        new_mask = self.mask_policy.next_mask(agg, union, self.M, self.budgets)
        entered = {k: new_mask[k] & ~self.M[k] for k in self.M}
        if self.round_votes > 0 and self.grown_start == "zero":  # grown by the server: from 0
            agg = {k: (np.where(entered[k], 0, v).astype(v.dtype) if k in entered else v)
                   for k, v in agg.items()}
        changes = {k: int(e.sum()) for k, e in entered.items()}
        self.W = restore_residuals(agg, new_mask, self.residuals)
        if self.round_average is not None:
            self.round_average.update(self.W, entered)
        self.M = new_mask
        scores = self.weighting.scores()
        noisy = [r.client for r in ok if wire.is_noisy(r.metrics)]
        bad = [r.client for r in ok if wire.is_attacker(r.metrics)]
        self.recorder.add(  # type: ignore[attr-defined]
            server_round,
            density=self.density(),
            mask_changes=int(sum(changes.values())),
            layer_mask_changes=changes,
            layer_density={k: float(m.mean()) for k, m in self.M.items()},
            contributions={str(c): {"score": scores.get(c), "phi": w.phis.get(c),
                                    "weight": w.weights[c]} for c in clients},
            noisy_clients=noisy,
            noisy_weight=float(sum(w.weights[c] for c in noisy)),
            attacker_clients=bad,
            attacker_weight=float(sum(w.weights[c] for c in bad)),
            **({"clipped_clients": clipped} if self.update_filter is not None else {}),
            # who built the CGSV reference (trusted reference, once there is a history)
            **({"trusted_clients": w.trusted} if w.trusted is not None else {}),
            lambda_t=w.lambda_t,
            dst_moved=int(sum(int(r.metrics.get(wire.DST_MOVED, 0)) for r in ok)),
        )
        loss = float(np.average([float(r.metrics.get(wire.TRAIN_LOSS, np.nan)) for r in ok],
                                weights=n))
        return self.sparse_arrays(), MetricRecord(
            {wire.TRAIN_LOSS: loss, wire.NUM_EXAMPLES: int(sum(n))})

    def _update(self, r: Reply) -> Update:
        """Client ``r``'s update on its support only (memory O(support))."""
        state, masks = r.payload[0], r.payload[1]
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

    def _clip(self, ok: list[Reply], updates: list[Update]) -> list[int]:
        """The update filter's factors applied to ``updates`` and to the replies' states
        (in place); the clients it scaled."""
        assert self.update_filter is not None
        clipped = []
        for i, (r, c) in enumerate(zip(ok, self.update_filter.factors(updates), strict=True)):
            if c is None:
                continue
            clipped.append(r.client)
            state = dict(r.payload[0])
            for k, (flat, base, d) in updates[i].items():
                v = np.asarray(state[k]).copy()
                v.reshape(-1)[flat] = base + c * d
                state[k] = v.astype(np.asarray(r.payload[0][k]).dtype)
            r.payload = (state, *r.payload[1:])
            updates[i] = {k: (flat, base, c * d) for k, (flat, base, d) in updates[i].items()}
        return clipped

    def _flat(self, updates: list[Update]) -> Flat:
        """The updates as flat vectors over the float tensors, on their supports."""
        offsets, size = {}, 0
        for k in self._float_keys:
            offsets[k], size = size, size + self.W[k].size
        scored = [k for k in self._float_keys if k not in self.unscored]
        b = self.class_bias
        pushes = None if b is None else [_scatter(u[b], self.W[b].size) for u in updates]
        return Flat([np.concatenate([u[k][0] + offsets[k] for k in scored]) for u in updates],
                    [np.concatenate([u[k][2] for k in scored]) for u in updates], size, pushes)

    def flat_update(self, server_round: int, new: Mapping[str, np.ndarray]) -> np.ndarray:
        """``new`` (a model trained from this round's sparse model) minus that model,
        flattened like the clients' updates (prunable tensors on M only)."""
        sent = self.sparse_state()
        parts = []
        for k in self._float_keys:
            v = np.asarray(new[k], np.float64)
            if v.shape != self.W[k].shape:
                raise ValueError(f"server update: {k} has shape {v.shape}, expected "
                                 f"{self.W[k].shape}")
            d = (v - sent[k]).reshape(-1)
            if k in self.unscored:
                d = np.zeros_like(d)
            parts.append(np.where(self.M[k].reshape(-1), d, 0.0) if k in self.M else d)
        out = np.concatenate(parts)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"round {server_round}: the server's update on its root "
                                     "data is not finite")
        return out

    # -- checkpoints and metrics -------------------------------------------------
    def extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """W, M and the parts' state."""
        arrays, meta = self.weighting.state()
        if self.update_filter is not None:
            meta = {**meta, **self.update_filter.state()}
        if self.round_average is not None:
            arrays = {**arrays, **self.round_average.state()}
        return {**join("W", self.W), **join("M", self.M), **arrays}, meta

    def load_extra_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`; the checkpoint must match this model."""
        W, M = split(arrays, "W"), split(arrays, "M")
        if {k: v.shape for k, v in W.items()} != {k: v.shape for k, v in self.W.items()} or \
                set(M) != set(self.M):
            raise CheckpointError("checkpoint's model does not match this run's model")
        self.W = {k: W[k].astype(self.W[k].dtype) for k in self.W}
        self.M = {k: M[k].astype(bool) for k in self.M}
        size = sum(self.W[k].size for k in self._float_keys)
        self.weighting.load_state(arrays, meta, size)
        if self.update_filter is not None:
            self.update_filter.load_state(meta)
        if self.round_average is not None:
            self.round_average.load_state(arrays, self.W)

    def round_metrics(self, server_round: int) -> dict[str, Any]:
        """Density, and the restored dense model's accuracy and loss."""
        out: dict[str, Any] = {"density": self.density()}
        if self.dense_evaluate is not None:
            res = self.dense_evaluate(self.dense_state())
            for k in ("accuracy", "loss"):  # what the evaluation gives of the two
                if k in res:
                    out[f"dense_{k}"] = float(res[k])
        return out


def _scatter(part: tuple[np.ndarray, np.ndarray, np.ndarray], size: int) -> np.ndarray:
    """One tensor's update (positions, base, delta) as a dense flat vector of ``size``."""
    out = np.zeros(size, np.float64)
    out[part[0]] = part[2]
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
    raise ValueError(f"initial mask must be one of {INITIAL_MASKS}, got {how!r}")
