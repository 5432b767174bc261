"""Flower's own strategies, used as shipped, plus our accounting and seeded sampling.

Flower's FedAvg family draws its clients with ``random.sample`` over node
ids, which are random per run, so two runs with the same seed would train
different clients. :class:`SeededSampling` keeps Flower's sample *size* and
replaces *which* nodes by our seeded draw over stable client ids
(:class:`~strategies.common.ClientDirectory`), the same draw our own
strategies use. Everything else (aggregation, server momentum, the proximal
term's config) is Flower's code, unchanged: :class:`FlowerStrategy` holds an
instance of Flower's class and delegates to it (composition; it subclasses none
of Flower's strategies).

============  ===============================================  =====================
name          Flower class                                     run-config keys
============  ===============================================  =====================
flower-fedavg ``flwr.serverapp.strategy.FedAvg``               -
fedavgm       ``flwr.serverapp.strategy.FedAvgM``              server-lr, server-momentum
fedprox       ``flwr.serverapp.strategy.FedProx``              proximal-mu
fedmedian     ``flwr.serverapp.strategy.FedMedian``            -
krum          ``flwr.serverapp.strategy.Krum``                 krum-malicious
============  ===============================================  =====================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as _FlowerFedAvg
from flwr.serverapp.strategy import FedAvgM as _FlowerFedAvgM
from flwr.serverapp.strategy import FedMedian as _FlowerFedMedian
from flwr.serverapp.strategy import FedProx as _FlowerFedProx
from flwr.serverapp.strategy import Krum as _FlowerKrum
from flwr.serverapp.strategy import Strategy

from fedprune import wire

from .common import ClientDirectory, RecordingMixin
from .replies import Reply
from .results import RoundRecorder


class SeededSampling:
    """Same sample size as the strategy it wraps, seeded choice of clients.

    Flower's ``configure_train`` / ``configure_evaluate`` run unchanged; their
    messages (one RecordDict shared by all, so addressing them to other nodes
    changes nothing else) are then addressed to our seeded sample of the same
    size. No private method of Flower's is overridden.
    """

    directory: ClientDirectory

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        msgs = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        return self._seeded(msgs, server_round, grid, stream=0)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        msgs = list(super().configure_evaluate(server_round, arrays, config, grid))  # type: ignore[misc]
        return self._seeded(msgs, server_round, grid, stream=1)

    def _seeded(self, msgs: list[Message], server_round: int, grid: Grid, stream: int
                ) -> list[Message]:
        if not msgs:
            return msgs
        # as many as Flower sampled, fewer if fewer nodes reported their client id
        nodes = self.directory.sample_k(grid, server_round, len(msgs), stream)
        return [Message(m.content, dst_node_id=n, message_type=m.metadata.message_type,
                        group_id=m.metadata.group_id) for m, n in zip(msgs, nodes, strict=False)]


class _Delegating(Strategy):
    """Flower's five strategy methods, delegated to ``inner``: one of Flower's strategies,
    an instance used as Flower ships it (composition, not a base class; Flower's
    ``start`` is the base class's and calls these)."""

    inner: Strategy

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()


class FlowerStrategy(RecordingMixin, SeededSampling, _Delegating):
    """A Flower strategy behind our validation boundary, with our accounting and seeded
    sampling: a reply reaches the inner strategy's ``aggregate_train`` only if its
    arrays have the keys, shapes and dtypes of what was sent and its metrics are
    checked numbers with the round's common keys (Flower averages every metric and
    raises on records whose keys differ). ``flower`` is the Flower class; the
    keyword arguments other than ``recorder`` and ``seed`` build it."""

    uniform_metrics = True
    flower: type[Strategy] = _FlowerFedAvg

    def __init__(self, *, recorder: RoundRecorder, seed: int = 0, **kwargs: Any) -> None:
        self.inner = self.flower(**kwargs)
        self.recorder = recorder
        self.directory = ClientDirectory(seed=seed)
        self._expected: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._expected = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def decode_payload(self, arrays: dict[str, np.ndarray], node: int) -> dict[str, np.ndarray]:
        """The arrays must be what was sent, trained: same keys, shapes, dtypes; finite."""
        wire.check_dense(arrays, self._expected)
        return arrays

    def required_replies(self, server_round: int) -> int:
        return 1

    def aggregate_replies(
        self, server_round: int, ok: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The inner strategy's ``aggregate_train`` on the messages of the valid replies (and
        which of them attacked or had noisy labels: our strategies record these with the
        weight they gave them)."""
        self.recorder.add(
            server_round,
            attacker_clients=sorted(r.client for r in ok if wire.is_attacker(r.metrics)),
            noisy_clients=sorted(r.client for r in ok if wire.is_noisy(r.metrics)))
        messages = [r.message for r in ok if r.message is not None]
        return self.inner.aggregate_train(server_round, messages)


class FlowerFedAvg(FlowerStrategy):
    """``flwr.serverapp.strategy.FedAvg`` (McMahan et al., 2017); our FedAvg's cross-check."""

    flower = _FlowerFedAvg


class FlowerFedAvgM(FlowerStrategy):
    """``flwr.serverapp.strategy.FedAvgM`` (Hsu et al., 2019): server momentum on the
    pseudo-gradient ``w - avg``: ``v <- m v + g``, ``w <- w - eta v``."""

    flower = _FlowerFedAvgM

    def extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The server momentum vector (Flower's ``momentum_vector``)."""
        mv = self.inner.momentum_vector or []  # type: ignore[attr-defined]
        return {str(i): np.asarray(v) for i, v in enumerate(mv)}, {"momentum": len(mv)}

    def load_extra_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        n = int(meta["momentum"])
        self.inner.momentum_vector = (  # type: ignore[attr-defined]
            [arrays[str(i)] for i in range(n)] if n else None)


class FlowerFedProx(FlowerStrategy):
    """``flwr.serverapp.strategy.FedProx`` (Li et al., 2020): sends ``proximal-mu``; our
    client adds ``mu/2 ||w - w_global||^2`` to its local loss."""

    flower = _FlowerFedProx


class FlowerFedMedian(FlowerStrategy):
    """``flwr.serverapp.strategy.FedMedian`` (Yin et al., 2018): the coordinate-wise median
    of the clients' models (a Byzantine-robust baseline)."""

    flower = _FlowerFedMedian


class FlowerKrum(FlowerStrategy):
    """``flwr.serverapp.strategy.Krum`` (Blanchard et al., 2017): keeps the one update
    closest (summed squared distance) to its ``n - f - 2`` nearest others, ``f`` =
    ``num_malicious_nodes`` (run-config ``krum-malicious``)."""

    flower = _FlowerKrum
