"""FedDST and the static-mask controls, built from the sparse server core's parts.

* **FedDST** (Bibikar et al., "Federated Dynamic Sparse Training", AAAI 2022):
  clients train the masked model and, on readjustment rounds, drop the
  smallest-magnitude alpha_t of each layer's weights and regrow as many by
  gradient magnitude (RigL); the server averages each position over the
  clients that hold it (grown ones too), weighted by examples, and keeps per
  layer the budget's largest-|value| positions of the union. Pruned weights are
  zeroed (no residuals), no update is clipped, no contribution scores.
* **Static mask** (``static-magnitude`` / ``static-random``): the sparse FedAvg
  control, a fixed mask chosen at the start (largest initial weights, or a
  seeded random draw), data-size weights, pruned weights zeroed.

Neither depends on FedPrune: changing FedPrune's parts or defaults cannot
change them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .common import RecordingMixin
from .parts import DataSizeWeighting, DynamicMask, StaticMask
from .results import RoundRecorder
from .sparse import SparseServer


class FedDST(RecordingMixin, SparseServer):
    """FedDST's server (module docstring), with per-round accounting.

    ``alpha0``, ``readjust_interval``, ``readjust_end`` (0 = 3/4 of ``num_rounds``),
    ``readjust_at`` and ``growth`` as in :class:`strategies.parts.DynamicMask`.
    """

    def __init__(self, *, recorder: RoundRecorder, initial_state: Mapping[str, np.ndarray],
                 prunable: Iterable[str], num_rounds: int, sparsity: float = 0.8,
                 density_distribution: str = "erk", alpha0: float = 0.1,
                 readjust_interval: int = 5, readjust_end: int = 0, readjust_at: float = 0.5,
                 growth: str = "gradient", **kwargs: Any) -> None:
        self.recorder = recorder
        super().__init__(
            initial_state=initial_state, prunable=prunable, weighting=DataSizeWeighting(),
            mask_policy=DynamicMask(alpha0=alpha0, interval=readjust_interval,
                                    end=readjust_end or max(1, int(0.75 * num_rounds)),
                                    readjust_at=readjust_at, growth=growth),
            sparsity=sparsity, density_distribution=density_distribution, residuals=False,
            grown_average="holders", **kwargs)


class StaticSparse(RecordingMixin, SparseServer):
    """Sparse FedAvg on a fixed mask (``initial_mask``: ``magnitude`` or ``random``)."""

    def __init__(self, *, recorder: RoundRecorder, initial_state: Mapping[str, np.ndarray],
                 prunable: Iterable[str], num_rounds: int, sparsity: float = 0.8,
                 density_distribution: str = "erk", initial_mask: str = "magnitude",
                 **kwargs: Any) -> None:
        self.recorder = recorder
        super().__init__(
            initial_state=initial_state, prunable=prunable, weighting=DataSizeWeighting(),
            mask_policy=StaticMask(), sparsity=sparsity,
            density_distribution=density_distribution, initial_mask=initial_mask,
            residuals=False, grown_average="holders", **kwargs)
