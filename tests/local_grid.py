"""Run a ServerApp and its ClientApps in this one process, without Ray.

Flower's Simulation Engine starts Ray actors for every simulation; on a small CPU
machine that costs 10-15 s per run before the first client trains (worker start,
torch, flwr and Flower Datasets imports in every actor). The tests that check
what each *method* does over two rounds do not need that transport, so they run
here: :class:`LocalGrid` hands every message to the ClientApp in-process, one at
a time, and the transport itself stays covered by the Ray tests
(``test_simulation.py``, ``test_fedprune_simulation.py``, ``test_faults.py``).

Like the Simulation Engine, it gives every node a Context with ``partition-id``
and ``num-partitions`` and keeps that Context (its ``state``) across rounds,
assigns message ids, turns a ClientApp exception into an error reply, and sends
every message through Flower's protobuf serialisation in both directions, so the
server and the clients never share an object. Messages are built with the
private ``TaskIdentity`` (as ``flower_helpers.py`` does): Flower sets it in the
ServerApp and ClientApp processes, and here both sides share one process.
"""

from __future__ import annotations

import functools
import json
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedprune_flwr.clients.client_app import make_client_app, node_client
from fedprune_flwr.strategies.server_app import make_server_app

RUN_ID = 7


def _copy(message: Message) -> Message:
    """The message as the other side receives it: serialised and parsed again."""
    return message_from_proto(message_to_proto(message))


class LocalGrid(Grid):
    """``num_supernodes`` nodes with seeded random node ids, served in this process."""

    def __init__(self, client_app: ClientApp, num_supernodes: int, seed: int = 0) -> None:
        rng = random.Random(seed)
        ids: list[int] = []
        while len(ids) < num_supernodes:  # random 63-bit ids, as a SuperLink gives
            nid = rng.getrandbits(63)
            if nid not in ids and nid != SUPERLINK_NODE_ID:
                ids.append(nid)
        self.client_app = client_app
        self.contexts = {
            nid: Context(run_id=RUN_ID, node_id=nid, state=RecordDict(), run_config={},
                         node_config={"partition-id": pid, "num-partitions": num_supernodes})
            for pid, nid in enumerate(ids)
        }
        self._run = Run.create_empty(RUN_ID)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:  # noqa: D102
        self._run = run

    @property
    def run(self) -> Run:  # noqa: D102
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:  # noqa: D102
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.contexts)

    def _serve(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        if node not in self.contexts:
            raise ValueError(f"message for unknown node {node}")
        TaskIdentity.node_id = node
        try:
            reply = self.client_app(_copy(message), self.contexts[node])
        except Exception as ex:  # the Simulation Engine's reply to a raising ClientApp
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                  reason=f"{type(ex)}:<'{ex}'>"), reply_to=message)
        finally:
            TaskIdentity.node_id = SUPERLINK_NODE_ID
        reply = _copy(reply)
        reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return reply

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            ids.append(m.metadata.message_id)
            self._replies[m.metadata.message_id] = self._serve(m)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:  # noqa: D102
        return self.pull_messages(self.push_messages(messages))


def run_local(server_app: ServerApp, client_app: ClientApp, num_supernodes: int,
              seed: int = 0) -> LocalGrid:
    """Run ``server_app`` to the end against ``num_supernodes`` in-process nodes."""
    TaskIdentity.run_id = RUN_ID
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    grid = LocalGrid(client_app, num_supernodes, seed)
    server_app(grid, Context(run_id=RUN_ID, node_id=SUPERLINK_NODE_ID, node_config={},
                             state=RecordDict(), run_config={}))
    return grid


def simulate_local(num_supernodes: int, overrides: Mapping[str, Any], results_dir: Path,
                   client_fn: Callable[..., Any] = node_client) -> dict:
    """:func:`fedprune_lab.simulation.simulate` without Ray; returns the run's results.json."""
    results_dir = Path(results_dir).resolve()
    ov = {**overrides, "results-dir": str(results_dir)}
    run_local(make_server_app(ov),
              make_client_app(functools.partial(client_fn, overrides=ov)), num_supernodes)
    return json.loads((results_dir / "results.json").read_text())
