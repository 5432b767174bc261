"""Pieces every fedprune strategy shares: byte accounting, client directory, sampling.

* :func:`payload_bytes` counts the array bytes a message carries.
* :class:`RecordingMixin` wraps any Message-API strategy (ours or Flower's):
  every training reply crosses the validation boundary
  (:func:`strategies.replies.check_replies`) before the strategy's
  ``aggregate_replies`` sees it, and each round's bytes, replies and
  centralized metrics land in a :class:`~strategies.results.RoundRecorder`.
  It wraps ``start`` rather than copying it; a
  :class:`~strategies.checkpoints.Checkpointer`, when the ServerApp arms one,
  writes the server state from there.
* :class:`ClientDirectory` learns each node's stable client id (its
  ``partition-id``) with one ``query`` message per new node, so sampling can
  be seeded: Flower's node ids are random per run, the client ids are not.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from fedprune import wire

from .checkpoints import Checkpointer
from .replies import Reply, check_replies, most_common, received_bytes
from .results import RoundRecorder

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
NO_REPLY = "no reply within round-timeout (timed out or dropped out)"


def wire_bytes(msg: Message) -> int:
    """Bytes of ``msg`` as Flower serialises it for the Fleet API (its protobuf
    ``Message``: metadata, every record, array data; without gRPC's framing)."""
    return message_to_proto(msg).ByteSize()


def payload_bytes(content: RecordDict) -> int:
    """Array payload bytes of a message: element count x item size of every array."""
    total = 0
    for rec in content.array_records.values():
        for arr in rec.values():
            total += int(np.prod(arr.shape, dtype=np.int64)) * np.dtype(arr.dtype).itemsize
    return total


class RecordingMixin:
    """The validation boundary and per-round accounting of a Message-API strategy (put
    it first in the bases; the strategy provides ``directory``, ``decode_payload``,
    ``required_replies`` and ``aggregate_replies``).

    Records ``bytes_down`` (every message ``configure_train`` builds),
    ``bytes_up`` (what every reply carried, counted from the data that arrived),
    ``wire_bytes_down`` / ``wire_bytes_up`` (the same messages serialised as Flower
    sends them: :func:`wire_bytes`),
    ``clients`` (accepted replies) and ``rejected`` (client -> reason),
    ``client_flops`` and ``dense_client_flops`` (the training FLOPs the accepted
    clients report, under their masks and dense), ``aggregate_s`` (server time in
    ``aggregate_train``), the clients' reported noise rates, and the
    centralized metrics that ``evaluate_fn`` returns.
    """

    recorder: RoundRecorder
    # rounds already done before this process started (a resumed checkpoint)
    round_offset: int = 0
    # writes the server state every few rounds (strategies.checkpoints; set by the ServerApp)
    checkpointer: Checkpointer | None = None
    latest: ArrayRecord | None = None  # the newest global arrays
    _total_rounds: int = 0
    # (min-replies, retries, seed): retry rounds with too few replies (see RetryingGrid)
    retry_policy: tuple[int, int, int] | None = None
    _sent_nodes: set[int] = set()  # nodes that got this round's training messages
    # num-examples cap (num_examples_cap): run-config max-num-examples, else the largest
    # training partition for a number of partitions (set by the ServerApp)
    max_num_examples: int = 0
    partition_cap: Callable[[int], int] | None = None
    # refuse replies whose metric keys differ from the round's (Flower's strategies need it)
    uniform_metrics: bool = False

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        self.latest = arrays
        self.recorder.start_round(server_round)
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        directory = getattr(self, "directory", None)
        if directory is not None:  # every known client's noise rate, sampled or not
            for cid, info in directory.reported.items():
                if wire.NOISE_RATE in info:
                    self.recorder.note_noise(cid, info[wire.NOISE_RATE])
        self.recorder.add(server_round, bytes_down=sum(payload_bytes(m.content) for m in messages))
        for m in messages:  # the round travels in group_id; the replies carry it back
            m.metadata.group_id = str(server_round)
        self.recorder.add(server_round, wire_bytes_down=sum(wire_bytes(m) for m in messages))
        self._sent_nodes = {m.metadata.dst_node_id for m in messages}
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The validation boundary (:func:`strategies.replies.check_replies`), the round's
        accounting, then the strategy's ``aggregate_replies`` on the valid replies;
        an exception there is isolated to the reply that caused it
        (:meth:`_aggregate_isolated`)."""
        server_round += self.round_offset
        replies = list(replies)
        directory: ClientDirectory = self.directory  # type: ignore[attr-defined]
        sent, self._sent_nodes = self._sent_nodes, set()
        missing = sent - {r.metadata.src_node_id for r in replies}
        if missing:  # sent work, got nothing back within round-timeout
            who = {str(directory.client_of.get(n, n)): NO_REPLY for n in sorted(missing)}
            for c in who:
                log(WARNING, "round %d: client %s: %s", server_round, c, NO_REPLY)
            self.recorder.add(server_round, rejected=who)
        self.recorder.add(server_round, bytes_up=sum(received_bytes(r) for r in replies),
                          wire_bytes_up=sum(wire_bytes(r) for r in replies))
        ok, refused = check_replies(
            replies, server_round, sent=sent, client_of=directory.client_of,
            payload=self.decode_payload,  # type: ignore[attr-defined]
            cap=self.num_examples_cap(), same_metric_keys=self.uniform_metrics,
            unchecked_ids=directory.by_node_id)
        if directory.by_node_id:
            ok = directory.adopt(ok)
        rejected: dict[str, str] = {}
        for node, why in refused.items():
            who = self.directory.label(node)  # type: ignore[attr-defined]
            log(WARNING, "round %d: rejected reply of client %s: %s", server_round, who, why)
            rejected[who if who not in rejected else f"{who}#{len(rejected)}"] = why
        self.recorder.add(server_round, clients=len(ok), rejected=rejected)
        flops = {wire.TRAIN_FLOPS: 0.0, wire.DENSE_FLOPS: 0.0}
        for r in ok:  # metrics are checked numbers now
            if wire.CLIENT_ID in r.metrics and wire.NOISE_RATE in r.metrics:
                self.recorder.note_noise(int(r.metrics[wire.CLIENT_ID]),
                                         float(r.metrics[wire.NOISE_RATE]))
            for k in flops:
                flops[k] += float(r.metrics.get(k, 0.0))
        if flops[wire.DENSE_FLOPS] > 0:  # the work the accepted clients did
            self.recorder.add(server_round, client_flops=flops[wire.TRAIN_FLOPS],
                              dense_client_flops=flops[wire.DENSE_FLOPS])
        if len(ok) < self.required_replies(server_round):  # type: ignore[attr-defined]
            log(WARNING, "round %d: %d valid replies, fewer than min-replies %d: round skipped, "
                "the model is unchanged", server_round, len(ok),
                self.required_replies(server_round))  # type: ignore[attr-defined]
            self.recorder.add(server_round, skipped=True)
            return None, None
        t0 = time.perf_counter()
        out = self._aggregate_isolated(server_round, ok)
        self.recorder.add(server_round, aggregate_s=round(time.perf_counter() - t0, 4))
        if out[0] is not None:
            self.latest = out[0]
        return out

    def num_examples_cap(self) -> int:
        """The most ``num-examples`` a reply may claim (0 = no cap): run-config
        ``max-num-examples`` when set, else ``partition_cap`` of the number of
        partitions most nodes registered with (the largest training partition of
        the run, which the ServerApp computes from the run-config)."""
        if self.max_num_examples > 0:
            return self.max_num_examples
        if self.partition_cap is None:
            return 0
        counts = [int(v["num-partitions"]) for v in self.directory.reported.values()  # type: ignore[attr-defined]
                  if "num-partitions" in v]
        if not counts:
            return 0
        return self.partition_cap(max(sorted(set(counts)), key=counts.count))

    def set_sent_nodes(self, nodes: Iterable[int]) -> None:
        """The nodes this round's training work went to (RetryingGrid, after a retry): the
        boundary accepts replies from these only, and reports the others missing."""
        self._sent_nodes = set(nodes)

    def reply_problem(self, msg: Message, server_round: int) -> str | None:
        """Why the boundary would refuse this training reply, or None (RetryingGrid)."""
        directory: ClientDirectory = self.directory  # type: ignore[attr-defined]
        _, refused = check_replies(
            [msg], server_round, sent=self._sent_nodes, client_of=directory.client_of,
            payload=self.decode_payload, cap=self.num_examples_cap(),  # type: ignore[attr-defined]
            unchecked_ids=directory.by_node_id)
        return next(iter(refused.values()), None)

    def _aggregate_isolated(
        self, server_round: int, ok: list[Reply]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``aggregate_replies``, and if it raises (which the boundary should make
        impossible), the same again from the state before the round with each
        reply left out in turn: the first that succeeds rejects the reply it left
        out (logged with the exception). If none does, the failure is the
        server's own, not one reply's: the state is put back and it is raised."""
        state = self._round_state(server_round)
        try:
            return self.aggregate_replies(server_round, ok)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - isolate it, do not end the run
            log(ERROR, "round %d: aggregation failed (%s: %s); retrying without each reply",
                server_round, type(exc).__name__, exc, exc_info=True)
            why = f"aggregation failed with this reply ({type(exc).__name__}: {exc})"
            failure = exc
        for r in ok:
            rest = [x for x in ok if x is not r]
            if len(rest) < self.required_replies(server_round):  # type: ignore[attr-defined]
                break
            self._restore_round_state(server_round, state)
            try:
                out = self.aggregate_replies(server_round, rest)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001
                continue
            who = self.directory.label(r.node)  # type: ignore[attr-defined]
            log(WARNING, "round %d: rejected reply of client %s: %s", server_round, who, why)
            self.recorder.add(server_round, clients=len(rest), rejected={who: why})
            return out
        self._restore_round_state(server_round, state)
        raise failure

    def _round_state(self, server_round: int) -> tuple[Any, Any]:
        """A deep copy of what ``aggregate_replies`` may change: the strategy's
        checkpoint state (``extra_state``) and the round's results entry."""
        extra = getattr(self, "extra_state", None)
        return (copy.deepcopy(extra()) if extra is not None else None,
                copy.deepcopy(self.recorder.rounds.get(server_round)))

    def _restore_round_state(self, server_round: int, state: tuple[Any, Any]) -> None:
        extra, entry = state
        if extra is not None:
            self.load_extra_state(*copy.deepcopy(extra))  # type: ignore[attr-defined]
        if entry is not None:
            self.recorder.rounds[server_round] = copy.deepcopy(entry)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return super().configure_evaluate(  # type: ignore[misc]
            server_round + self.round_offset, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        server_round += self.round_offset
        # only usable replies reach the strategy (Flower's would raise on the others)
        usable = usable_evaluations(replies, self.directory.label)  # type: ignore[attr-defined]
        if self.uniform_metrics and usable:
            keysets = [tuple(sorted(m.content.metric_records[wire.METRICS])) for m in usable]
            common = most_common(keysets)
            usable = [m for m, k in zip(usable, keysets, strict=True) if k == common]
        replies = usable
        ok = [m.content.metric_records[wire.METRICS] for m in usable]
        if ok:
            n = np.array([float(m[wire.NUM_EXAMPLES]) for m in ok])
            acc = np.array([float(m["accuracy"]) for m in ok])
            # weighted by examples, and the plain mean over clients (LotteryFL / FedDST report it)
            self.recorder.add(server_round, client_accuracy=float(np.average(acc, weights=n)),
                              client_accuracy_mean=float(acc.mean()), evaluated_clients=len(ok))
        return super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> Result:
        """Flower's ``start``, with every round closed in the recorder after evaluation
        (and checkpointed when a ``checkpointer`` says the round is due).

        After :func:`strategies.checkpoints.restore`, ``num_rounds`` is the number of rounds
        still to run; every hook sees the run's true round numbers.
        """
        self._total_rounds = self.round_offset + num_rounds

        def evaluate_and_record(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
            rnd += self.round_offset
            if rnd == self.round_offset and rnd > 0:
                # the resumed round was recorded before the interruption
                return evaluate_fn(rnd, arrays) if evaluate_fn is not None else None
            res = evaluate_fn(rnd, arrays) if evaluate_fn is not None else None
            metrics = dict(res) if res is not None else {}
            # strategies may add centralized metrics of their own (FedPrune: the dense model's)
            extra = getattr(self, "round_metrics", None)
            if extra is not None:
                metrics.update(extra(rnd))
            self.recorder.end_round(rnd, metrics)
            if self.checkpointer is not None and self.checkpointer.due(rnd, self._total_rounds):
                self.checkpointer.save(self, rnd)
            return res

        if self.retry_policy is not None:
            min_replies, retries, seed = self.retry_policy
            grid = RetryingGrid(grid, self, min_replies, retries, seed)  # type: ignore[assignment]
        result = super().start(  # type: ignore[misc]
            grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config,
            evaluate_and_record,
        )
        self.recorder.flush()
        return result


def usable_evaluations(
    replies: Iterable[Message], label: Callable[[int], str] | None = None, warn: bool = True
) -> list[Message]:
    """The evaluation replies whose metrics are usable (:func:`evaluation_problem`); the
    others are logged (``warn``) and left out."""
    out = []
    for msg in replies:
        met = None if msg.has_error() else msg.content.metric_records.get(wire.METRICS)
        why = "no metrics" if met is None else evaluation_problem(met)
        if why is not None:
            node = msg.metadata.src_node_id
            if warn:
                log(WARNING, "evaluation reply of %s unusable: %s",
                    label(node) if label else f"node {node}", why)
            continue
        out.append(msg)
    return out


def evaluation_metrics(
    replies: Iterable[Message], label: Callable[[int], str] | None = None, warn: bool = True
) -> list[MetricRecord]:
    """The MetricRecords of :func:`usable_evaluations`."""
    return [m.content.metric_records[wire.METRICS] for m in usable_evaluations(replies, label, warn)]


def evaluation_problem(met: MetricRecord) -> str | None:
    """Why an evaluation reply's metrics are unusable (None: ``accuracy`` in [0, 1],
    ``loss`` finite when sent, ``num-examples`` a positive integer)."""
    try:
        wire.check_num_examples(met.get(wire.NUM_EXAMPLES))
        checked = wire.check_metrics({k: v for k, v in met.items() if k != wire.NUM_EXAMPLES})
    except wire.InvalidUpdate as exc:
        return str(exc)
    if not 0.0 <= checked.get("accuracy", -1.0) <= 1.0:
        return "accuracy missing or outside [0, 1]"
    if "loss" not in checked:
        return "no loss"
    return None


NO_QUERY_HANDLER = "No query function registered"  # Flower's reason: a ClientApp without one


class ClientDirectory:
    """Maps Flower node ids to stable client ids and samples clients reproducibly.

    A new node is asked for its id with one message of Flower's ``query`` type, which
    fedprune's ClientApp answers from its node-config ``partition-id``. A node whose
    ClientApp has no query handler (another app's, answering training with
    :func:`clients.client_app.fedprune_train`) is known by its Flower node id until one
    of its train replies reports a ``client-id`` (:meth:`adopt`); sampling is then
    reproducible only from the round its id is known.

    Parameters
    ----------
    seed : run seed; round ``t``'s sample is drawn with ``default_rng([seed, t])``
    query_timeout : seconds to wait for the id replies of new nodes
    wait_timeout : seconds to wait for enough nodes to connect
    """

    def __init__(
        self, seed: int = 0, query_timeout: float = 120.0, wait_timeout: float = 600.0
    ) -> None:
        self.seed = seed
        self.query_timeout = query_timeout
        self.wait_timeout = wait_timeout
        self.client_of: dict[int, int] = {}
        self.reported: dict[int, dict[str, float]] = {}  # client id -> scalars of its id reply
        self.by_node_id: set[int] = set()  # nodes known by their Flower node id (no query handler)

    def label(self, node: int) -> str:
        """A readable id for logs and results: the client id if known, else the node id."""
        cid = self.client_of.get(node)
        return str(cid) if cid is not None else f"node-{node}"

    def refresh(self, grid: Grid, min_nodes: int) -> dict[int, int]:
        """Wait for ``min_nodes`` nodes, ask new ones for their id; return node -> client."""
        deadline = time.monotonic() + self.wait_timeout
        while len(nodes := list(grid.get_node_ids())) < min_nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(nodes)} nodes connected after {self.wait_timeout:.0f} s, "
                    f"{min_nodes} needed (min-train-clients)"
                )
            log(INFO, "Waiting for nodes: %d connected, %d needed", len(nodes), min_nodes)
            time.sleep(1.0)
        new = [n for n in nodes if n not in self.client_of]
        failures: list[str] = []
        if new:
            query = RecordDict({wire.CONFIG: ConfigRecord({"query": wire.CLIENT_ID})})
            msgs = [Message(query, dst_node_id=n, message_type=MessageType.QUERY) for n in new]
            for reply in grid.send_and_receive(msgs, timeout=self.query_timeout):
                node = reply.metadata.src_node_id
                if reply.has_error() and NO_QUERY_HANDLER in reply.error.reason:
                    log(INFO, "Node %d's ClientApp answers no query: known by its node id until "
                        "a train reply reports its client-id", node)
                    self.client_of[node] = node
                    self.by_node_id.add(node)
                    continue
                metrics = None if reply.has_error() else reply.content.metric_records.get(wire.METRICS)
                cid = None if metrics is None else metrics.get(wire.CLIENT_ID)
                if metrics is None or not _is_client_id(cid):
                    why = (reply.error.reason if reply.has_error() else
                           f"client-id {cid!r} is not a non-negative integer" if cid is not None
                           else "no client-id in reply")
                    log(WARNING, "Node %d did not report its client id (%s); not sampled", node, why)
                    failures.append(why)
                    continue
                self.client_of[node] = int(metrics[wire.CLIENT_ID])
                self.reported[self.client_of[node]] = {
                    k: float(v) for k, v in metrics.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
            ids = list(self.client_of.values())
            if len(set(ids)) != len(ids):
                log(WARNING, "Several nodes report the same client id: %s", sorted(ids))
            if not self.client_of:  # nothing can ever be sampled: fail now, with the reason
                why = failures[0].strip().splitlines()[-1] if failures else "no reply"
                raise RuntimeError(
                    f"none of the {len(new)} nodes reported its client id, so no client can be "
                    f"sampled; the first failure: {why}"
                )
        return {n: self.client_of[n] for n in nodes if n in self.client_of}

    def adopt(self, replies: list[Reply]) -> list[Reply]:
        """Accepted train replies, those of nodes known by their node id relabelled with the
        ``client-id`` they report (when it is a valid id no other node holds), in client order."""
        taken = set(self.client_of.values())
        for r in replies:
            cid = r.metrics.get(wire.CLIENT_ID)
            if r.node not in self.by_node_id or not _is_client_id(cid) or int(cid) in taken:
                continue
            self.by_node_id.discard(r.node)
            taken.discard(r.node)
            self.client_of[r.node] = r.client = int(cid)  # type: ignore[arg-type]
            taken.add(r.client)
            log(INFO, "Node %d reports client id %d", r.node, r.client)
        return sorted(replies, key=lambda r: (r.client, r.node))

    def sample(
        self, grid: Grid, server_round: int, fraction: float, min_clients: int, stream: int = 0
    ) -> list[int]:
        """Sample node ids without replacement, reproducibly given (seed, round, stream).

        The sample size is ``max(min_clients, int(fraction * available))``,
        capped at the number of available clients.
        """
        known = self.refresh(grid, min_clients)
        k = min(len(known), max(min_clients, int(fraction * len(known))))
        return self.sample_k(grid, server_round, k, stream)

    def sample_k(self, grid: Grid, server_round: int, k: int, stream: int = 0) -> list[int]:
        """Exactly ``min(k, available)`` node ids, reproducibly given (seed, round, stream)."""
        known = self.refresh(grid, 1)
        order = sorted(known, key=lambda n: (known[n], n))  # by client id
        rng = np.random.default_rng([self.seed, server_round, stream])
        pick = np.sort(rng.choice(len(order), size=min(k, len(order)), replace=False))
        return [order[i] for i in pick]


class RetryingGrid:
    """A Grid that retries a training round when too few clients reply.

    Wraps the Grid that ``Strategy.start`` uses (everything but
    ``send_and_receive`` is passed through). When fewer than ``min_replies``
    usable training replies arrive (a client raised, timed out, dropped out,
    or sent a payload the strategy's ``reply_problem`` rejects), the
    messages of the clients that failed are sent again, up to ``retries``
    times within the same round. When all the failed messages
    carry the same content (every strategy here except the personalised ones,
    which send each client its own mask), they go to other clients, drawn
    reproducibly among those not yet tried this round; otherwise to the same
    clients again. Failed replies that were retried are dropped, so the
    strategy sees each client once; if the minimum is still not reached the
    strategy skips the round as usual. Every retry is logged and recorded
    (``retries``, ``retried_clients``) and its download bytes are counted.
    """

    def __init__(self, grid: Grid, strategy: Any, min_replies: int, retries: int, seed: int) -> None:
        self._grid, self._strategy = grid, strategy
        self.min_replies, self.retries, self.seed = min_replies, retries, seed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if not messages or messages[0].metadata.message_type != MessageType.TRAIN:
            return replies
        rnd = _round_of(messages[0])
        tried = {m.metadata.dst_node_id for m in messages}
        retried: list[int] = []
        check = self._strategy.reply_problem
        for attempt in range(1, self.retries + 1):
            problems = {r.metadata.src_node_id: (f"client error {r.error.code}: {r.error.reason}"
                                                 if r.has_error() else
                                                 check(r, rnd))
                        for r in replies}
            good = [r for r in replies if problems[r.metadata.src_node_id] is None]
            if len(good) >= self.min_replies:
                break
            answered = {r.metadata.src_node_id for r in good}
            failed = [m for m in messages if m.metadata.dst_node_id not in answered]
            nodes = [m.metadata.dst_node_id for m in failed]
            if all(m.content is failed[0].content for m in failed):
                spare = sorted(set(self._grid.get_node_ids()) - tried)
                directory = getattr(self._strategy, "directory", None)
                if directory is not None:  # by client id, for reproducibility
                    known = directory.refresh(self._grid, 1)
                    spare = sorted((n for n in spare if n in known), key=lambda n: known[n])
                rng = np.random.default_rng([self.seed, rnd, 1000 + attempt])
                if spare:  # pick indices: node ids overflow int64, numpy would mangle them
                    pick = rng.choice(len(spare), size=min(len(spare), len(failed)), replace=False)
                    nodes = [spare[i] for i in sorted(pick)]
            log(WARNING, "round %d: %d of %d clients replied, fewer than min-replies %d: retry "
                "%d/%d with %d clients", rnd, len(good), len(messages), self.min_replies, attempt,
                self.retries, len(nodes))
            self._note_failed({m.metadata.dst_node_id: problems.get(m.metadata.dst_node_id) or NO_REPLY
                               for m in failed}, rnd)
            resend = [Message(content=m.content, dst_node_id=n, message_type=m.metadata.message_type,
                              group_id=m.metadata.group_id) for m, n in zip(failed, nodes, strict=False)]
            tried.update(nodes)
            retried.extend(nodes)
            self._strategy.set_sent_nodes(tried)  # the retried nodes may reply now
            rec = getattr(self._strategy, "recorder", None)
            if rec is not None:
                rec.add(rnd, retries=attempt, bytes_down=sum(payload_bytes(m.content) for m in resend),
                        wire_bytes_down=sum(wire_bytes(m) for m in resend))
            messages = [m for m in messages if m.metadata.dst_node_id in answered] + resend
            replies = good + list(self._grid.send_and_receive(resend, timeout=timeout))
        if retried:  # the strategy expects replies from the final set of clients only
            self._strategy.set_sent_nodes(m.metadata.dst_node_id for m in messages)
        rec = getattr(self._strategy, "recorder", None)
        if retried and rec is not None:
            directory = getattr(self._strategy, "directory", None)
            ids = [directory.client_of.get(n, -1) for n in retried] if directory else retried
            rec.add(rnd, retried_clients=[int(i) for i in ids])
        return replies


    def _note_failed(self, reasons: dict[int, str], rnd: int) -> None:
        directory = getattr(self._strategy, "directory", None)
        rec = getattr(self._strategy, "recorder", None)
        out = {}
        for node, why in reasons.items():
            cid = directory.client_of.get(node, node) if directory is not None else node
            out[str(cid)] = f"{why} (its work was sent again)"
            log(WARNING, "round %d: client %s failed: %s", rnd, cid, why)
        if rec is not None:
            rec.add(rnd, rejected=out)


def _is_client_id(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and bool(np.isfinite(value)) and value == int(value) and 0 <= value < 2**31)


def _round_of(msg: Message) -> int:
    for rec in msg.content.config_records.values():
        if wire.SERVER_ROUND in rec:
            return int(rec[wire.SERVER_ROUND])
    return 0
