"""FedBT-style partial training: clients train and upload only the scheduled layers.

FedBT (Wang et al., Journal of Software 2025; :mod:`fedprune.partial` has the
schedules and what is and is not reproduced) trains a few transformer layers
per round: a progressive window from the bottom for further pre-training, the
top 1..c blocks in a cycle for fine-tuning, the output head every round. A
layer subset is a structured mask, so both strategies here reuse the wire
contract and the codec:

* ``configure_train`` sends the whole model (frozen layers are needed for the
  forward pass) and ``fedbt-train`` (:data:`fedprune.wire.FEDBT_TRAIN`), the
  names of the round's trained tensors;
* clients train those tensors only (the rest frozen: no weight gradients, no
  backward below the lowest trained layer) and upload only them;
* ``aggregate_train`` rejects a reply that uploads a tensor it was not asked
  to train or lacks one it was asked for (logged, recorded in ``rejected``),
  averages the uploaded tensors and keeps every other tensor as it was.

:class:`FedBT` is dense partial training with FedAvg's data-size weights
(FedBT's aggregation). :class:`FedBTPrune` adds FedPrune's unstructured
sparsity: the model travels sparse under the global mask ``M``, clients train
the intersection of the layer subset with their mask, readjust (DST) only the
trained layers' masks, and the server runs FedPrune's aggregation (CGSV
weights, mask-aware average, new global mask, residual restoration) on the
trained layers; the frozen layers' values and masks stay exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedprune import codec, wire
from fedprune.partial import PartialSchedule, trained_fraction

from .common import RecordingMixin
from .fedavg import DenseFedAvgCore
from .fedprune import FedPruneCore
from .replies import Reply
from .results import RoundRecorder


def tensor_of(key: str) -> str:
    """The model tensor a wire array belongs to (``w#values`` / ``w#mask`` -> ``w``)."""
    for suffix in (codec.VALUES_SUFFIX, codec.MASK_SUFFIX):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def check_partial(keys: Iterable[str], trained: Iterable[str]) -> None:
    """Raise :class:`fedprune.wire.InvalidUpdate` unless the wire arrays ``keys`` hold
    exactly the tensors ``trained`` (the round's scheduled ones)."""
    got = {tensor_of(k) for k in keys}
    want = set(trained)
    extra, missing = sorted(got - want), sorted(want - got)
    if extra:
        raise wire.InvalidUpdate(f"partial training: uploads {extra}, which it was not asked "
                                 "to train this round")
    if missing:
        raise wire.InvalidUpdate(f"partial training: lacks {missing}, which it was asked to "
                                 "train this round")


class _Scheduled:
    """The schedule bookkeeping both strategies share."""

    def __init__(self, *, schedule: PartialSchedule, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schedule = schedule
        self._trained: list[str] = []

    def summary(self) -> None:
        super().summary()  # type: ignore[misc]
        self._log_schedule()

    def _start_round(self, server_round: int, config: ConfigRecord,
                     sizes: Mapping[str, int]) -> list[str]:
        """Put the round's trained tensors in ``config`` and record which layers they are."""
        names = self.schedule.tensors_for(server_round)
        self._trained = names
        config[wire.FEDBT_TRAIN] = names
        chosen = self.schedule.groups_for(server_round)
        layers = [self.schedule.groups.names[g] for g in chosen]
        fraction = trained_fraction(self.schedule.groups, sizes, chosen)
        recorder = getattr(self, "recorder", None)
        if recorder is not None:
            recorder.add(server_round, fedbt_layers=layers, fedbt_fraction=fraction)
        log(INFO, "FedBT round %d (%s): training %s (%.1f%% of the values)", server_round,
            self.schedule.mode, ", ".join(layers), 100 * fraction)
        return names

    def _log_schedule(self) -> None:
        s = self.schedule
        log(INFO, "\t└── FedBT: %s schedule over %d blocks (%s), width %d, top %d group(s); "
            "stem never trained", s.mode, len(s.groups.blocks),
            ", ".join(s.groups.names[b] for b in s.groups.blocks), s.width, s.top)


class FedBTCore(_Scheduled, DenseFedAvgCore):
    """Dense partial training: FedAvg over the round's scheduled tensors only.

    Parameters
    ----------
    schedule : which layer groups each round trains (:class:`fedprune.partial.PartialSchedule`)
    **kwargs : sampling arguments of :class:`strategies.fedavg.ValidatingStrategy`
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._current: dict[str, np.ndarray] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._current = {k: v.numpy() for k, v in arrays.items()}
        names = self._start_round(server_round, config,
                                  {k: v.size for k, v in self._current.items()})
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        self._expected = {k: self._expected[k] for k in names}  # what a reply must hold
        return msgs

    def decode_payload(self, arrays: dict[str, np.ndarray], node: int) -> dict[str, np.ndarray]:
        check_partial(arrays, self._trained)
        return super().decode_payload(arrays, node)

    def aggregate_replies(
        self, server_round: int, replies: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_replies(server_round, replies)
        if arrays is None:
            return None, None
        merged = dict(self._current)  # every tensor nobody trained keeps its value
        merged.update({k: v.numpy() for k, v in arrays.items()})
        return ArrayRecord({k: Array(v) for k, v in merged.items()}), metrics


class FedBT(RecordingMixin, FedBTCore):
    """Dense FedBT partial training with per-round accounting in a :class:`RoundRecorder`."""

    def __init__(self, *, recorder: RoundRecorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recorder = recorder


class FedBTPruneCore(_Scheduled, FedPruneCore):
    """Partial training with FedPrune's unstructured sparsity.

    Clients receive ``W`` on ``M`` (every layer, sparse), train and upload the
    scheduled tensors on their masks; FedPrune's aggregation runs on replies
    completed with what each client was sent for the frozen layers (exact
    ``W`` on the mask it received, so their update is zero: CGSV, the
    mask-aware average and the mask selection are unaffected by them), and
    the frozen layers' ``W`` and ``M`` are then put back bit for bit.

    Parameters
    ----------
    schedule : which layer groups each round trains
    **kwargs : the arguments of :class:`strategies.fedprune.FedPruneCore`

    FedBT-prune is FedPrune plus partial training (not a baseline): it follows
    FedPrune's parts by design.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sent: dict[int, ArrayRecord] = {}
        self._frozen_cache: dict[int, dict[str, np.ndarray]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._start_round(server_round, config, {k: v.size for k, v in self.W.items()})
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        self._sent = {m.metadata.dst_node_id: m.content.array_records[wire.ARRAYS] for m in msgs}
        self._frozen_cache = {}
        return msgs

    def _frozen_part(self, node: int) -> dict[str, np.ndarray]:
        """The frozen tensors as ``node`` received them, encoded from the exact ``W`` (float32
        even when the wire carried float16) on the masks it was sent."""
        record = self._sent.get(node)
        if record is None:  # a retry sent to another node: fine when everyone got the same
            records = list(self._sent.values())
            if not records or any(r is not records[0] for r in records):
                raise wire.InvalidUpdate("no training message was sent to this node this round")
            record = records[0]
        key = id(record)
        if key not in self._frozen_cache:
            trained = set(self._trained)
            part: dict[str, np.ndarray] = {}
            for name, w in self.W.items():
                if name in trained:
                    continue
                mk, vk = name + codec.MASK_SUFFIX, name + codec.VALUES_SUFFIX
                if mk in record:
                    mask = codec.decode_mask(record[mk].numpy(), int(np.prod(record[vk].shape)),
                                             w.shape)
                    enc = codec.encode(w, mask)
                    part[vk], part[mk] = enc.values, enc.mask
                else:
                    part[name] = w
            self._frozen_cache[key] = part
        return self._frozen_cache[key]

    def decode_payload(
        self, arrays: dict[str, np.ndarray], node: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        check_partial(arrays, self._trained)
        return super().decode_payload({**self._frozen_part(node), **arrays}, node)

    def aggregate_replies(
        self, server_round: int, replies: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        trained = set(self._trained)
        keep_w = {k: v for k, v in self.W.items() if k not in trained}
        keep_m = {k: v for k, v in self.M.items() if k not in trained}
        arrays, metrics = super().aggregate_replies(server_round, replies)
        if arrays is None:
            return None, None
        self.W.update(keep_w)  # frozen layers exactly as before (no float round trip)
        self.M.update(keep_m)
        return self.sparse_arrays(), metrics


class FedBTPrune(RecordingMixin, FedBTPruneCore):
    """FedBT partial training with FedPrune's sparsity, with per-round accounting."""

    def __init__(self, *, recorder: RoundRecorder, **kwargs: Any) -> None:
        self.recorder = recorder
        super().__init__(**kwargs)
