"""Run the whole app through Flower's in-process Simulation Engine (Ray).

Used by the tests and the benchmarks. In-process simulations receive an empty
run-config from Flower, so the settings travel as ``overrides`` to both the
ServerApp and the ClientApp. Set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
before calling (the tests' conftest and the benchmarks do).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.simulation import run_simulation

from fedprune_flwr.clients.client_app import make_client_app, node_client
from fedprune_flwr.strategies.server_app import make_server_app

BACKEND = {
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    "init_args": {"num_cpus": 2, "num_gpus": 0, "include_dashboard": False},
}


def simulate(
    num_supernodes: int, overrides: dict[str, Any], results_dir: Path,
    client_fn: Callable[..., Any] = node_client,
    client_resources: dict[str, float] | None = None,
    num_cpus: int | None = None,
) -> dict:
    """Run the app with ``overrides`` on top of the defaults; return its results.json.

    ``client_fn(context, overrides=...)`` builds each client (tests pass faulty ones).
    ``client_resources`` (``{"num_cpus", "num_gpus"}``) are each ClientApp's Ray
    resources; with ``num_gpus`` > 0 Ray sees the machine's GPUs, and as many
    clients run at once as fit (0.25 GPU: four per GPU). Set run-config
    ``device`` to ``cuda`` or ``auto`` for them to train there. ``num_cpus`` is
    the CPUs Ray may use (default 2).
    """
    results_dir = Path(results_dir).resolve()
    ov = {**overrides, "results-dir": str(results_dir)}
    backend = {**BACKEND, "client_resources": {**BACKEND["client_resources"],
                                               **(client_resources or {})}}
    if backend["client_resources"]["num_gpus"] > 0:  # let Ray find the GPUs
        backend["init_args"] = {k: v for k, v in BACKEND["init_args"].items() if k != "num_gpus"}
    if num_cpus is not None:
        backend["init_args"] = {**backend["init_args"], "num_cpus": num_cpus}
    run_simulation(
        server_app=make_server_app(ov),
        client_app=make_client_app(functools.partial(client_fn, overrides=ov)),
        num_supernodes=num_supernodes,
        backend_config=backend,
    )
    return json.loads((results_dir / "results.json").read_text())
