"""Fuzzing the reply path: malformed replies never crash the server or steer the model.

Five honest clients train round 1; in round 2 one client's honest reply is
mutated (Hypothesis draws the mutation: array bytes and metadata, dtypes,
shapes, codec streams, metrics, round and node ids, record structure). For
FedPrune, FedDST, PruneFL, LotteryFL, FedAvg and Flower's FedMedian the test
asserts that

* no exception escapes ``aggregate_train``, and no reply got as far as the
  aggregation's last-resort isolation (the boundary caught everything);
* a refused reply leaves the server in exactly (bit for bit) the state of the
  round without that client;
* an accepted reply decodes to exactly the honest arrays and example count,
  and leaves the server in exactly the state of the round with the honest reply.

Examples per strategy: ``FEDPRUNE_FUZZ_EXAMPLES`` (default 60; derandomized, so
CI runs the same examples every time).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedprune import codec, wire
from fedprune.config import RunConfig
from fedprune_flwr.strategies.replies import read_arrays
from fedprune_flwr.strategies.results import RoundRecorder
from fedprune_flwr.strategies.server_app import build_strategy

from flower_helpers import FakeGrid, set_task_identity

EXAMPLES = int(os.environ.get("FEDPRUNE_FUZZ_EXAMPLES", "60"))
NAMES = ("fedprune", "feddst", "prunefl", "lotteryfl", "fedavg", "fedmedian")
CAP = 1000  # max-num-examples of the fuzzed runs


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


SHAPES = {k: tuple(v.shape) for k, v in _model().state_dict().items()}
DTYPES = {k: v.numpy().dtype for k, v in _model().state_dict().items()}


def _strategy(name: str):
    cfg = RunConfig.from_mapping({
        "strategy": name, "fraction-train": 0.85, "min-train-clients": 5, "seed": 3,
        "num-server-rounds": 10, "readjust-interval": 5, "reconfig-interval": 100,
        "sparsity": 0.7, "max-num-examples": CAP})
    s = build_strategy(cfg, RoundRecorder(None, {}, 10), _model())
    s.max_num_examples = CAP
    if name == "prunefl":
        s.initial_done = True  # the fuzzed rounds are PruneFL's regular ones
    return s


def _honest(msg: Message, shapes: dict, i: int) -> tuple[dict[str, np.ndarray], dict]:
    """What client ``i`` honestly returns for ``msg``: its model moved on its masks."""
    sent = {k: v.numpy() for k, v in msg.content[wire.ARRAYS].items()}
    state, masks = codec.decode_state(sent, shapes)
    rng = np.random.default_rng(i)
    out = {}
    for k, v in state.items():
        v = np.asarray(v)
        if np.issubdtype(v.dtype, np.floating):
            v = (v + 0.01 * rng.standard_normal(v.shape)).astype(v.dtype)
            if k in masks:
                v = np.where(masks[k], v, 0).astype(v.dtype)
        out[k] = v
    metrics = {wire.NUM_EXAMPLES: 40 + 10 * i, wire.TRAIN_LOSS: 1.0 + 0.1 * i, wire.CLIENT_ID: i,
               wire.NOISE_RATE: 0.0, wire.ATTACKER: 0}
    return codec.encode_state(out, masks), metrics


def _message(to: Message, arrays: dict[str, Array], metrics: dict, *, extra: str = "",
             node: int | None = None, group: str | None = None, mtype: str | None = None) -> Message:
    set_task_identity()
    if node is not None or group is not None or mtype is not None:
        to = Message(RecordDict(), dst_node_id=node if node is not None else to.metadata.dst_node_id,
                     message_type=mtype or to.metadata.message_type,
                     group_id=group if group is not None else to.metadata.group_id)
    if extra == "error":
        return Message(Error(code=1, reason="client failed"), reply_to=to)
    content = {wire.ARRAYS: ArrayRecord(arrays), wire.METRICS: MetricRecord(metrics)}
    if extra == "no-metrics":
        del content[wire.METRICS]
    elif extra == "second-arrays":
        content["more"] = ArrayRecord({"x": Array(np.zeros(2, np.float32))})
    elif extra == "config":
        content["config"] = ConfigRecord({"x": 1})
    return Message(RecordDict(content), reply_to=to)


def _rice_stream(parts: list[tuple[int, int]], b: int) -> np.ndarray:
    """A Rice-coded mask (fedprune.codec's layout) of the gaps ``q * 2**b + low`` for
    ``(q, low)`` in ``parts``, built bit by bit: gaps past int64 (which wrap if the
    decoder shifts before it checks) are representable here."""
    low_bits = np.array([(low >> (b - 1 - j)) & 1 for _, low in parts for j in range(b)], np.uint8)
    qs = np.array([q for q, _ in parts], np.int64)
    unary = np.zeros(int(qs.sum()) + len(parts), np.uint8)
    unary[np.cumsum(qs + 1) - 1] = 1
    return np.concatenate([np.array([codec.RICE, b], np.uint8), np.packbits(low_bits),
                           np.packbits(unary)])


BAD_NUMBERS = [float("inf"), float("-inf"), float("nan"), -1, 0, 2**62, 1e300, CAP + 1, 40.5,
               [1, 2], [0.5], 2**31]

MUTATIONS = st.one_of(
    st.tuples(st.just("data"), st.sampled_from(["empty", "truncate", "extend", "header"]),
              st.integers(1, 200), st.integers(0, 255)),
    st.tuples(st.just("dtype-meta"),
              st.sampled_from(["float64", "float16", "int64", "uint8", "bool", "foo", "<f4", ">f4",
                               "O", ""])),
    st.tuples(st.just("shape-meta"), st.sampled_from(["huge", "negative", "scalar", "plus1", "flip",
                                                      "zero"])),
    st.tuples(st.just("replace"), st.sampled_from(["column", "row", "scalar", "longer", "shorter",
                                                   "float16", "float64", "int32", "big-endian",
                                                   "nan", "inf"])),
    st.tuples(st.just("keys"), st.sampled_from(["drop", "add", "rename"])),
    st.tuples(st.just("mask"), st.sampled_from(["kind", "param", "flip", "truncate"]),
              st.integers(0, 10_000), st.integers(0, 255)),
    # (q, low) per gap: small gaps, and ones whose q << b passes 2**63 (b near 39)
    st.tuples(st.just("rice"),
              st.lists(st.tuples(st.one_of(st.integers(0, 64), st.integers(2**23, 2**25)),
                                 st.integers(0, 2**39 - 1)), min_size=1, max_size=4),
              st.integers(0, 39)),
    # a second gap of 2**64 - d: in int64 the position wraps to d - 1 before the first
    # (a repeat for d = 1, a small negative index for d > first + 1)
    st.tuples(st.just("rice-wrap"), st.integers(0, 8), st.integers(1, 12)),
    st.tuples(st.just("metric"),
              st.sampled_from([wire.NUM_EXAMPLES, wire.TRAIN_LOSS, wire.NOISE_RATE, wire.CLIENT_ID,
                               wire.DST_MOVED, wire.ATTACKER, "unknown"]),
              st.sampled_from(BAD_NUMBERS)),
    st.tuples(st.just("meta"), st.sampled_from(["round-1", "round-3", "round-none", "evaluate",
                                                "unsampled", "duplicate"])),
    st.tuples(st.just("record"), st.sampled_from(["error", "no-metrics", "second-arrays", "config"])),
)


def _mutate(mut: tuple, msg: Message, arrays: dict[str, np.ndarray], metrics: dict,
            pick: int, others: list[Message], unsampled: int) -> list[Message]:
    """The round's replies from the victim's slot: the mutated reply (and, for
    'duplicate', a second copy of another client's reply instead)."""
    kind = mut[0]
    wired = {k: Array(v) for k, v in arrays.items()}
    keys = sorted(wired)
    key = keys[pick % len(keys)]
    a = wired[key]
    if kind == "data":
        how, n, byte = mut[1], mut[2], mut[3]
        data = bytes(a.data)
        data = {"empty": b"", "truncate": data[:-min(n, len(data))], "extend": data + bytes([byte]) * n,
                "header": data[:n % 128] + bytes([byte]) + data[n % 128 + 1:]}[how]
        wired[key] = Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=data)
    elif kind == "dtype-meta":
        wired[key] = Array(dtype=mut[1], shape=a.shape, stype=a.stype, data=a.data)
    elif kind == "shape-meta":
        size = int(np.prod(a.shape)) if a.shape else 1
        shape = {"huge": (2**30,), "negative": (-size,), "scalar": (), "plus1": (size + 1,),
                 "flip": tuple(reversed(a.shape)) + (1,), "zero": (0,)}[mut[1]]
        wired[key] = Array(dtype=a.dtype, shape=shape, stype=a.stype, data=a.data)
    elif kind == "replace":
        v = arrays[key]
        new = {"column": lambda: v.reshape(-1, 1), "row": lambda: v.reshape(1, -1),
               "scalar": lambda: np.asarray(v.reshape(-1)[:1].sum(), v.dtype).reshape(()),
               "longer": lambda: np.concatenate([v.reshape(-1), v.reshape(-1)[:1]]),
               "shorter": lambda: v.reshape(-1)[:-1] if v.size else np.ones(1, v.dtype),
               "float16": lambda: v.astype(np.float16), "float64": lambda: v.astype(np.float64),
               "int32": lambda: v.astype(np.int32), "big-endian": lambda: v.astype(v.dtype.newbyteorder(">")),
               "nan": lambda: np.where(np.arange(v.size).reshape(v.shape) == 0, np.nan, v).astype(np.float32),
               "inf": lambda: np.full(v.shape, np.inf, np.float32)}[mut[1]]()
        wired[key] = Array(np.ascontiguousarray(new))
    elif kind == "keys":
        if mut[1] == "drop":
            del wired[key]
        elif mut[1] == "add":
            wired["smuggled"] = Array(np.ones(4, np.float32))
        else:
            wired[key + "x"] = wired.pop(key)
    elif kind in ("mask", "rice", "rice-wrap"):
        masks = [k for k in keys if k.endswith(codec.MASK_SUFFIX)]
        if not masks:  # a dense strategy: a sparse tensor where a dense one belongs
            wired[key + codec.MASK_SUFFIX] = Array(np.array([codec.FULL, 0], np.uint8))
        else:
            mk = masks[pick % len(masks)]
            body = np.array(arrays[mk], np.uint8)
            if kind == "mask":
                how, pos, byte = mut[1], mut[2], mut[3]
                if how == "kind":
                    body[0] = byte % 8
                elif how == "param":
                    body[1] = byte
                elif how == "flip":
                    body[pos % len(body)] ^= (1 << (byte % 8))
                else:
                    body = body[:max(0, len(body) - 1 - pos % len(body))]
                wired[mk] = Array(body)
            elif kind == "rice-wrap":
                b, wrap = 39, 2**64 - mut[2]
                wired[mk] = Array(_rice_stream([(0, mut[1]), (wrap >> b, wrap & (2**b - 1))], b))
                vk = mk[: -len(codec.MASK_SUFFIX)] + codec.VALUES_SUFFIX
                wired[vk] = Array(np.ones(2, np.float32))
            else:
                parts, b = mut[1], mut[2]
                parts = [(q, low & ((1 << b) - 1)) for q, low in parts]
                wired[mk] = Array(_rice_stream(parts, b))
                vk = mk[: -len(codec.MASK_SUFFIX)] + codec.VALUES_SUFFIX
                wired[vk] = Array(np.ones(len(parts), np.float32))
    elif kind == "metric":
        metrics = {**metrics, mut[1]: mut[2]}
    elif kind == "meta":
        how = mut[1]
        if how == "duplicate":
            return [others[0]]  # the victim says nothing; client 0 twice
        node = unsampled if how == "unsampled" else None
        group = {"round-1": "1", "round-3": "3", "round-none": ""}.get(how)
        mtype = MessageType.EVALUATE if how == "evaluate" else None
        return [_message(msg, wired, metrics, node=node, group=group, mtype=mtype)]
    elif kind == "record":
        return [_message(msg, wired, metrics, extra=mut[1])]
    return [_message(msg, wired, metrics)]


def _state(s, out) -> dict:
    """Everything a round changes: the returned model and the strategy's own state."""
    snap = {}
    if out[0] is not None:
        snap.update({f"out/{k}": v.numpy() for k, v in out[0].items()})
    extra = getattr(s, "extra_state", None)
    if extra is not None:
        arrays, meta = extra()
        snap.update({f"state/{k}": np.asarray(v) for k, v in arrays.items()})
        snap["meta"] = meta
    return snap


def _same(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        if k == "meta":
            if a[k] != b[k]:
                return False
        elif a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k], equal_nan=True):
            return False
    return True


def _prepared(name: str):
    """The strategy after round 1 (five honest clients) and round 2's sent messages."""
    s = _strategy(name)
    grid = FakeGrid(6)
    shapes = SHAPES
    init = getattr(s, "initial_arrays", None) or ArrayRecord(_model().state_dict())
    msgs = list(s.configure_train(1, init, ConfigRecord({wire.LR: 0.01}), grid))
    assert len(msgs) == 5  # fraction-train 0.85 of FakeGrid's 6 nodes
    replies = []
    for m in msgs:
        arrays, metrics = _honest(m, shapes, m.metadata.dst_node_id - 100)
        replies.append(_message(m, {k: Array(v) for k, v in arrays.items()}, metrics))
    arrays, _ = s.aggregate_train(1, replies)
    assert arrays is not None and s.recorder.rounds[1]["clients"] == 5
    msgs = list(s.configure_train(2, arrays, ConfigRecord({wire.LR: 0.01}), grid))
    assert len(msgs) == 5
    honest = {m.metadata.dst_node_id - 100: (m, *_honest(m, shapes, m.metadata.dst_node_id - 100))
              for m in msgs}
    (unsampled,) = set(grid.nodes) - {m.metadata.dst_node_id for m in msgs}
    return s, honest, unsampled


class _Round:
    """Round 2 of one strategy, run from the same state with any replies."""

    cache: dict[str, _Round] = {}

    def __init__(self, name: str) -> None:
        self.base, honest, self.unsampled = _prepared(name)
        victim = sorted(honest)[2]  # the client whose reply is mutated
        self.msg, self.arrays, self.metrics = honest[victim]
        clean = {c: _message(m, {k: Array(v) for k, v in a.items()}, met)
                 for c, (m, a, met) in honest.items()}
        self.others = [clean[c] for c in sorted(clean) if c != victim]
        self.without = _state(*self.run(self.others))
        self.with_honest = _state(*self.run(self.others + [clean[victim]]))
        assert not _same(self.without, self.with_honest)  # the victim matters: checks can fail

    @classmethod
    def of(cls, name: str) -> _Round:
        if name not in cls.cache:
            cls.cache[name] = cls(name)
        return cls.cache[name]

    def run(self, replies):
        s = copy.deepcopy(self.base)
        out = s.aggregate_train(2, copy.deepcopy(replies))  # Flower's FedMedian pops arrays
        return s, out

    def check(self, mut: tuple, pick: int) -> bool:
        """Run round 2 with the victim's reply mutated; assert the invariants of the
        module docstring; return whether the reply was refused."""
        bad = _mutate(mut, self.msg, self.arrays, self.metrics, pick, self.others, self.unsampled)
        s, out = self.run(self.others + bad)  # must not raise
        entry = s.recorder.rounds[2]
        reasons = list(entry["rejected"].values())
        assert not any("aggregation failed" in r for r in reasons), reasons
        # bytes are counted from what arrived, never from what the metadata claims
        assert entry["bytes_up"] <= sum(len(a.data) for r in self.others + bad if not r.has_error()
                                        for rec in r.content.array_records.values()
                                        for a in rec.values())
        if entry["clients"] == 4:  # refused, with a reason
            assert reasons and all(reasons), mut
            assert _same(_state(s, out), self.without), mut
            return True
        # accepted: it must have been harmless
        assert entry["clients"] == 5 and len(bad) == 1, (mut, reasons)
        # the same tensors and masks as the honest reply (its bytes may differ where an
        # encoding has slack, e.g. .npy header padding or another Rice parameter)
        got = codec.decode_state(read_arrays(bad[0]), SHAPES, DTYPES, "float32")
        want = codec.decode_state(self.arrays, SHAPES, DTYPES, "float32")
        for g, w in zip(got, want, strict=True):
            assert set(g) == set(w), mut
            for k in w:
                assert g[k].dtype == w[k].dtype and np.array_equal(g[k], w[k]), (mut, k)
        assert bad[0].content[wire.METRICS][wire.NUM_EXAMPLES] == self.metrics[wire.NUM_EXAMPLES]
        assert _same(_state(s, out), self.with_honest), mut
        return False


@pytest.mark.parametrize("name", NAMES)
def test_no_malformed_reply_crashes_the_server_or_changes_what_it_computes(name):
    rnd = _Round.of(name)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mut=MUTATIONS, pick=st.integers(0, 1000))
    def check(mut, pick):
        rnd.check(mut, pick)

    check()


# The cases the hardening review found crashing the server or accepted; pick 0 is the
# first key in sorted order (0.bias), pick 2 a values array (sparse) or 2.bias (dense)
REVIEWED = [
    (("replace", "longer"), 0), (("replace", "shorter"), 0), (("replace", "column"), 0),
    (("replace", "scalar"), 0), (("rice-wrap", 3, 1), 0), (("rice-wrap", 3, 2), 1),
    (("rice-wrap", 3, 9), 0), (("data", "empty", 1, 0), 0), (("dtype-meta", "foo"), 0),
    (("metric", wire.NUM_EXAMPLES, float("inf")), 0), (("metric", wire.NUM_EXAMPLES, 2**62), 0),
    (("metric", wire.NUM_EXAMPLES, 1e300), 0), (("metric", wire.NUM_EXAMPLES, CAP + 1), 0),
    (("metric", wire.TRAIN_LOSS, [1.0]), 0), (("metric", wire.NOISE_RATE, [0.5]), 0),
    (("metric", wire.CLIENT_ID, [1, 2]), 0), (("metric", wire.CLIENT_ID, float("nan")), 0),
    (("metric", wire.DST_MOVED, float("nan")), 0), (("metric", wire.DST_MOVED, float("inf")), 0),
    (("metric", wire.DST_MOVED, [1, 2]), 0), (("replace", "float16"), 2),
    (("shape-meta", "huge"), 0), (("shape-meta", "negative"), 0),
    (("meta", "unsampled"), 0), (("meta", "round-1"), 0), (("meta", "round-3"), 0),
]


@pytest.mark.parametrize("name", NAMES)
def test_every_reviewed_attack_is_refused_by_every_strategy(name):
    rnd = _Round.of(name)
    accepted = [mut for mut, pick in REVIEWED if not rnd.check(mut, pick)]
    assert accepted == []
