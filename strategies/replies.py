"""The validation boundary: every training reply of every strategy crosses it, once.

:func:`check_replies` turns a round's reply Messages into typed
:class:`Reply` objects and a reason for every one it refuses. Nothing after
it reads client data that it has not checked, so aggregation cannot fail on
a malformed reply. It checks, in order:

1. **The message against what the server sent this round:** no client error;
   message type ``train``; the sender was sent training work this round; the
   reply names this round (``group_id``, which every training message the
   strategies send carries); one reply per node.
2. **The records:** exactly one ArrayRecord ``arrays`` and one MetricRecord
   ``metrics``, nothing else.
3. **Every Array, defensively** (:func:`fedprune.wire.decode_npy`): ``.npy``
   header parsed before anything is allocated; data length equal to shape x
   item size; dtype one of :data:`fedprune.wire.WIRE_DTYPES` (no objects, no
   byte-swapped or structured dtypes); the metadata's dtype and shape equal
   the data's.
4. **The metrics** (:func:`fedprune.wire.check_metrics`): every value a finite
   number, the known ones in range; ``num-examples`` a positive integer at most
   the cap (:func:`fedprune.wire.check_num_examples`); ``client-id``, when
   sent, the id the node registered with.
5. **The payload**, by the strategy's own check (``payload``): keys, shapes
   and dtypes against the model, codec positions (strictly increasing, in
   range, as many as values), mask budgets, finite values.

Any exception a check raises on client data, expected or not, refuses that
reply only (an unexpected one is logged with its traceback).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Mapping
from logging import ERROR
from typing import Any

import numpy as np
from flwr.app import Message, MessageType
from flwr.common.logger import log

from fedprune import wire

#: (arrays, node) -> the strategy's decoded payload; raises on a bad one
PayloadCheck = Callable[[dict[str, np.ndarray], int], Any]


class Reply:
    """A validated training reply: client id, node, decoded payload, example count,
    metrics (checked numbers), and the message it came in."""

    __slots__ = ("client", "node", "payload", "num_examples", "metrics", "message")

    def __init__(
        self, client: int, node: int, payload: Any, num_examples: int,
        metrics: dict[str, int | float], message: Message | None = None,
    ) -> None:
        self.client, self.node, self.payload = client, node, payload
        self.num_examples, self.metrics, self.message = num_examples, metrics, message


def read_arrays(msg: Message) -> dict[str, np.ndarray]:
    """The reply's ``arrays`` record, every Array decoded by :func:`wire.decode_npy`."""
    rec = msg.content.array_records[wire.ARRAYS]
    out = {}
    for name, arr in rec.items():
        if arr.stype != "numpy.ndarray":
            raise wire.InvalidUpdate(f"{name}: serialization {arr.stype!r}, expected numpy.ndarray")
        try:
            out[name] = wire.decode_npy(arr.data, arr.dtype, arr.shape)
        except wire.InvalidUpdate as exc:
            raise wire.InvalidUpdate(f"{name}: {exc}") from None
    return out


def received_bytes(msg: Message) -> int:
    """Array bytes a reply carried: element count x item size of every array, as the
    results count them, but never more than the data that actually arrived (a
    false shape in an Array's metadata cannot inflate the count)."""
    if msg.has_error():
        return 0
    total = 0
    for rec in msg.content.array_records.values():
        for arr in rec.values():
            real = len(arr.data)
            try:
                claimed = math.prod(int(d) for d in arr.shape) * np.dtype(arr.dtype).itemsize
            except Exception:  # noqa: BLE001 - metadata that is not a shape or a dtype
                claimed = real
            total += real if claimed < 0 else min(claimed, real)
    return total


def screen(
    msg: Message, server_round: int, *, sent: set[int], client_of: Mapping[int, int], cap: int = 0,
    unchecked_ids: Container[int] = (),
) -> tuple[dict[str, np.ndarray], int, dict[str, int | float]]:
    """Steps 1-4 of the module docstring for one reply: (arrays, num-examples, metrics).
    ``unchecked_ids``: nodes known by their node id, whose reported client-id is theirs
    to state (:meth:`strategies.common.ClientDirectory.adopt`).

    Raises
    ------
    fedprune.wire.InvalidUpdate
        With the reason the reply is refused.
    """
    if msg.has_error():
        raise wire.InvalidUpdate(f"client error: {msg.error.reason}")
    meta = msg.metadata
    if meta.message_type != MessageType.TRAIN:
        raise wire.InvalidUpdate(f"message type {meta.message_type!r} in reply to training")
    if meta.src_node_id not in sent:
        raise wire.InvalidUpdate("reply from a node that was not sent training work this round")
    if meta.group_id != str(server_round):
        raise wire.InvalidUpdate(f"reply to round {meta.group_id!r}, this is round {server_round}")
    content = msg.content
    if set(content.array_records) != {wire.ARRAYS} or set(content.metric_records) != {wire.METRICS} \
            or content.config_records:
        raise wire.InvalidUpdate(
            f"reply must hold exactly the {wire.ARRAYS!r} ArrayRecord and the {wire.METRICS!r} "
            f"MetricRecord, got arrays {sorted(content.array_records)}, metrics "
            f"{sorted(content.metric_records)}, configs {sorted(content.config_records)}")
    met = dict(content.metric_records[wire.METRICS])
    n = wire.check_num_examples(met.pop(wire.NUM_EXAMPLES, None), cap)
    metrics = wire.check_metrics(met)
    cid = client_of.get(meta.src_node_id)
    if wire.CLIENT_ID in metrics and cid is not None and metrics[wire.CLIENT_ID] != cid \
            and meta.src_node_id not in unchecked_ids:
        raise wire.InvalidUpdate(f"reply says client id {metrics[wire.CLIENT_ID]}, the node "
                                 f"registered as client {cid}")
    arrays = read_arrays(msg)
    metrics[wire.NUM_EXAMPLES] = n
    return arrays, n, metrics


def most_common(keysets: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The metric key set most replies share (ties: the first in sorted order), which a
    minority of replies cannot choose."""
    return max(sorted(set(keysets)), key=keysets.count)


def check_replies(
    replies: Iterable[Message], server_round: int, *, sent: set[int], client_of: Mapping[int, int],
    payload: PayloadCheck, cap: int = 0, same_metric_keys: bool = False,
    unchecked_ids: Container[int] = (),
) -> tuple[list[Reply], dict[int, str]]:
    """The boundary for one round: (valid replies in client order, node -> reason refused).

    ``payload`` is the strategy's check of the decoded arrays (step 5).
    ``same_metric_keys``: also refuse replies whose metric keys differ from the
    most common key set of the round (Flower's strategies average every metric
    and fail on records whose keys differ).
    """
    accepted: list[Reply] = []
    rejected: dict[int, str] = {}
    seen: set[int] = set()
    for msg in replies:
        node = msg.metadata.src_node_id
        try:
            if node in seen:
                raise wire.InvalidUpdate("duplicate reply from the same node this round")
            seen.add(node)
            arrays, n, metrics = screen(msg, server_round, sent=sent, client_of=client_of, cap=cap,
                                        unchecked_ids=unchecked_ids)
            decoded = payload(arrays, node)
        except wire.InvalidUpdate as exc:
            rejected[node] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a check that failed on client data
            log(ERROR, "round %d: unexpected %s while checking the reply of node %d",
                server_round, type(exc).__name__, node, exc_info=True)
            rejected[node] = f"unusable reply ({type(exc).__name__}: {exc})"
            continue
        accepted.append(Reply(client_of.get(node, -1), node, decoded, n, metrics, msg))
    if same_metric_keys and accepted:
        keysets = [tuple(sorted(r.metrics)) for r in accepted]
        common = most_common(keysets)
        for r, keys in zip(list(accepted), keysets, strict=True):
            if keys != common:
                rejected[r.node] = f"metric keys {list(keys)} differ from the round's {list(common)}"
                accepted.remove(r)
    # replies arrive in any order; aggregating in client order makes float sums,
    # and so the whole run, reproducible
    return sorted(accepted, key=lambda r: (r.client, r.node)), rejected
