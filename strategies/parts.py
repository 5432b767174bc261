"""The swappable parts of :class:`strategies.sparse.SparseServer`.

A sparse method is the server core plus one of each:

* a :class:`Weighting` turns the round's accepted replies into aggregation
  weights: :class:`DataSizeWeighting` (FedAvg's n_i / sum n) or
  :class:`CGSVWeighting` (cosine-gradient Shapley values blended with data size
  by a decaying trade-off, :mod:`fedprune.contribution`);
* a :class:`MaskPolicy` says how far clients may move their masks this round
  and what the next global mask is: :class:`StaticMask` (fixed),
  :class:`DynamicMask` (client-side readjustment, the new mask the per-layer
  top-|value| positions of the union, :mod:`fedprune.dst`) or
  :class:`ServerReadjustment` (clients vote, the server grows and drops);
* an optional update filter, :class:`NormClip` (updates longer than c x the
  median norm are scaled down to it);
* an optional :class:`RoundAverage`: the model the method outputs (evaluated, saved,
  restored dense) is an exponential moving average of ``W`` over rounds, while clients
  keep training from ``W`` itself.

Every part owns its state and puts it in the server's checkpoint
(``state`` / ``load_state``), so a resumed run and an aggregation that is redone
without one reply (:class:`strategies.common.RecordingMixin`) see the same parts.
Parts never import Flower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedprune.aggregation import select_global_mask
from fedprune.checkpoint import CheckpointError, join, split
from fedprune.contribution import ContributionState, data_size_weights, tradeoff
from fedprune.dst import GROWTH, consensus_move, readjust_fraction
from fedprune.masks import ceil_count

# A client's update on its support: per float tensor (flat positions, what it received
# there, its values minus that), float64.
Update = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Flat:
    """The round's updates flattened over the model's float tensors (one vector each,
    given on its support): what CGSV scores."""

    indices: list[np.ndarray]
    values: list[np.ndarray]
    size: int
    # each client's update of the output layer's bias (its class push), when the server
    # was given that tensor's name (CGSV rule "classes")
    pushes: list[np.ndarray] | None = None


@dataclass
class RoundWeights:
    """A weighting's answer for one round."""

    weights: dict[int, float]  # client id -> aggregation weight (sums to 1)
    phis: dict[int, float] = field(default_factory=dict)  # raw CGSV cosines (scored clients)
    lambda_t: float | None = None  # the data-size share of the blend (None: no blend)
    trusted: list[int] | None = None  # who built the CGSV reference (trusted reference)


class Weighting(Protocol):
    """How the round's accepted replies are weighted."""

    needs_updates: bool  # whether :meth:`weights` reads the flattened updates

    def weights(self, server_round: int, clients: list[int], n: list[int],
                flat: Callable[[], Flat]) -> RoundWeights: ...

    def scores(self) -> Mapping[int, float]: ...

    def describe(self) -> str: ...

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], size: int) -> None: ...


class DataSizeWeighting:
    """FedAvg's weights: n_i / sum n."""

    needs_updates = False

    def weights(self, server_round: int, clients: list[int], n: list[int],
                flat: Callable[[], Flat]) -> RoundWeights:
        return RoundWeights(data_size_weights(clients, n))

    def scores(self) -> Mapping[int, float]:
        return {}

    def describe(self) -> str:
        return "data size"

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], size: int) -> None:
        return None


class CGSVWeighting:
    """CGSV contribution weights ``p_i = lambda_t n_i/sum n + (1 - lambda_t) r_i/sum r``.

    ``r_i`` are the clients' smoothed cosine scores (:class:`ContributionState`:
    beta, floor, leave-one-out, the reference they are measured against and its
    history factor; ``rule="classes"`` shares each class's data-size mass among the
    clients that push it, by score, from :attr:`Flat.pushes`); lambda_t decays from
    ``lambda0`` to ``lambda_min`` over
    ``num_rounds`` by ``schedule``. ``server_update`` (reference ``server``) is a
    zero-argument function giving the server's own flattened update this round.
    Before there is a reference to score against (the trusted reference's first
    round) the weights are data size.
    """

    needs_updates = True

    def __init__(self, *, num_rounds: int, lambda0: float = 0.5, schedule: str = "cosine",
                 lambda_min: float = 0.0, beta: float = 0.5, floor: float = 1e-3,
                 leave_one_out: bool = False, reference: str = "trusted",
                 history_beta: float = 0.5, rule: str = "scores",
                 server_update: Callable[[int], np.ndarray] | None = None) -> None:
        tradeoff(1, num_rounds, lambda0, schedule, lambda_min)  # validates schedule, floor
        if reference == "server" and server_update is None:
            raise ValueError("cgsv_reference='server' needs server_update_fn (the server's own "
                             "training on its root data; the ServerApp builds it from "
                             "run-config cgsv-root-samples)")
        self.num_rounds = num_rounds
        self.lambda0, self.schedule, self.lambda_min = lambda0, schedule, lambda_min
        self.state_ = ContributionState(beta=beta, floor=floor, leave_one_out=leave_one_out,
                                        reference=reference, history_beta=history_beta,
                                        rule=rule)
        self.server_update = server_update

    @property
    def contributions(self) -> ContributionState:
        """The scores, last weights and history carried across rounds."""
        return self.state_

    def weights(self, server_round: int, clients: list[int], n: list[int],
                flat: Callable[[], Flat]) -> RoundWeights:
        f = flat()
        c = self.state_
        lam = tradeoff(server_round, self.num_rounds, self.lambda0, self.schedule,
                       self.lambda_min)
        if c.reference == "server":
            assert self.server_update is not None  # checked in __init__
            c.server_update = self.server_update(server_round)
        if c.has_reference:
            phis = c.update_sparse(clients, f.indices, f.values, f.size, n)
            weights = c.weights(clients, n, lam, f.pushes)
        else:  # nothing to score against yet (trusted reference, first round)
            phis, weights = {}, data_size_weights(clients, n)
        c.observe(f.indices, f.values, [weights[k] for k in clients], f.size)
        trusted = list(c.last_trusted) if phis and c.reference == "trusted" else None
        return RoundWeights(weights, phis, lam, trusted)

    def scores(self) -> Mapping[int, float]:
        return self.state_.scores

    def describe(self) -> str:
        within = ", within classes" if self.state_.rule == "classes" else ""
        return (f"CGSV against the {self.state_.reference}{within}, lambda0 {self.lambda0:.2f} "
                f"({self.schedule} to {self.lambda_min:.2f}), beta {self.state_.beta:.2f}")

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        h = self.state_.history
        return ({"H/history": h} if h is not None else {}), {
            "contributions": self.state_.to_dict()}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], size: int) -> None:
        c = meta["contributions"]
        self.state_.scores = {int(k): float(v) for k, v in c["scores"].items()}
        self.state_.last_weight = {int(k): float(v) for k, v in c["last_weight"].items()}
        h = arrays.get("H/history")
        if h is not None and h.size != size:
            raise CheckpointError("checkpoint's CGSV history does not match this run's model")
        self.state_.history = None if h is None else h.astype(np.float64).reshape(-1)


class MaskPolicy(Protocol):
    """How the global mask moves."""

    moves: bool  # whether the mask can change (a dynamic topology)

    def alpha(self, server_round: int) -> float: ...  # how far clients move their masks

    def vote_fraction(self, server_round: int) -> float: ...  # growth votes asked (0: none)

    def take_votes(self, votes: Sequence[Mapping[str, np.ndarray]],
                   weights: Sequence[float], fraction: float = 0.0) -> None: ...

    def client_config(self) -> dict[str, Any]: ...

    def next_mask(self, aggregate: Mapping[str, np.ndarray], union: Mapping[str, np.ndarray],
                  mask: dict[str, np.ndarray], budgets: Mapping[str, int]) -> dict[str, np.ndarray]: ...

    def describe(self) -> str: ...


class StaticMask:
    """The mask never moves: no client readjustment, the same global mask every round."""

    moves = False

    def __init__(self, readjust_at: float = 0.5, growth: str = "gradient") -> None:
        if growth not in GROWTH:
            raise ValueError(f"growth must be one of {GROWTH}")
        # sent for the clients' sake only; with alpha_t = 0 they do not readjust
        self.readjust_at, self.growth = readjust_at, growth

    def alpha(self, server_round: int) -> float:
        return 0.0

    def vote_fraction(self, server_round: int) -> float:
        return 0.0

    def take_votes(self, votes: Sequence[Mapping[str, np.ndarray]],
                   weights: Sequence[float], fraction: float = 0.0) -> None:
        raise AssertionError("a static mask asks for no votes")

    def client_config(self) -> dict[str, Any]:
        return {"readjust_at": self.readjust_at, "growth": self.growth}

    def next_mask(self, aggregate: Mapping[str, np.ndarray], union: Mapping[str, np.ndarray],
                  mask: dict[str, np.ndarray], budgets: Mapping[str, int]) -> dict[str, np.ndarray]:
        return mask

    def describe(self) -> str:
        return "static mask"


class DynamicMask:
    """Dynamic sparse training (FedDST's scheme): on readjustment rounds
    (t % interval == 0, t <= end) clients drop and regrow alpha_t of each layer's
    kept weights (alpha_t cosine-decays from alpha0) after ``readjust_at`` of their
    local steps, growing by ``growth`` (``gradient``: RigL, ``random``: SET); the
    next global mask is, per layer, the budget's largest-|value| positions of the
    union of the clients' masks (filled from the previous mask where it is short)."""

    moves = True

    def __init__(self, *, alpha0: float = 0.1, interval: int = 5, end: int,
                 readjust_at: float = 0.5, growth: str = "gradient") -> None:
        if growth not in GROWTH:
            raise ValueError(f"growth must be one of {GROWTH}")
        self.alpha0, self.interval, self.end = alpha0, interval, end
        self.readjust_at, self.growth = readjust_at, growth

    def alpha(self, server_round: int) -> float:
        return readjust_fraction(server_round, self.alpha0, self.interval, self.end)

    def vote_fraction(self, server_round: int) -> float:
        return 0.0

    def take_votes(self, votes: Sequence[Mapping[str, np.ndarray]],
                   weights: Sequence[float], fraction: float = 0.0) -> None:
        raise AssertionError("client-side readjustment asks for no votes")

    def client_config(self) -> dict[str, Any]:
        return {"readjust_at": self.readjust_at, "growth": self.growth}

    def next_mask(self, aggregate: Mapping[str, np.ndarray], union: Mapping[str, np.ndarray],
                  mask: dict[str, np.ndarray], budgets: Mapping[str, int]) -> dict[str, np.ndarray]:
        return select_global_mask(aggregate, union, budgets, fallback=mask)

    def describe(self) -> str:
        return (f"dynamic mask: alpha0 {self.alpha0:.3f}, every {self.interval} rounds until "
                f"{self.end}, at {self.readjust_at:.2f} of local steps, growth {self.growth}")


class ServerReadjustment:
    """Dynamic sparse training decided at the server from the whole round's signal.

    On readjustment rounds (the schedule of :class:`DynamicMask`) clients keep the mask
    they received and each votes for the ``ceil(alpha_t * kept)`` positions outside it
    whose dense gradient, summed over its local steps, is largest in magnitude, sending
    those sums (:func:`fedprune.dst.growth_votes`). The server adds the votes up with the
    round's aggregation weights, a client that did not vote for a position counting 0,
    and per layer grows the positions of largest ``|sum_i p_i g_i|`` and drops as many
    kept weights of smallest aggregated ``|w|`` (:func:`fedprune.dst.consensus_move`).
    Growth thus follows the gradient of the round's whole data (pushes of clients with
    different classes cancel), every client trains each new weight from the next round
    on, and no client's local model changes topology part-way through its training."""

    moves = True

    def __init__(self, *, alpha0: float = 0.1, interval: int = 5, end: int) -> None:
        self.alpha0, self.interval, self.end = alpha0, interval, end
        self._fraction = 0.0
        self._gradient: dict[str, np.ndarray] | None = None

    def alpha(self, server_round: int) -> float:
        return 0.0  # clients never move their own masks

    def vote_fraction(self, server_round: int) -> float:
        return readjust_fraction(server_round, self.alpha0, self.interval, self.end)

    def take_votes(self, votes: Sequence[Mapping[str, np.ndarray]],
                   weights: Sequence[float], fraction: float = 0.0) -> None:
        """The round's weighted gradient on the voted positions (dense, 0 elsewhere), for
        :meth:`next_mask` to move ``ceil(fraction * kept)`` positions per layer."""
        self._fraction = fraction
        total = float(sum(weights))
        acc: dict[str, np.ndarray] = {}
        for v, w in zip(votes, weights, strict=True):
            for k, g in v.items():
                a = acc.setdefault(k, np.zeros(g.shape, np.float64))
                a += (w / total) * np.asarray(g, np.float64)
        self._gradient = acc

    def client_config(self) -> dict[str, Any]:
        return {"readjust_at": 0.5, "growth": "gradient"}  # unused: clients do not readjust

    def next_mask(self, aggregate: Mapping[str, np.ndarray], union: Mapping[str, np.ndarray],
                  mask: dict[str, np.ndarray], budgets: Mapping[str, int]) -> dict[str, np.ndarray]:
        if self._gradient is None or self._fraction <= 0:
            return mask
        out = {}
        for k, m in mask.items():
            n = ceil_count(self._fraction, int(np.count_nonzero(m)))
            g = self._gradient.get(k)
            out[k] = m if g is None else consensus_move(aggregate[k], m, g, n)
        self._gradient = None
        return out

    def describe(self) -> str:
        return (f"server-side readjustment: alpha0 {self.alpha0:.3f}, every {self.interval} "
                f"rounds until {self.end}, growth by the round's weighted gradient votes")


class NormClip:
    """Scale every update whose L2 norm exceeds ``c`` x the median update norm down to
    it. The median is over the raw norms of this round and the ``window - 1`` before
    it (with more than one round, attackers who are half of one round cannot move
    the bound)."""

    def __init__(self, c: float = 2.0, window: int = 1) -> None:
        if c <= 0:
            raise ValueError(f"clip bound must be > 0, got {c}")
        if window < 1:
            raise ValueError(f"clip_window must be >= 1, got {window}")
        self.c, self.window = c, window
        self.norms: list[list[float]] = []  # raw update norms of the last rounds

    def factors(self, updates: Sequence[Update]) -> list[float | None]:
        """Per update the factor (<= 1) it is scaled by, None where it is within the bound."""
        norms = np.array([np.sqrt(sum(float(np.sum(d * d)) for _, _, d in u.values()))
                          for u in updates])
        past = self.norms[-(self.window - 1):] if self.window > 1 else []
        pooled = np.concatenate([np.asarray(x, float) for x in past] + [norms])
        bound = self.c * float(np.median(pooled))
        if self.window > 1:
            self.norms = [*past, [float(x) for x in norms]]
        return [None if (norm <= bound or norm == 0) else bound / norm for norm in norms]

    def state(self) -> dict[str, Any]:
        return {"clip_norms": self.norms}

    def load_state(self, meta: dict[str, Any]) -> None:
        # checkpoints written before clip-window have none: the window restarts empty
        self.norms = [[float(x) for x in r] for r in meta.get("clip_norms", [])]


class RoundAverage:
    """The model a method outputs: ``A <- beta A + (1 - beta) W`` after every round
    (``A = W`` after the first), evaluated on the current mask, saved as the final
    model and restored dense; clients still receive and train ``W``.

    Under label skew each round's aggregate leans towards the classes of the clients
    sampled that round, so the model of any one round swings between classes; the
    average over the last few rounds (weights beta^k: with beta 0.75, half of the mass
    on the last 2.4 rounds) cancels most of the swing and costs no byte. Polyak-Ruppert
    averaging of the iterates (Polyak and Juditsky, SIAM J. Control Optim. 1992), as
    SWA does for SGD; docs/method.md ("Round averaging").
    """

    def __init__(self, beta: float) -> None:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"round averaging factor must be in (0, 1), got {beta}")
        self.beta = beta
        self.average: dict[str, np.ndarray] | None = None

    def update(self, W: Mapping[str, np.ndarray],
               entered: Mapping[str, np.ndarray] | None = None) -> None:
        """Fold this round's ``W`` in (float tensors; others are taken as they are).
        Positions in ``entered`` (per tensor, those that joined the mask this round)
        start their average afresh at ``W``: what they held before is a residual or
        the initialisation, not a model this position was trained into."""
        if self.average is None:
            self.average = {k: np.array(v, copy=True) for k, v in W.items()}
            return
        b, out = self.beta, {}
        for k, v in W.items():
            if not np.issubdtype(v.dtype, np.floating):
                out[k] = np.array(v, copy=True)
                continue
            a = b * self.average[k].astype(np.float64) + (1.0 - b) * v.astype(np.float64)
            if entered is not None and k in entered:
                a = np.where(entered[k], v, a)
            out[k] = a.astype(v.dtype)
        self.average = out

    def of(self, W: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """The averaged model (``W`` itself before the first round)."""
        return W if self.average is None else self.average

    def state(self) -> dict[str, np.ndarray]:
        return {} if self.average is None else join("A", self.average)

    def load_state(self, arrays: Mapping[str, np.ndarray],
                   W: Mapping[str, np.ndarray]) -> None:
        got = split(arrays, "A")
        if not got:
            self.average = None
            return
        if {k: v.shape for k, v in got.items()} != {k: v.shape for k, v in W.items()}:
            raise CheckpointError("checkpoint's round average does not match this run's model")
        self.average = {k: got[k].astype(W[k].dtype) for k in W}
