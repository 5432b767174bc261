"""Contribution scores (CGSV) and the aggregation weights they give.

Cosine-gradient Shapley value (Xu et al., NeurIPS 2021, "Gradient-Driven
Rewards to Guarantee Fairness in Collaborative Machine Learning"),
as docs/design.md adapts it to sparse updates. For the clients i of a round, with
updates ``d_i`` (flattened, zero outside client i's support ``S_i``):

    u_i   = d_i / ||d_i||
    u     = sum_i w_i u_i                     (w_i: the clients' previous weights)
    phi_i = cos(u_i, u) on S_i                (the common support of u_i and u;
                                               u - w_i u_i with leave_one_out)
    r_i  <- max(floor, beta * r_i + (1 - beta) * phi_i)   (r_i = max(floor, phi_i) at first sight)

and the aggregation weights blend data size and contribution:

    p_i = lambda_t * n_i / sum_j n_j + (1 - lambda_t) * r_i / sum_j r_j

with ``lambda_t`` decaying from ``lambda0`` towards ``lambda_min`` (0 by default;
schedules in :func:`tradeoff`). With ``rule="classes"`` the scores move weight
only between clients that push the same classes, never from one class to
another. A client's push on class c is the positive part of its update of the
output layer's bias there, ``s_ic = max(db_ic, 0) / sum_c' max(db_ic', 0)``
(uniform when nothing is positive): cross-entropy raises the bias of the
classes a client's labels hold more of than the model predicts. Each class
keeps the mass data size gives it, ``m_c = sum_i n_i s_ic / sum n``, shared
among its pushers by score:

    p_i = lambda_t * n_i / sum_j n_j + (1 - lambda_t) * sum_c m_c n_i r_i s_ic / sum_j n_j r_j s_jc

Equal scores give data size exactly. The price: a class that in some round
only clients with wrong labels push keeps its mass, and they get it (80%
symmetric noise pushes the classes a client has no images of). Under strong label skew the cosine of an
honest client depends on which classes it holds (2 classes per client: the
10th percentile 0.4 of the median), and proportional scores tilt each round
towards some classes; here a client competes only with the clients whose
classes it shares, which is where a client with wrong labels stands against
clean ones.
A client whose update points against the others gets phi_i < 0, its score
sinks to the floor, and its weight shrinks as lambda_t decays.

The reference u above is the round's own aggregate (``reference="round"``, the
paper's and docs/design.md's). When the clients that point the wrong way are half of
a round or more, that aggregate *is* their direction and they score as high as
the others. ``reference="trusted"`` builds u from the half of the round that
agrees most with the direction the server applied in earlier rounds:

    h    <- unit(rho * h + (1 - rho) * g / ||g||)   after each round,
    g    =  sum_i p_i u_i       (the clients' directions, with their aggregation weights;
                                 not the raw update sum_i p_i d_i, where a few long,
                                 coherent updates outvote many weighted ones)
    T    =  the ceil(K/2) clients with the largest cos(u_i, h) on S_i
    u    =  sum_{i in T} w_i u_i,   phi_i = cos(u_i, u) on S_i   (all clients)

(``rho``: ``history_beta``). The history alone is a poor reference: once
training settles, successive rounds' updates mostly follow the classes their
clients hold, and the clean clients' cosines with h fall to about 0, where
the ratio r_i / sum r is noise. It is good at *ranking* (in a recorded run,
40% of clients at 80% symmetric noise, the noisy clients' cos with h was
0.2 below the clean ones' even in the rounds where they were the majority),
so it only picks who builds the reference. The round without a history yet
(the first) has no reference: no scores change and the caller uses data-size
weights.

``reference="server"`` scores against an update the server computed itself:
the caller sets :attr:`ContributionState.server_update` every round to the
change that the same local training makes to the model sent out, run on a
small clean "root" set the server holds (FLTrust's idea: Cao et al., NDSS
2021, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping"), and phi_i = cos(u_i, server update) on S_i. Unlike the
round's aggregate or the history, that reference cannot be taken over by the
clients: in the adversarial study, once training settles, the history ranked
sign-flippers into the trusted half (its direction follows whatever was
applied, and late in training successive rounds' directions barely agree),
their direction was applied, and the history followed them from then on. The
price is a data set at the server, drawn like the clients' (here: examples of
the training split, ``cgsv-root-samples``), and its training each round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SCHEDULES = ("cosine", "linear", "exponential", "constant")
REFERENCES = ("round", "trusted", "server")
RULES = ("scores", "classes")


def tradeoff(
    t: int, total: int, lambda0: float, schedule: str = "cosine", lambda_min: float = 0.0
) -> float:
    """lambda_t for round ``t`` of ``total`` (t = 1 .. total).

    ``lambda_min + (lambda0 - lambda_min) * f(t/T)``: lambda_t decays from
    ``lambda0`` towards the floor ``lambda_min`` (0 by default, where the last
    rounds weight by contribution alone), with ``f`` by schedule: cosine
    ``(1 + cos(pi * t/T)) / 2``; linear ``1 - t/T``; exponential ``0.01 ** (t/T)``
    (1% of the way left at the end); constant ``1`` (lambda_t = lambda0).
    """
    if not 0.0 <= lambda_min <= lambda0:
        raise ValueError(f"lambda_min must be in [0, lambda0 = {lambda0}], got {lambda_min}")
    frac = min(max(t / max(total, 1), 0.0), 1.0)
    if schedule == "cosine":
        f = (1.0 + math.cos(math.pi * frac)) / 2.0
    elif schedule == "linear":
        f = 1.0 - frac
    elif schedule == "exponential":
        f = 0.01**frac
    elif schedule == "constant":
        f = 1.0
    else:
        raise ValueError(f"unknown lambda schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    return lambda_min + (lambda0 - lambda_min) * f


def cosine_on_support(u_i: np.ndarray, u: np.ndarray, support: np.ndarray) -> float:
    """cos(u_i, u) restricted to ``support`` (a boolean vector)."""
    a, b = u_i[support], u[support]
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _norm(v: np.ndarray) -> float:
    # elementwise, not BLAS: a BLAS dot spins its threads when the cores are busy
    # (measured 11 ms for 55k elements on a loaded 2-core machine, vs 0.1 ms)
    return float(np.sqrt(np.sum(v * v)))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = _norm(a), _norm(b)
    return 0.0 if na == 0.0 or nb == 0.0 else float(np.sum(a * b) / (na * nb))


def _has_repeats(i: np.ndarray) -> bool:
    if i.size < 2 or bool(np.all(i[1:] > i[:-1])):  # strictly increasing (the usual,
        return False  # flatnonzero-built case): no sort needed
    return bool(np.any(np.diff(np.sort(i)) == 0))


@dataclass
class ContributionState:
    """Smoothed CGSV scores per client id, carried across rounds."""

    beta: float = 0.5
    floor: float = 1e-3
    # phi_i = cos(u_i, u - w_i u_i): without the client's own share of the aggregate,
    # which otherwise lifts every phi by about w_i / ||u|| (large when clients disagree)
    leave_one_out: bool = False
    # what phi_i is measured against: the round's aggregate, or the aggregate of the
    # half of the round most aligned with the history of applied updates
    reference: str = "round"
    history_beta: float = 0.5
    # how scores become weights: proportional to the scores over the round, or within
    # the classes each client pushes ("classes": needs the clients' class pushes)
    rule: str = "scores"
    scores: dict[int, float] = field(default_factory=dict)
    last_weight: dict[int, float] = field(default_factory=dict)
    history: np.ndarray | None = None  # unit vector over the flattened float tensors
    last_trusted: list[int] = field(default_factory=list)  # who built the last reference
    # reference="server": the server's own update this round (flattened like the
    # clients'), set by the caller before :meth:`update_sparse`, which consumes it
    server_update: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise ValueError(f"unknown CGSV reference {self.reference!r}; "
                             f"valid: {', '.join(REFERENCES)}")
        if not 0.0 <= self.history_beta < 1.0:
            raise ValueError(f"history_beta must be in [0, 1), got {self.history_beta}")
        if self.rule not in RULES:
            raise ValueError(f"unknown CGSV rule {self.rule!r}; valid: {', '.join(RULES)}")

    @property
    def has_reference(self) -> bool:
        """Whether this round's clients can be scored (false before the first history,
        or without a server update)."""
        if self.reference == "server":
            return self.server_update is not None
        return self.reference == "round" or self.history is not None

    def _check_history(self, size: int) -> None:
        if self.history is not None and self.history.size != size:
            raise ValueError(f"update length {size} does not match the history's "
                             f"{self.history.size}")

    def update(
        self,
        clients: Sequence[int],
        updates: Sequence[np.ndarray],
        supports: Sequence[np.ndarray],
        num_examples: Sequence[int],
    ) -> dict[int, float]:
        """Score this round's clients; return their raw cosines phi_i.

        Parameters
        ----------
        updates : flattened update of each client (zero outside its support)
        supports : boolean vector of each client's support (same length)
        num_examples : used as the previous weights of first-time clients
        """
        idx = [np.flatnonzero(s) for s in supports]
        vals = [np.asarray(d, np.float64).reshape(-1)[i] for d, i in zip(updates, idx, strict=True)]
        size = int(np.asarray(updates[0]).size) if len(updates) else 0
        return self.update_sparse(clients, idx, vals, size, num_examples)

    def update_sparse(
        self,
        clients: Sequence[int],
        indices: Sequence[np.ndarray],
        values: Sequence[np.ndarray],
        size: int,
        num_examples: Sequence[int],
    ) -> dict[int, float]:
        """:meth:`update` with each client's update given on its support only.

        ``indices[i]`` are the flat positions of client i's support (unique) in
        a vector of length ``size`` and ``values[i]`` its update there. The
        work and memory are proportional to the supports, not to the number
        of clients times the model: the aggregate u is scattered into one
        dense vector, and phi_i = <u_i, u> / ||u on supp(u_i)|| (u_i is a unit
        vector and zero off its support). With ``reference="trusted"`` only the
        clients in :attr:`last_trusted` build u (empty result, no score changed,
        while there is no history); with ``reference="server"``, u is
        :attr:`server_update` (empty result while it is unset).
        """
        if not clients or not self.has_reference:
            return {}
        self._check_history(size)
        units = []
        for v in values:
            v = np.asarray(v, np.float64)
            n = _norm(v)
            units.append(v / n if n > 0 else np.zeros_like(v))
        n_tot = float(sum(num_examples))
        prev = np.array([
            self.last_weight.get(c, n / n_tot) for c, n in zip(clients, num_examples, strict=True)
        ])
        prev = prev / prev.sum() if prev.sum() > 0 else np.full(len(clients), 1 / len(clients))
        for i in indices:
            if _has_repeats(i):
                raise ValueError("a client's support indices must be unique")
        if self.reference == "server":
            return self._score_against_server(clients, indices, units, size)
        builds = np.ones(len(clients), bool)
        if self.reference == "trusted":
            h = self.history
            assert h is not None  # has_reference
            near = np.array([_cos(u, h[i]) for i, u in zip(indices, units, strict=True)])
            builds[:] = False
            builds[np.argsort(-near, kind="stable")[: (len(clients) + 1) // 2]] = True
            self.last_trusted = [c for c, b in zip(clients, builds, strict=True) if b]
        agg = np.zeros(size, dtype=np.float64)
        for w, i, u, b in zip(prev, indices, units, builds, strict=True):
            if b:
                agg[i] += w * u
        phis = {}
        for c, i, u, w, b in zip(clients, indices, units, prev, builds, strict=True):
            a = agg[i] - w * u if self.leave_one_out and b else agg[i]
            phis[c] = _cos(u, a)
            self._smooth(c, phis[c])
        return phis

    def _smooth(self, client: int, phi: float) -> None:
        old = self.scores.get(client)
        new = phi if old is None else self.beta * old + (1.0 - self.beta) * phi
        self.scores[client] = max(self.floor, new)

    def _score_against_server(self, clients: Sequence[int], indices: Sequence[np.ndarray],
                              units: Sequence[np.ndarray], size: int) -> dict[int, float]:
        ref = np.asarray(self.server_update, np.float64).reshape(-1)
        self.server_update = None  # one round's reference: never scored against twice
        if ref.size != size:
            raise ValueError(f"update length {size} does not match the server update's {ref.size}")
        phis = {}
        for c, i, u in zip(clients, indices, units, strict=True):
            phis[c] = _cos(u, ref[i])
            self._smooth(c, phis[c])
        return phis

    def observe(
        self,
        indices: Sequence[np.ndarray],
        values: Sequence[np.ndarray],
        weights: Sequence[float],
        size: int,
    ) -> None:
        """Fold this round's weighted direction ``sum_i p_i d_i / ||d_i||`` into the
        history (``reference="trusted"`` only; a no-op otherwise). Arguments as
        in :meth:`update_sparse`, with the clients' aggregation weights."""
        if self.reference != "trusted" or not len(indices):
            return
        self._check_history(size)  # before anything else: a wrong length is an error even
        g = np.zeros(size, dtype=np.float64)  # in a round whose direction turns out zero
        for i, v, w in zip(indices, values, weights, strict=True):
            v = np.asarray(v, np.float64)
            n = _norm(v)
            if n > 0 and np.isfinite(n):
                g[i] += (w / n) * v
        n = _norm(g)
        if n == 0.0 or not np.isfinite(n):
            return  # nothing (usable) applied: the direction stays as it was
        g /= n
        if self.history is not None:
            g = self.history_beta * self.history + (1.0 - self.history_beta) * g
            n = _norm(g)
            if n == 0.0:
                return
            g /= n
        self.history = g

    def weights(
        self, clients: Sequence[int], num_examples: Sequence[int], lam: float,
        pushes: Sequence[np.ndarray] | None = None,
    ) -> dict[int, float]:
        """p_i = lam * n_i / sum n + (1 - lam) * r_i / sum r (``rule="classes"``: the second
        term shares each class's data-size mass among its pushers by score, from
        ``pushes``, each client's update of the output bias); remembered for the next
        round."""
        n = np.asarray(num_examples, dtype=np.float64)
        r = np.array([self.scores.get(c, self.floor) for c in clients], dtype=np.float64)
        if self.rule == "classes":
            if pushes is None or len(pushes) != len(clients):
                raise ValueError("rule 'classes' needs one class push (output-bias update) "
                                 "per client")
            share = class_shares(n, r, class_pushes(pushes))
        else:
            share = r / r.sum()
        p = lam * n / n.sum() + (1.0 - lam) * share
        out = {c: float(v) for c, v in zip(clients, p, strict=True)}
        self.last_weight.update(out)
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-able state (for results and checkpoints)."""
        return {"beta": self.beta, "floor": self.floor, "reference": self.reference,
                "history_beta": self.history_beta, "rule": self.rule,
                "scores": {str(k): v for k, v in self.scores.items()},
                "last_weight": {str(k): v for k, v in self.last_weight.items()}}


def class_pushes(pushes: Sequence[np.ndarray]) -> np.ndarray:
    """(clients x classes) shares ``s_ic``: each client's positive output-bias update,
    normalised to sum 1 (uniform where no entry is positive or finite)."""
    rows = []
    for d in pushes:
        d = np.asarray(d, np.float64).reshape(-1)
        if rows and d.size != rows[0].size:
            raise ValueError(f"class pushes of different lengths: {rows[0].size} and {d.size}")
        pos = np.where(np.isfinite(d), np.maximum(d, 0.0), 0.0)
        total = pos.sum()
        rows.append(pos / total if total > 0 else np.full(d.size, 1.0 / max(d.size, 1)))
    return np.array(rows)


def class_shares(n: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The contribution term of ``rule="classes"``: sum_c m_c n_i r_i s_ic / sum_j n_j r_j s_jc
    with m_c = sum_i n_i s_ic / sum n (sums to 1; equals n / sum n for equal scores)."""
    mass = (n[:, None] * s).sum(0) / n.sum()  # m_c
    held = n[:, None] * r[:, None] * s  # n_i r_i s_ic
    per_class = held.sum(0)
    frac = np.divide(held, per_class, out=np.zeros_like(held), where=per_class > 0)
    return frac @ mass


def data_size_weights(clients: Sequence[int], num_examples: Sequence[int]) -> dict[int, float]:
    """FedAvg's weights n_i / sum n."""
    tot = float(sum(num_examples))
    return {c: n / tot for c, n in zip(clients, num_examples, strict=True)}


def flatten(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Concatenate ``arrays[name]`` for ``names`` into one float64 vector."""
    return np.concatenate([np.asarray(arrays[n], dtype=np.float64).reshape(-1) for n in names])
