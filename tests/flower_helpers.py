"""Helpers for testing strategies without Ray: fake replies and a fake Grid."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedprune import wire


def set_task_identity() -> None:  # noqa: D103
    """Replies are built with ``reply_to``, which needs a run id (private Flower API)."""
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0
    TaskIdentity.task_id = 1


def reply(node: int, arrays: dict | None = None, metrics: dict | None = None,
          error: str | None = None, mtype: str = MessageType.TRAIN, rnd: int = 1) -> Message:
    """A reply from ``node`` to the training message of round ``rnd``, as the strategy
    would receive it."""
    set_task_identity()
    original = Message(RecordDict(), dst_node_id=node, message_type=mtype, group_id=str(rnd))
    if error is not None:
        return Message(Error(code=1, reason=error), reply_to=original)
    content = {}
    if arrays is not None:
        content[wire.ARRAYS] = ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})
    if metrics is not None:
        content[wire.METRICS] = MetricRecord(metrics)
    return Message(RecordDict(content), reply_to=original)


class FakeGrid:
    """Nodes 100+i answer the client-id query with i (odd ones report noise 0.5)."""

    def __init__(self, n: int, silent: tuple[int, ...] = ()) -> None:
        self.nodes = [100 + i for i in range(n)]
        self.silent = silent
        self.queries = 0

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, timeout=None):
        out = []
        for m in messages:
            assert m.metadata.message_type == MessageType.QUERY
            self.queries += 1
            nid = m.metadata.dst_node_id
            if nid - 100 in self.silent:
                out.append(reply(nid, error="no query handler", mtype=MessageType.QUERY))
            else:
                out.append(reply(nid, metrics={wire.CLIENT_ID: nid - 100,
                                               wire.NOISE_RATE: 0.5 * ((nid - 100) % 2)},
                                 mtype=MessageType.QUERY))
        return out


def config() -> ConfigRecord:
    return ConfigRecord({"lr": 0.01})


# Strategies build Messages, which need a run id outside a real ServerApp.
set_task_identity()
