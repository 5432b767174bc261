"""Server aggregation time and peak memory per round vs clients per round: FedPrune vs FedAvg.

    python benchmarks/server_cost.py [--clients 10 100 1000] [--model cnn-mnist] [--repeat 3]

For K clients per round, K replies are built as a client would send them
(FedPrune: the sparse model at 80% sparsity with ERK layer densities, encoded
by the codec; FedAvg: the dense model), each a small random change of the
model. The script times ``aggregate_train`` (validation, decoding, CGSV,
mask-aware averaging, the new global mask, residuals; FedAvg: validation and
the weighted average), best of ``--repeat``, and, in one more untimed
aggregation, the peak memory Python allocated during it (tracemalloc, which
sees NumPy's buffers), plus the replies' own size. Flower hands a strategy
all of a round's replies at once, so the replies (sparse: about a fifth of a
dense model each) are the part that grows with K; the strategy's own state
does not.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedprune import codec, wire
from fedprune.masks import prunable_names
from fedprune.models import build_model
from fedprune_flwr.strategies.fedavg import FedAvg
from fedprune_flwr.strategies.fedprune import FedPrune
from fedprune_flwr.strategies.results import RoundRecorder

import _env  # noqa: F401

MB = 1e6


def _reply(node: int, arrays: dict[str, np.ndarray], n: int) -> Message:
    # replies need a run id to point back to (Flower's private TaskIdentity, as in its tests)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    original = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict({wire.ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          wire.METRICS: MetricRecord({wire.NUM_EXAMPLES: n, wire.TRAIN_LOSS: 1.0})})
    return Message(content, reply_to=original)


def _nbytes(msgs: list[Message]) -> int:
    return sum(a.numpy().nbytes for m in msgs for a in m.content[wire.ARRAYS].values())


def fedprune_round(state: dict[str, np.ndarray], prunable: list[str], k: int, rng) -> tuple:
    s = FedPrune(recorder=RoundRecorder(None, {}, 10), initial_state=state, prunable=prunable,
                 num_rounds=10, sparsity=0.8, seed=0, fraction_train=1.0, min_train_clients=1)
    s.directory.client_of.update({1000 + i: i for i in range(k)})
    sent = s.sparse_state()
    replies = []
    for i in range(k):
        masks = {name: m.copy() for name, m in s.M.items()}
        st = {}
        for name, v in sent.items():
            w = v + 0.01 * rng.standard_normal(v.shape).astype(np.float32)
            st[name] = np.where(masks[name], w, 0).astype(np.float32) if name in masks else w
        replies.append(_reply(1000 + i, codec.encode_state(st, masks), 50))
    return s, replies


def fedavg_round(state: dict[str, np.ndarray], k: int, rng) -> tuple:
    s = FedAvg(recorder=RoundRecorder(None, {}, 10), seed=0, fraction_train=1.0, min_train_clients=1)
    s.directory.client_of.update({1000 + i: i for i in range(k)})
    s._expected = {n: (tuple(v.shape), np.dtype(v.dtype)) for n, v in state.items()}  # as sent
    replies = [_reply(1000 + i, {n: v + 0.01 * rng.standard_normal(v.shape).astype(np.float32)
                                 for n, v in state.items()}, 50) for i in range(k)]
    return s, replies


def measure(make, repeat: int) -> tuple[float, float, float]:
    """(best seconds, peak MB during aggregation, replies MB).

    Times are taken without tracemalloc (which slows every allocation); the peak
    memory comes from one more, traced, aggregation of fresh replies."""
    best, size = float("inf"), 0.0
    for _ in range(repeat):
        s, replies = make()
        size = _nbytes(replies) / MB
        t = time.perf_counter()
        out, _ = s.aggregate_train(1, replies)
        best = min(best, time.perf_counter() - t)
        assert out is not None and s.recorder.rounds[1]["clients"] == len(replies)
    s, replies = make()
    tracemalloc.start()
    s.aggregate_train(1, replies)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak / MB, size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--model", default="cnn-mnist")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    shape = (3, 32, 32) if args.model in ("cnn-cifar10", "resnet18") else (1, 28, 28)
    model = build_model(args.model, shape, 10, seed=0)
    state = wire.state_to_numpy(model.state_dict())
    state = {k: np.array(v, copy=True) for k, v in state.items()}
    dense_mb = sum(v.nbytes for v in state.values()) / MB
    print(f"model {args.model}: {sum(v.size for v in state.values()):,} parameters, {dense_mb:.2f} MB dense")
    print(f"{'clients':>7} | {'FedPrune s':>10} {'peak MB':>8} {'replies MB':>10} | "
          f"{'FedAvg s':>9} {'peak MB':>8} {'replies MB':>10} | {'time ratio':>10}")
    names = prunable_names(model)
    for k in args.clients:
        rng = np.random.default_rng(k)
        fp = measure(lambda k=k, rng=rng: fedprune_round(state, names, k, rng), args.repeat)
        fa = measure(lambda k=k, rng=rng: fedavg_round(state, k, rng), args.repeat)
        print(f"{k:>7} | {fp[0]:>10.3f} {fp[1]:>8.1f} {fp[2]:>10.1f} | {fa[0]:>9.3f} {fa[1]:>8.1f} "
              f"{fa[2]:>10.1f} | {fp[0] / fa[0]:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
