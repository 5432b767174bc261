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
from logging import INFO, WARNING
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
from strategies.common import ClientDirectory, RecordingMixin, evaluation_metrics
from strategies.results import RoundRecorder


class Reply:
    """A validated client reply: client id, decoded payload, example count, metrics."""

    __slots__ = ("client", "node", "payload", "num_examples", "metrics")

    def __init__(
        self, client: int, node: int, payload: Any, num_examples: int, metrics: dict[str, Any],
    ) -> None:
        self.client, self.node, self.payload = client, node, payload
        self.num_examples, self.metrics = num_examples, metrics


class ValidatingStrategy(Strategy):
    """Sampling by client id, reply validation and federated evaluation; no aggregation.

    Subclasses implement :meth:`decode_payload` (what a valid payload is) and
    ``aggregate_train``.
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

    def label(self, node: int) -> str:
        """A readable id for logs and results: the client id if known, else the node id."""
        cid = self.directory.client_of.get(node)
        return str(cid) if cid is not None else f"node-{node}"

    def train_messages(
        self, server_round: int, nodes: list[int], arrays: ArrayRecord, config: ConfigRecord
    ) -> list[Message]:
        """One TRAIN message per sampled node (all carry the same content here)."""
        config[wire.SERVER_ROUND] = server_round
        if self.value_dtype != "float32":
            config[wire.VALUE_DTYPE] = self.value_dtype
        content = RecordDict({wire.ARRAYS: arrays, wire.CONFIG: config})
        return [Message(content, dst_node_id=n, message_type=MessageType.TRAIN) for n in nodes]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = self.directory.sample(
            grid, server_round, self.fraction_train, self.min_train_clients
        )
        log(INFO, "configure_train: %d clients: %s", len(nodes),
            ", ".join(self.label(n) for n in nodes))
        return self.train_messages(server_round, nodes, arrays, config)

    def decode_payload(self, arrays: dict[str, np.ndarray], node: int) -> Any:
        """Decode and check the arrays ``node`` sent; raise :class:`fedprune.wire.InvalidUpdate`."""
        raise NotImplementedError

    def check_reply(self, msg: Message) -> tuple[Any, int, MetricRecord]:
        """Decode one training reply: (payload, num-examples, metrics); raise
        :class:`fedprune.wire.InvalidUpdate` (or ValueError/TypeError) if it is unusable."""
        if msg.has_error():
            raise wire.InvalidUpdate(f"client error: {msg.error.reason}")
        rec = msg.content.array_records.get(wire.ARRAYS)
        met = msg.content.metric_records.get(wire.METRICS)
        if rec is None or met is None:
            raise wire.InvalidUpdate(
                f"reply lacks the {wire.ARRAYS!r} ArrayRecord or {wire.METRICS!r} MetricRecord"
            )
        n = wire.check_num_examples(met.get(wire.NUM_EXAMPLES))
        payload = self.decode_payload({k: v.numpy() for k, v in rec.items()}, msg.metadata.src_node_id)
        return payload, n, met

    def reply_problem(self, msg: Message) -> str | None:
        """Why a training reply would be rejected, or None if it is usable."""
        try:
            self.check_reply(msg)
        except (wire.InvalidUpdate, ValueError, TypeError) as exc:
            return str(exc)
        return None

    def accept(self, server_round: int, replies: Iterable[Message]) -> list[Reply]:
        """Validate replies; log and record every rejection; return the valid ones."""
        accepted: list[Reply] = []
        rejected: dict[str, str] = {}
        seen: set[int] = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            who = self.label(node)
            try:
                if node in seen:
                    raise wire.InvalidUpdate("duplicate reply from the same node this round")
                seen.add(node)
                payload, n, met = self.check_reply(msg)
            except (wire.InvalidUpdate, ValueError, TypeError) as exc:
                rejected[who if who not in rejected else f"{who}#{len(rejected)}"] = str(exc)
                log(WARNING, "round %d: rejected reply of client %s: %s", server_round, who, exc)
                continue
            cid = self.directory.client_of.get(node, -1)
            accepted.append(Reply(cid, node, payload, n, dict(met)))
        self.recorder.add(server_round, clients=len(accepted), rejected=rejected)  # type: ignore[attr-defined]
        if len(accepted) < self.min_replies:
            log(WARNING, "round %d: %d valid replies, fewer than min-replies %d: round skipped, "
                "the model is unchanged", server_round, len(accepted), self.min_replies)
            self.recorder.add(server_round, skipped=True)  # type: ignore[attr-defined]
            return []
        # replies arrive in any order; aggregating in client order makes float sums,
        # and so the whole run, reproducible
        return sorted(accepted, key=lambda r: (r.client, r.node))

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
        ok = evaluation_metrics(replies, self.label)
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
        wire.check_dense(arrays, self._expected)
        return {k: codec.widen(v) for k, v in arrays.items()}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        ok = self.accept(server_round, replies)
        if not ok:
            log(WARNING, "round %d: no valid reply; the model is unchanged", server_round)
            return None, None
        weights = [r.num_examples for r in ok]
        agg = weighted_average([r.payload for r in ok], weights)
        bad = [r for r in ok if wire.is_attacker(r.metrics)]
        noisy = [r for r in ok if wire.is_noisy(r.metrics)]
        recorder = getattr(self, "recorder", None)
        if recorder is not None:  # the data-size weight that attacking / noisy clients got
            recorder.add(server_round, attacker_clients=[r.client for r in bad],
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
