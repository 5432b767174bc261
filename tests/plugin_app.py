"""A stand-in for another team's Flower app: its own model and data loaders,
our FedPrune strategy and client helper (the README's plug-in example)."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch.utils.data import DataLoader, TensorDataset

from fedprune.training import evaluate
from fedprune_flwr.clients import fedprune_train
from fedprune_flwr.strategies.fedprune import FedPrune
from fedprune_flwr.strategies.results import RoundRecorder


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))


def make_data(seed: int, n: int = 256) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = (x[:, :4].argmax(1)).long()  # a learnable synthetic task
    return TensorDataset(x, y)


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    data = DataLoader(make_data(pid), batch_size=32, shuffle=True,
                      generator=torch.Generator().manual_seed(pid))
    return fedprune_train(msg, make_model(), data, lr=0.05, client_id=pid)


def server_app(results_dir: str, num_rounds: int = 2) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        model = make_model()
        test = DataLoader(make_data(999, 512), batch_size=256)

        def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, acc, _ = evaluate(model, test)
            return MetricRecord({"accuracy": acc, "loss": loss})

        strategy = FedPrune(
            sparsity=0.7, readjust_interval=1, fraction_train=1.0, min_train_clients=3,
            recorder=RoundRecorder(results_dir, {"app": "plugin"}, num_rounds),  # optional
        )
        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                       num_rounds=num_rounds, evaluate_fn=evaluate_fn)

    return app
