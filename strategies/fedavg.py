"""Dense FedAvg (McMahan et al., 2017) as a Message-API strategy, with our bookkeeping.

It differs from ``flwr.serverapp.strategy.FedAvg`` only where the project
needs it: clients are sampled reproducibly from (seed, round) by stable client
id, every reply is validated (a bad one is rejected with a logged reason and
the round goes on with the rest), and the average is computed by
:func:`fedprune.aggregation.weighted_average` (float64 accumulation). A test
checks it gives the same accuracy trajectory as Flower's FedAvg.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedprune import codec, wire
from fedprune.aggregation import weighted_average

from .common import ClientDirectory, RecordingMixin, evaluation_metrics
from .replies import Reply
from .results import RoundRecorder


class ValidatingStrategy(Strategy):
    """Sampling by client id, reply validation and federated evaluation; no aggregation.

    Subclasses implement :meth:`decode_payload` (what a valid payload is) and
    :meth:`aggregate_replies` (the server step on the validated replies); the
    validation boundary itself (:mod:`strategies.replies`) runs in
    :class:`strategies.common.RecordingMixin`, which every strategy has.
    """

    #: float values on the wire (run-config ``codec-dtype``): "float32" or "float16"
    value_dtype: str = "float32"

    def __init__(
        self,
        *,
        fraction_train: float = 0.5,
        min_train_clients: int = 2,
        fraction_evaluate: float = 0.0,
        seed: int = 0,
        directory: ClientDirectory | None = None,
        min_replies: int = 1,
    ) -> None:
        if min_replies < 1:
            raise ValueError(f"min_replies must be >= 1, got {min_replies}")
        self.min_replies = min_replies
        self.fraction_train = fraction_train
        self.min_train_clients = min_train_clients
        self.fraction_evaluate = fraction_evaluate
        self.seed = seed
        self.directory = directory or ClientDirectory(seed=seed)

    def summary(self) -> None:
        """Log the sampling set-up."""
        log(INFO, "\t├── Sampling: fraction-train %.3f (min %d clients), fraction-evaluate %.3f, "
            "min-replies %d", self.fraction_train, self.min_train_clients, self.fraction_evaluate,
            self.min_replies)
        log(INFO, "\t└── Seed: %d (clients sampled by client id, without replacement)", self.seed)

    def train_messages(
        self, server_round: int, nodes: list[int], arrays: ArrayRecord, config: ConfigRecord
    ) -> list[Message]:
        """One TRAIN message per sampled node (all carry the same content here)."""
        config[wire.SERVER_ROUND] = server_round
        if self.value_dtype != "float32":
            config[wire.VALUE_DTYPE] = self.value_dtype
        content = RecordDict({wire.ARRAYS: arrays, wire.CONFIG: config})
        # the round travels in group_id too: the reply carries it back (strategies.replies)
        return [Message(content, dst_node_id=n, message_type=MessageType.TRAIN,
                        group_id=str(server_round)) for n in nodes]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.directory.sample(
            grid, server_round, self.fraction_train, self.min_train_clients
        )
        log(INFO, "configure_train: %d clients: %s", len(nodes),
            ", ".join(self.directory.label(n) for n in nodes))
        return self.train_messages(server_round, nodes, arrays, config)

    def decode_payload(self, arrays: dict[str, np.ndarray], node: int) -> Any:
        """Decode and check the arrays ``node`` sent; raise :class:`fedprune.wire.InvalidUpdate`."""
        raise NotImplementedError

    def required_replies(self, server_round: int) -> int:
        """Valid replies a round needs to be aggregated (else it is skipped)."""
        return self.min_replies

    def aggregate_replies(
        self, server_round: int, replies: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The server step on the round's validated replies (in client order; at least
        :meth:`required_replies` of them). :class:`strategies.common.RecordingMixin`
        runs the validation boundary (:mod:`strategies.replies`) and calls this."""
        raise NotImplementedError

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_evaluate <= 0:
            return []
        nodes = self.directory.sample(grid, server_round, self.fraction_evaluate, 1, stream=1)
        config[wire.SERVER_ROUND] = server_round
        return [Message(self.evaluate_content(n, arrays, config), dst_node_id=n,
                        message_type=MessageType.EVALUATE) for n in nodes]

    def evaluate_content(self, node: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        """What ``node`` evaluates: the round's model (personalised methods override)."""
        return RecordDict({wire.ARRAYS: arrays, wire.CONFIG: config})

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        ok = evaluation_metrics(replies, self.directory.label)
        if not ok:
            return None
        n = np.array([float(m[wire.NUM_EXAMPLES]) for m in ok])
        return MetricRecord({
            k: float(np.average([float(m[k]) for m in ok], weights=n)) for k in ("accuracy", "loss")
        })


class DenseFedAvgCore(ValidatingStrategy):
    """FedAvg's server step: the num-examples-weighted mean of the clients' arrays."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._expected: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._expected = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in arrays.items()}
        if self.value_dtype != "float32":  # the download in the codec's dtype too
            arrays = ArrayRecord({k: Array(v) for k, v in codec.encode_state(
                {k: v.numpy() for k, v in arrays.items()}, {}, self.value_dtype).items()})
        return super().configure_train(server_round, arrays, config, grid)

    def decode_payload(
        self, arrays: dict[str, np.ndarray], node: int
    ) -> dict[str, np.ndarray]:
        wire.check_dense(arrays, self._expected, self.value_dtype)
        return {k: codec.widen(v) for k, v in arrays.items()}

    def aggregate_replies(
        self, server_round: int, ok: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        weights = [r.num_examples for r in ok]
        agg = weighted_average([r.payload for r in ok], weights)
        bad = [r for r in ok if wire.is_attacker(r.metrics)]
        noisy = [r for r in ok if wire.is_noisy(r.metrics)]
        # the data-size weight that attacking / noisy clients got
        self.recorder.add(server_round, attacker_clients=[r.client for r in bad],  # type: ignore[attr-defined]
                          attacker_weight=float(sum(r.num_examples for r in bad) / sum(weights)),
                          noisy_clients=[r.client for r in noisy],
                          noisy_weight=float(sum(r.num_examples for r in noisy) / sum(weights)))
        loss = float(np.average([float(r.metrics.get(wire.TRAIN_LOSS, np.nan)) for r in ok],
                                weights=weights))
        return (
            ArrayRecord({k: Array(v) for k, v in agg.items()}),
            MetricRecord({wire.TRAIN_LOSS: loss, wire.NUM_EXAMPLES: int(sum(weights))}),
        )


class FedAvg(RecordingMixin, DenseFedAvgCore):
    """Dense FedAvg with per-round accounting in a :class:`RoundRecorder`."""

    def __init__(self, *, recorder: RoundRecorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recorder = recorder
