"""The app's own ClientApp: its train handler answers with fedprune's one-call helper."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from ext_app.task import loader, make_net
from fedprune_flwr.clients import fedprune_train

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    return fedprune_train(msg, make_net(), loader(pid, 300, shuffle=True), lr=0.01, client_id=pid)
