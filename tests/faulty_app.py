"""Clients with injected faults, for fault-tolerance tests through a real Flower grid.

Module-level so that Ray's actors can import it. In federations of more than
3 clients, partition 0 always raises in ``fit`` and partition 1 returns arrays
of the wrong shapes. In a federation of exactly 3, partition 2 sleeps
``SLOW_S`` seconds in round 2 (longer than the test's ``round-timeout``; round
1 is left alone because it includes the actors' start-up). All other clients
are honest.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.app import Context

from fedprune import wire
from fedprune_flwr.clients.client_app import client_from_context
from fedprune_flwr.clients.numpy_client import FedPruneClient

RAISES, WRONG_SHAPES, SLOW = 0, 1, 2
SLOW_S = 20.0


def faulty_client(context: Context, overrides: dict[str, Any] | None = None) -> FedPruneClient:
    """The normal client, with the fault of its partition injected into ``fit``."""
    client = client_from_context(context, overrides)
    pid = int(context.node_config["partition-id"])
    small = int(context.node_config["num-partitions"]) == 3
    honest_fit = client.fit

    def fit(parameters: list[np.ndarray], config: dict[str, Any]):
        if pid == RAISES and not small:
            raise RuntimeError(f"injected failure on client {pid}")
        if pid == SLOW and small and int(config.get(wire.SERVER_ROUND, 0)) == 2:
            time.sleep(SLOW_S)
        params, n, metrics = honest_fit(parameters, config)
        if pid == WRONG_SHAPES and not small:
            params = [np.zeros((3, *p.shape), p.dtype) for p in params]
        return params, n, metrics

    client.fit = fit  # type: ignore[method-assign]
    return client
