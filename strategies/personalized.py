"""Methods with a mask per client: LotteryFL, Sub-FedAvg (unstructured) and FedMP.

All three keep the dense model ``W`` at the server and send each sampled
client ``W`` on *its own* mask; the server averages each position over the
clients whose masks hold it (weights = examples), and positions no client
held keep their value (FedMP's "residual recovery"; for LotteryFL and
Sub-FedAvg the same rule, as their servers aggregate only what was trained).

* **LotteryFL** (Li et al., 2020): clients start dense. Before training, a
  client evaluates the received model on its local validation data; when the
  accuracy reaches ``lottery-threshold`` and it is still denser than the
  target, it prunes ``prune-rate`` of its kept weights by magnitude and
  rewinds the kept weights to the initial model, then trains. Its mask is
  its own from then on. Evaluation is personalised: each client's mask on
  its own test split (``client_accuracy_mean``).
* **Sub-FedAvg** (Vahidian et al., 2021), unstructured: like LotteryFL but the
  client prunes *after* local training and does not rewind. (The paper also
  gates pruning on the distance between consecutive masks; here a client
  prunes every round until it reaches the target density.)
* **FedMP** (Jiang et al., ICDE 2022): each client's density is an arm of a
  per-client UCB1 bandit over ``fedmp-arms`` densities; the server prunes
  ``W`` by magnitude to that density for the client, which trains the sub-model.
  The reward of a pull is the client's loss reduction during the round
  (first step's loss minus the last epoch's mean) per unit of compute
  (its density), so cheap arms that still learn win. The paper prunes
  structurally (filters) for heterogeneous devices; here pruning is
  unstructured to share the codec and masks, and compute is modelled by density.

For all three, ``accuracy`` in results.json is the centralized accuracy of
the aggregate ``W``; ``density`` is the mean density sent this round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedprune import codec, wire
from fedprune.aggregation import masked_average
from fedprune.bandit import UCB1
from fedprune.checkpoint import join, split
from fedprune.masks import ceil_count, density_of, layer_budgets, magnitude_masks

from .common import RecordingMixin
from .parts import DataSizeWeighting, StaticMask
from .replies import Reply
from .results import RoundRecorder
from .sparse import SparseServer


class PerClientMaskCore(SparseServer):
    """Server with one mask per client (see the module docstring); ``num_rounds`` is
    not used."""

    def __init__(self, *, num_rounds: int = 0, **kwargs: Any) -> None:
        super().__init__(weighting=DataSizeWeighting(), mask_policy=StaticMask(),
                         residuals=True, grown_average="holders", **kwargs)
        self.client_masks: dict[int, dict[str, np.ndarray]] = {}

    def own_mask(self, client: int) -> dict[str, np.ndarray]:
        """The client's last mask, dense before it has one."""
        return self.client_masks.get(client) or {k: np.ones(self.shapes[k], bool)
                                                 for k in self.prunable}

    def mask_for(self, client: int, server_round: int) -> dict[str, np.ndarray]:
        """The mask to send ``client`` for training (default: its own)."""
        return self.own_mask(client)

    def client_config(self, client: int, server_round: int) -> dict[str, Any]:
        """Extra per-client config entries."""
        return {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.directory.sample(grid, server_round, self.fraction_train,
                                      self.min_train_clients)
        self._client_masks = {}  # node -> the mask sent this round
        msgs = []
        densities = []
        for n in nodes:
            cid = self.directory.client_of[n]
            masks = self.mask_for(cid, server_round)
            densities.append(density_of(masks))
            cfg = ConfigRecord({**dict(config), wire.SERVER_ROUND: server_round,
                                **self.client_config(cid, server_round)})
            msgs.append(self.masked_message(server_round, n, masks, cfg))
        self.recorder.add(server_round, density=float(np.mean(densities)))  # type: ignore[attr-defined]
        log(INFO, "configure_train: %d clients, mean density %.3f", len(nodes),
            float(np.mean(densities)))
        return msgs

    def budget_for(self, node: int) -> Mapping[str, int]:
        if node not in self._client_masks:
            raise wire.InvalidUpdate("reply from a node that was not sent a model this round")
        return super().budget_for(node)

    def decode_payload(self, arrays: dict[str, np.ndarray], node: int) -> Any:
        state, masks = super().decode_payload(arrays, node)
        sent = self._client_masks[node]
        for k, m in masks.items():
            if (m & ~sent[k]).any():
                raise wire.InvalidUpdate(f"{k}: the mask grew beyond the one sent to the client")
        return state, masks

    def aggregate_replies(
        self, server_round: int, ok: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.last_accepted = ok
        n = [r.num_examples for r in ok]
        agg, _ = masked_average([r.payload[0] for r in ok], [r.payload[1] for r in ok], n, self.W)
        self.W = agg
        for r in ok:
            self.client_masks[r.client] = r.payload[1]
        self.after_aggregate(server_round, ok)
        self.recorder.add(  # type: ignore[attr-defined]
            server_round,
            pruned_clients=[r.client for r in ok if int(r.metrics.get(wire.PRUNED, 0))],
            client_density={str(r.client): float(np.mean([m.mean() for m in r.payload[1].values()]))
                            for r in ok},
        )
        loss = float(np.average([float(r.metrics.get(wire.TRAIN_LOSS, np.nan)) for r in ok],
                                weights=n))
        return (ArrayRecord({k: Array(v) for k, v in self.W.items()}),
                MetricRecord({wire.TRAIN_LOSS: loss, wire.NUM_EXAMPLES: int(sum(n))}))

    def after_aggregate(self, server_round: int, ok: list[Any]) -> None:
        """Hook for method-specific bookkeeping (FedMP's bandit)."""

    def extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().extra_state()
        for cid, masks in self.client_masks.items():
            arrays.update(join(f"client/{cid}", masks))
        return arrays, {**meta, "clients": sorted(self.client_masks)}

    def load_extra_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().load_extra_state(arrays, meta)
        self.client_masks = {
            int(c): {k: v.astype(bool) for k, v in split(arrays, f"client/{c}").items()}
            for c in meta["clients"]
        }

    def round_metrics(self, server_round: int) -> dict[str, Any]:
        return {}  # W is already what evaluate_fn evaluates

    def evaluate_content(self, node: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        """Personalised evaluation: ``W`` on the client's own last mask (dense if none yet)."""
        masks = self.own_mask(self.directory.client_of[node])
        rec = ArrayRecord({k: Array(v) for k, v in
                           codec.encode_state(self.W, masks, self.value_dtype).items()})
        return RecordDict({wire.ARRAYS: rec, wire.CONFIG: config})

    @property
    def initial_arrays(self) -> ArrayRecord:
        """Round 0 evaluates the dense initial model."""
        return ArrayRecord({k: Array(v) for k, v in self.W.items()})


class LotteryFLCore(PerClientMaskCore):
    """LotteryFL's server: personal masks, pruning decided by the clients (before training)."""

    mode = "lotteryfl"

    def __init__(self, *, prune_rate: float = 0.2, lottery_threshold: float = 0.6,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prune_rate = prune_rate
        self.lottery_threshold = lottery_threshold

    def max_dropped(self, name: str, sent: int) -> int:
        # one pruning step per round: prune-rate of the kept weights, not below the budget
        # (fedprune.masks.prune_by_magnitude, as the client runs it)
        return max(0, sent - max(self.budgets[name], sent - ceil_count(self.prune_rate, sent)))

    def client_config(self, client: int, server_round: int) -> dict[str, Any]:
        return {wire.PERSONAL_PRUNE: self.mode, wire.PRUNE_RATE: self.prune_rate,
                wire.TARGET_DENSITY: 1.0 - self.sparsity,
                wire.DENSITY_DISTRIBUTION: self.density_distribution,
                wire.LOTTERY_THRESHOLD: self.lottery_threshold}


class SubFedAvgCore(LotteryFLCore):
    """Sub-FedAvg's server: as LotteryFL, the client prunes after training, no rewinding."""

    mode = "subfedavg"


class FedMPCore(PerClientMaskCore):
    """FedMP's server: per-client densities from UCB1 bandits, magnitude-pruned sub-models."""

    def __init__(self, *, arms: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5), bandit_c: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not arms or not all(0 < a <= 1 for a in arms):
            raise ValueError(f"FedMP arms must be densities in (0, 1], got {arms}")
        self.arms = tuple(arms)
        self.bandit_c = bandit_c
        self.bandits: dict[int, UCB1] = {}
        self._arm: dict[int, int] = {}

    def mask_for(self, client: int, server_round: int) -> dict[str, np.ndarray]:
        import torch

        bandit = self.bandits.setdefault(client, UCB1(len(self.arms), self.bandit_c))
        arm = bandit.select()
        self._arm[client] = arm
        budgets = layer_budgets(self.shapes_of_prunable(), self.arms[arm],
                                self.density_distribution)
        w = {k: torch.from_numpy(np.asarray(self.W[k])) for k in self.prunable}
        return {k: m.numpy() for k, m in magnitude_masks(w, budgets).items()}

    def extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().extra_state()
        bandits = {str(c): {"pulls": b.pulls, "rewards": b.rewards} for c, b in self.bandits.items()}
        return arrays, {**meta, "bandits": bandits}

    def load_extra_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().load_extra_state(arrays, meta)
        self.bandits = {
            int(c): UCB1(len(self.arms), self.bandit_c, list(b["pulls"]), list(b["rewards"]))
            for c, b in meta["bandits"].items()
        }

    def shapes_of_prunable(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the prunable tensors."""
        return {k: self.shapes[k] for k in self.prunable}

    def after_aggregate(self, server_round: int, ok: list[Any]) -> None:
        rewards = {}
        for r in ok:
            arm = self._arm.get(r.client)
            first = float(r.metrics.get(wire.LOSS_FIRST, np.nan))
            last = float(r.metrics.get(wire.LOSS_LAST, np.nan))
            if arm is None or not (np.isfinite(first) and np.isfinite(last)):
                continue
            reward = max(0.0, first - last) / self.arms[arm]
            self.bandits[r.client].update(arm, reward)
            rewards[str(r.client)] = {"density": self.arms[arm], "reward": reward}
        self.recorder.add(server_round, fedmp_arms=rewards)  # type: ignore[attr-defined]


def _recorded(core: type) -> type:
    class Recorded(RecordingMixin, core):  # type: ignore[misc, valid-type]
        def __init__(self, *, recorder: RoundRecorder, **kwargs: Any) -> None:
            self.recorder = recorder
            super().__init__(**kwargs)

    Recorded.__name__ = Recorded.__qualname__ = core.__name__.removesuffix("Core")
    Recorded.__doc__ = f"{core.__doc__} (with per-round accounting)"
    return Recorded


LotteryFL = _recorded(LotteryFLCore)
SubFedAvg = _recorded(SubFedAvgCore)
FedMP = _recorded(FedMPCore)
