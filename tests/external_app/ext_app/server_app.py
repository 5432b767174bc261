"""The app's ServerApp: FedPrune used like any Flower strategy."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from ext_app.task import loader, make_net
from fedprune.training import evaluate
from fedprune_flwr.strategies import FedPrune, RoundRecorder

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rounds = int(context.run_config["num-server-rounds"])
    net, test = make_net(), loader(999, 600, shuffle=False)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy, _ = evaluate(net, test)
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    strategy = FedPrune(
        sparsity=0.8, fraction_train=1.0, min_train_clients=3, readjust_interval=1,
        recorder=RoundRecorder(str(context.run_config["results-dir"]), {"app": "ext"}, rounds),
    )
    strategy.start(grid=grid, initial_arrays=ArrayRecord(make_net().state_dict()),
                   num_rounds=rounds, evaluate_fn=evaluate_fn)
