"""PruneFL (Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge
Devices", IEEE TNNLS 2022), on the sparse server core.

1. *Initial pruning on one client*: round 1 sends the dense model to one
   (seeded) client. It trains for ``prunefl-initial-epochs`` epochs and,
   after each epoch but the last, removes 30% of each layer's kept weights by
   magnitude (the reference code's largest decrease per adjustment), never
   below the per-layer budgets (ERK or uniform); so the model is fine-tuned
   between pruning steps. It uploads the pruned model; the server keeps each
   layer's ``budget`` largest weights of it.
2. *Sparse FedAvg*: clients train the masked model (no client-side
   readjustment); the server averages each position over the clients holding
   it, weighted by examples.
3. *Reconfiguration* every ``reconfig_interval`` rounds: the sampled clients
   also upload the squared dense gradients of the prunable tensors summed
   over their local steps (dense float32 arrays: these bytes are counted);
   the server sums them weighted by examples into an importance score and
   makes the new mask the per-layer top-importance positions. A weight that
   re-enters the mask comes back at the value it had when it was pruned (the
   server keeps pruned values, as the reference code does); one that never
   had a value starts at zero.

Choices the paper leaves to its time model, made here for a fixed budget:
the paper picks the parameter set that maximises importance per unit of
(measured) time, which lets the density drift; we keep each layer's budget
fixed so that every method compares at the same sparsity. The reference's
initial stage runs up to thousands of steps on the server with one client's
data and stops when the density settles; ours runs a fixed number of epochs
on the chosen client.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedprune import codec, wire
from fedprune.aggregation import restore_residuals
from fedprune.masks import magnitude_masks, topk_mask

from .common import RecordingMixin
from .parts import DataSizeWeighting, StaticMask
from .replies import Reply
from .results import RoundRecorder
from .sparse import SparseServer


def reconfigure(
    importance: dict[str, np.ndarray], budgets: dict[str, int]
) -> dict[str, np.ndarray]:
    """Per layer, the ``budgets[k]`` positions of largest importance (ties by index)."""
    import torch

    return {k: topk_mask(torch.from_numpy(np.asarray(v, np.float64)), budgets[k]).numpy()
            for k, v in importance.items()}


INITIAL_PRUNE_RATE = 0.3  # share of a layer's kept weights one initial pruning step removes


class PruneFLCore(SparseServer):
    """PruneFL's server. ``reconfig_interval``: rounds between reconfigurations
    (``num_rounds`` is not used)."""

    def __init__(self, *, reconfig_interval: int = 5, initial_epochs: int = 10,
                 num_rounds: int = 0, **kwargs: Any) -> None:
        # between reconfigurations: sparse FedAvg on a fixed mask, pruned values kept
        super().__init__(weighting=DataSizeWeighting(), mask_policy=StaticMask(),
                         residuals=True, grown_average="holders", **kwargs)
        if reconfig_interval < 1:
            raise ValueError("reconfig_interval must be >= 1")
        if initial_epochs < 1:
            raise ValueError("initial_epochs must be >= 1")
        self.reconfig_interval = reconfig_interval
        self.initial_epochs = initial_epochs
        self.initial_done = False
        self._collect = False

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self.initial_done:
            # initial pruning stage: one client trains the dense model
            nodes = self.directory.sample_k(grid, server_round, 1)
            full = {k: np.ones_like(m) for k, m in self.M.items()}
            record = ArrayRecord({k: Array(v) for k, v in
                                  codec.encode_state(self.W, full, self.value_dtype).items()})
            log(INFO, "configure_train: PruneFL initial pruning on client %s (%d epochs)",
                self.directory.label(nodes[0]), self.initial_epochs)
            self.recorder.add(server_round, prunefl_stage="initial")  # type: ignore[attr-defined]
            # a copy: Flower passes the same ConfigRecord to every round
            initial = ConfigRecord({**config, wire.PERSONAL_PRUNE: "prunefl-initial",
                                    wire.PRUNE_RATE: INITIAL_PRUNE_RATE,
                                    wire.TARGET_DENSITY: 1.0 - self.sparsity,
                                    wire.DENSITY_DISTRIBUTION: self.density_distribution,
                                    wire.LOCAL_EPOCHS: self.initial_epochs})
            return self.train_messages(server_round, nodes, record, initial)
        self._collect = server_round % self.reconfig_interval == 0
        # set on every round: Flower passes the same ConfigRecord to every round
        config[wire.PRUNEFL_SQGRAD] = self._collect
        return super().configure_train(server_round, arrays, config, grid)

    def decode_payload(self, arrays: dict[str, np.ndarray], node: int) -> Any:
        sq = {k[: -len(wire.SQGRAD_SUFFIX)]: v for k, v in arrays.items()
              if k.endswith(wire.SQGRAD_SUFFIX)}
        rest = {k: v for k, v in arrays.items() if not k.endswith(wire.SQGRAD_SUFFIX)}
        if not self.initial_done:
            try:
                state, masks = codec.decode_state(rest, self.shapes, self.dtypes, self.value_dtype)
            except codec.CodecError as exc:
                raise wire.InvalidUpdate(f"undecodable payload: {exc}") from exc
            if set(masks) != set(self.prunable):
                raise wire.InvalidUpdate(f"the initial-pruning client must return masks for "
                                         f"{self.prunable}, got {sorted(masks)}")
            short = {k: (int(m.sum()), self.budgets[k]) for k, m in masks.items()
                     if int(m.sum()) < self.budgets[k]}
            if short:
                raise wire.InvalidUpdate(f"the initial-pruning client pruned below the budgets "
                                         f"(kept, budget): {short}")
            for k, v in state.items():
                if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
                    raise wire.InvalidUpdate(f"{k}: non-finite values")
            return state, masks, {}
        state, masks = super().decode_payload(rest, node)
        if self._collect:
            if set(sq) != set(self.prunable):
                raise wire.InvalidUpdate(f"squared gradients expected for {self.prunable}, got "
                                         f"{sorted(sq)}")
            for k, g in sq.items():
                if g.shape != self.shapes[k] or g.dtype != np.float32:
                    raise wire.InvalidUpdate(f"{k}{wire.SQGRAD_SUFFIX}: shape {g.shape} dtype "
                                             f"{g.dtype}, expected {self.shapes[k]} float32")
                if not np.isfinite(g).all() or (g < 0).any():
                    raise wire.InvalidUpdate(f"{k}{wire.SQGRAD_SUFFIX}: not finite and >= 0")
        elif sq:
            raise wire.InvalidUpdate("squared gradients sent on a round that did not ask for them")
        return state, masks, sq

    def extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().extra_state()
        return arrays, {**meta, "initial_done": self.initial_done}

    def load_extra_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().load_extra_state(arrays, meta)
        self.initial_done = bool(meta["initial_done"])

    def required_replies(self, server_round: int) -> int:
        # the initial stage has one client; a round without its reply is retried next round
        return 1 if not self.initial_done else super().required_replies(server_round)

    def aggregate_replies(
        self, server_round: int, ok: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if not self.initial_done:
            import torch

            state = ok[0].payload[0]
            trained = {k: torch.from_numpy(np.asarray(state[k])) for k in self.prunable}
            before = self.M
            self.M = {k: m.numpy() for k, m in magnitude_masks(trained, self.budgets).items()}
            self.W = restore_residuals({k: np.asarray(v).astype(self.W[k].dtype)
                                        for k, v in state.items()}, self.M, residual=False)
            self.initial_done = True
            self.recorder.add(  # type: ignore[attr-defined]
                server_round, density=self.density(),
                mask_changes=int(sum((self.M[k] & ~before[k]).sum() for k in self.M)))
            return self.sparse_arrays(), MetricRecord(
                {wire.NUM_EXAMPLES: ok[0].num_examples,
                 wire.TRAIN_LOSS: float(ok[0].metrics.get(wire.TRAIN_LOSS, np.nan))})
        out = super().aggregate_replies(server_round, ok)
        accepted = self.last_accepted
        if self._collect and accepted:
            n = np.array([r.num_examples for r in accepted], dtype=np.float64)
            importance = {
                k: sum(w * np.asarray(r.payload[2][k], np.float64)
                       for w, r in zip(n / n.sum(), accepted, strict=True))
                for k in self.prunable
            }
            new = reconfigure(importance, self.budgets)
            changes = int(sum((new[k] & ~self.M[k]).sum() for k in self.M))
            self.M = new  # W keeps pruned values: a re-admitted weight resumes from its own
            self.recorder.add(server_round, mask_changes=changes,  # type: ignore[attr-defined]
                              density=self.density(), prunefl_stage="reconfigure")
            return self.sparse_arrays(), out[1]
        return out


class PruneFL(RecordingMixin, PruneFLCore):
    """PruneFL with per-round accounting."""

    def __init__(self, *, recorder: RoundRecorder, **kwargs: Any) -> None:
        self.recorder = recorder
        super().__init__(**kwargs)

    @property
    def initial_arrays(self) -> ArrayRecord:
        """Round 0 evaluates the dense initial model (PruneFL prunes after round 1)."""
        return ArrayRecord({k: Array(v) for k, v in self.W.items()})
