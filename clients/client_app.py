"""The fedprune ClientApp: builds a :class:`FedPruneClient` and answers the server.

Run-wide settings come from ``context.run_config`` (the app's run-config),
the client's identity from ``context.node_config`` (``partition-id`` and
``num-partitions``, set by the simulation or by ``flower-supernode
--node-config``), which may also set the node's ``device`` (overriding the
run-config's) and its ``compute-budget`` (adaptive density; reported with
the client id). NumPyClient cannot talk to a Message-API strategy in Flower
1.41, so the handlers below call its ``fit`` / ``evaluate`` themselves.

Message handlers:

* ``train``: decode the payload (dense arrays, or the sparse encoding of
  :mod:`fedprune.codec`: then train only on the masks received), train,
  reply with the same encoding (sparse on the client's possibly readjusted
  masks) and ``metrics`` (``num-examples``, ``train-loss``, ``client-id``,
  ``noise-rate``, ``dst-moved``);
* ``evaluate``: evaluate the arrays on the local test split;
* ``query``: reply the client's stable id (its partition id), which the
  server uses for deterministic sampling and readable reports, and the
  client's scalar metrics (``noise-rate``), so every client's realised label
  noise is recorded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fedprune import codec, wire
from fedprune.attacks import attackers, flip_labels, malform
from fedprune.config import DEVICES, RunConfig
from fedprune.data import load_dataset
from fedprune.data.loader import TensorLoader, client_data
from fedprune.data.noise import noise_plan
from fedprune.models import model_from_config
from fedprune.seeds import derive_seed
from fedprune.training import TrainConfig, optimizer_settings, resolve_device, train_config_of

from .numpy_client import FedPruneClient

ClientFn = Callable[[Context], FedPruneClient]
# clients built by node_client, most recently used last: (run, node, configs) -> client
_BUILT: OrderedDict[tuple[Any, ...], tuple[FedPruneClient, list[TensorLoader]]] = OrderedDict()
KEEP_CLIENTS = 8  # a deployed node keeps its one client; a simulation worker its last 8


def node_identity(context: Context) -> tuple[int, int]:
    """(partition-id, num-partitions) from the node-config, with a clear error."""
    nc = context.node_config
    if "partition-id" not in nc or "num-partitions" not in nc:
        raise KeyError(
            "node-config lacks 'partition-id' / 'num-partitions'; start the SuperNode with "
            "--node-config \"partition-id=<i> num-partitions=<N>\" (the simulation sets both)"
        )
    return int(nc["partition-id"]), int(nc["num-partitions"])


def node_device(context: Context, cfg: RunConfig) -> str:
    """The node-config ``device`` (one GPU node among CPU ones), else run-config ``device``."""
    device = str(context.node_config.get("device", cfg.device))
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"node-config device must be one of {DEVICES} or cuda:<i>, got {device!r}")
    return device


def compute_budget(context: Context, cfg: RunConfig, pid: int) -> float:
    """The node-config ``compute-budget`` (a fraction in (0, 1] of a full client's
    sparse model it can train), else the run-config ``compute-budgets`` list by
    partition id, else 1."""
    if "compute-budget" in context.node_config:
        value = float(context.node_config["compute-budget"])
        if not 0.0 < value <= 1.0:
            raise ValueError(f"node-config compute-budget must be in (0, 1], got {value}")
        return value
    if cfg.compute_budgets:
        budgets = [float(b) for b in cfg.compute_budgets.split(",")]
        return budgets[pid % len(budgets)]
    return 1.0


def client_from_context(
    context: Context, overrides: Mapping[str, Any] | None = None
) -> FedPruneClient:
    """Build this node's client from the run-config (plus ``overrides``) and node-config."""
    cfg = RunConfig.from_mapping({**context.run_config, **(overrides or {})})
    pid, num_partitions = node_identity(context)
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    plan = noise_plan(
        num_partitions, cfg.noise_type, cfg.noise_fraction, cfg.noise_rate_min,
        cfg.noise_rate_max, cfg.seed,
    )
    local = client_data(
        data, cfg.partition_spec(num_partitions), pid, test_fraction=cfg.test_fraction,
        local_test=cfg.local_test,
        noise=plan, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
        seed=cfg.seed, max_train=cfg.max_client_samples,
    )
    # every client reports the same metric keys (Flower's strategies refuse to aggregate
    # MetricRecords whose keys differ)
    metrics = {wire.CLIENT_ID: pid, wire.NOISE_RATE: local.noise_rate, wire.ATTACKER: 0,
               wire.COMPUTE_BUDGET: compute_budget(context, cfg, pid)}
    attack = "none"
    if cfg.attack != "none" and pid in attackers(num_partitions, cfg.attack_fraction, cfg.seed):
        metrics[wire.ATTACKER] = 1
        if cfg.attack == "label-flip":
            local.train.y = torch.from_numpy(flip_labels(local.train.y.numpy(), data.num_classes))
        else:
            attack = cfg.attack
    model = model_from_config(cfg, data.input_shape, data.num_classes)
    return FedPruneClient(
        model, local.train, local.test,
        train_config=train_config_of(cfg),
        device=resolve_device(node_device(context, cfg)),
        seed=derive_seed(cfg.seed, pid),
        metrics=metrics,
        # the seeded initial weights, identical to the server's (LotteryFL's rewinding)
        initial_state={k: v.detach().clone() for k, v in model.state_dict().items()},
        input_shape=data.input_shape,
        attack=attack, attack_scale=cfg.attack_scale,
    )


def node_client(context: Context, overrides: Mapping[str, Any] | None = None) -> FedPruneClient:
    """This node's client, built once (:func:`client_from_context`) and kept for the
    run's later messages. Every message gets it as a fresh build would be: masks
    cleared, and its loaders' batch orders started over (a client built per message
    would start them at the same seed). At most :data:`KEEP_CLIENTS` are kept per
    process (a simulation worker serves many nodes). ``overrides`` as in
    :func:`client_from_context`."""
    key = (context.run_id, context.node_id, repr(sorted(context.run_config.items())),
           repr(sorted(context.node_config.items())), repr(sorted((overrides or {}).items())))
    if key in _BUILT:
        _BUILT.move_to_end(key)
        client, loaders = _BUILT[key]
    else:
        client = client_from_context(context, overrides)
        loaders = [x for x in (client.trainloader, client.testloader)
                   if isinstance(x, TensorLoader)]
        _BUILT[key] = (client, loaders)
        while len(_BUILT) > KEEP_CLIENTS:
            _BUILT.popitem(last=False)
    for loader in loaders:
        loader.restart()
    client.masks = {}
    return client


def _config(msg: Message) -> dict[str, Any]:
    rec = msg.content.config_records.get(wire.CONFIG)
    return dict(rec) if rec is not None else {}


def _arrays(msg: Message) -> ArrayRecord:
    rec = msg.content.array_records.get(wire.ARRAYS)
    if rec is None:
        raise KeyError(f"message has no ArrayRecord {wire.ARRAYS!r}")
    return rec


def load_payload(record: ArrayRecord, client: FedPruneClient) -> list[np.ndarray]:
    """Decode the server's payload for ``client``: dense arrays in ``state_dict()``
    order; the masks of the sparse tensors go to ``client.masks`` (none = dense)."""
    shapes = {k: tuple(v.shape) for k, v in client.model.state_dict().items()}
    state, masks = codec.decode_state({k: v.numpy() for k, v in record.items()}, shapes)
    client.masks = {k: torch.from_numpy(m) for k, m in masks.items()}
    return [state[k] for k in client._keys]


def reply_record(
    client: FedPruneClient, params: list[np.ndarray], metrics: dict[str, Any], n: int,
    value_dtype: str = "float32",
) -> RecordDict:
    """Reply content: the trained model, encoded sparse on the client's masks
    (only the kept values, the packed masks and the dense non-prunable tensors;
    float values as ``value_dtype``), and the metrics."""
    state = dict(zip(client._keys, params, strict=True))
    masks = {k: m.detach().cpu().bool().numpy() for k, m in client.masks.items()}
    trainable = getattr(client, "trainable", None)
    if trainable is not None:  # partial training (FedBT): upload the trained tensors only
        keep = set(trainable)
        state = {k: v for k, v in state.items() if k in keep}
        masks = {k: m for k, m in masks.items() if k in state}
    payload = codec.encode_state(state, masks, value_dtype)
    for k, g in client.sq_grads.items():  # PruneFL reconfiguration rounds only
        payload[k + wire.SQGRAD_SUFFIX] = g.detach().cpu().numpy().astype(np.float32)
    if client.votes:  # server-side readjustment rounds only: the growth votes, sparse
        payload.update(codec.encode_state(
            {k + wire.GROW_SUFFIX: g.numpy() for k, (_, g) in client.votes.items()},
            {k + wire.GROW_SUFFIX: v.numpy() for k, (v, _) in client.votes.items()}, value_dtype))
    if client.attack == "malformed":  # a client that breaks the wire contract on purpose
        payload, n = malform(payload, n)
    arrays = ArrayRecord({k: Array(v) for k, v in payload.items()})
    return RecordDict(
        {wire.ARRAYS: arrays, wire.METRICS: MetricRecord({**metrics, wire.NUM_EXAMPLES: n})}
    )


def train_reply(client: FedPruneClient, msg: Message) -> Message:
    """``client``'s answer to a train message: decode the payload (its masks go to the
    client), train by the config's plan, reply in the same encoding."""
    config = _config(msg)
    params, n, metrics = client.fit(load_payload(_arrays(msg), client), config)
    dtype = str(config.get(wire.VALUE_DTYPE, "float32"))  # the server's codec-dtype
    return Message(reply_record(client, params, metrics, n, dtype), reply_to=msg)


def evaluate_reply(client: FedPruneClient, msg: Message) -> Message:
    """``client``'s answer to an evaluate message: loss and accuracy on its test data."""
    loss, n, metrics = client.evaluate(load_payload(_arrays(msg), client), _config(msg))
    content = RecordDict(
        {wire.METRICS: MetricRecord({**metrics, "loss": loss, wire.NUM_EXAMPLES: n})})
    return Message(content, reply_to=msg)


def _helper_client(model: nn.Module, trainloader: Any, testloader: Any, device: str,
                   client_id: int | None, seed: int, config: TrainConfig) -> FedPruneClient:
    metrics: dict[str, int | float] = {} if client_id is None else {wire.CLIENT_ID: int(client_id)}
    return FedPruneClient(model, trainloader, testloader, train_config=config, device=device,
                          seed=derive_seed(seed, client_id) if client_id is not None else seed,
                          metrics=metrics)


def fedprune_train(msg: Message, model: nn.Module, trainloader: Any, *, epochs: int = 1,
                   lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                   optimizer: str = "sgd", device: str = "cpu", client_id: int | None = None,
                   seed: int = 0) -> Message:
    """Answer a FedPrune (or any fedprune strategy's) train message from your own
    ``@app.train()`` handler: ``return fedprune_train(msg, model, trainloader, lr=0.05)``.

    ``model`` is your ``nn.Module`` (the server's arrays are loaded into it), and
    ``trainloader`` any iterable of ``(x, y)`` batches. The model is trained on the
    masks the server sent (weights outside them stay 0), readjusts them when the
    round asks for it, and the reply carries only the values on its masks. The
    server's train config overrides ``epochs`` and ``lr`` where it sets them.
    ``client_id`` (for example the node-config ``partition-id``) becomes the node's
    stable id at the server and seeds local training; without it the node is known by
    its Flower node id.
    """
    config = TrainConfig(epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         **optimizer_settings(optimizer))
    client = _helper_client(model, trainloader, None, device, client_id, seed, config)
    return train_reply(client, msg)


def fedprune_evaluate(msg: Message, model: nn.Module, testloader: Any, *, device: str = "cpu",
                      client_id: int | None = None) -> Message:
    """Answer an evaluate message from your own ``@app.evaluate()`` handler: loss and
    accuracy of the server's model on ``testloader`` (only needed when the strategy
    samples clients for evaluation, ``fraction_evaluate`` > 0)."""
    client = _helper_client(model, (), testloader, device, client_id, 0, TrainConfig())
    return evaluate_reply(client, msg)


def make_client_app(client_fn: ClientFn = node_client) -> ClientApp:
    """A ClientApp whose handlers drive the client that ``client_fn`` returns
    (by default this node's client, built once: :func:`node_client`).

    Other Flower apps pass their own ``client_fn(context) -> FedPruneClient``
    (their model and data loaders), called for every message, and get the same
    message handling.
    """
    capp = ClientApp()

    @capp.train()
    def _train(msg: Message, context: Context) -> Message:
        return train_reply(client_fn(context), msg)

    @capp.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        return evaluate_reply(client_fn(context), msg)

    @capp.query()
    def _query(msg: Message, context: Context) -> Message:
        pid, num = node_identity(context)
        # the client's own scalars too (e.g. its realised noise rate), so the server
        # knows every client, also those never sampled for training
        scalars = {k: v for k, v in client_fn(context).metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        content = RecordDict(
            {wire.METRICS: MetricRecord({**scalars, wire.CLIENT_ID: pid, "num-partitions": num}),
             wire.CONFIG: ConfigRecord({"app": "fedprune"})}
        )
        return Message(content, reply_to=msg)

    return capp


app = make_client_app()
