"""The app's ClientApp: fedprune's client helper around the app's own model and data."""

from __future__ import annotations

from flwr.app import Context

from ext_app.task import loader, make_net
from fedprune_flwr.clients import FedPruneClient
from fedprune_flwr.clients.client_app import make_client_app


def client_fn(context: Context) -> FedPruneClient:
    pid = int(context.node_config["partition-id"])
    return FedPruneClient(make_net(), loader(pid, 300, shuffle=True),
                          loader(1000 + pid, 100, shuffle=False), metrics={"client-id": pid})


app = make_client_app(client_fn)
