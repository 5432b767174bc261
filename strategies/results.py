"""Per-round results: collected by the strategy, logged, written to results.json.

``results.json`` (written atomically after every round, so a killed run
keeps what it measured)::

    {"config": {...resolved run-config...},
     "rounds": [{"round": 0, "accuracy": .., "loss": .., "bytes_up": 0, "bytes_down": 0,
                 "clients": 0, "wall_s": ..}, {"round": 1, ...}, ...],
     "noise_rates": {"<client-id>": realised rate, ...},
     "summary": {"final_accuracy": .., "best_accuracy": .., "total_bytes_up": ..,
                 "total_bytes_down": .., "wall_s": ..}}

``bytes_up`` / ``bytes_down`` are the array payload bytes of the round, all
clients, counted from the arrays actually sent (element count x item size of
every array in every message; Flower's framing and the small config/metric
scalars are not counted). ``wire_bytes_up`` / ``wire_bytes_down`` are the same
messages as Flower serialises them for the Fleet API (protobuf: metadata,
records, array data), with ``total_wire_bytes_*`` in the summary; they hold the
random node ids, so they vary by a few bytes between otherwise equal runs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.common.logger import log

MB = 1e6
# counters that add up over a round (every message of it, retries included)
ADDED = ("bytes_up", "bytes_down", "wire_bytes_up", "wire_bytes_down")


class RoundRecorder:
    """Collects per-round fields, logs one progress line per round, writes results.json.

    Parameters
    ----------
    results_dir : folder for ``results.json``; empty or None = keep in memory only
    config : the resolved run-config (kebab-case), recorded as ``config``
    num_rounds : for the progress line
    """

    def __init__(
        self, results_dir: str | os.PathLike[str] | None, config: Mapping[str, Any],
        num_rounds: int,
    ) -> None:
        self.path = Path(results_dir) / "results.json" if results_dir else None
        if self.path is not None and not self.path.parent.is_absolute():
            # The ServerApp's working directory is not the project's: insist on absolute.
            raise ValueError(f"results-dir must be an absolute path, got {results_dir!r}")
        self.config = dict(config)
        self.num_rounds = num_rounds
        self.rounds: dict[int, dict[str, Any]] = {}
        self.noise_rates: dict[str, float] = {}
        self._t_run = time.monotonic()
        self._t_round: dict[int, float] = {}
        # bytes of one dense float model message (every tensor of the state dict), set by
        # the ServerApp: the summary's dense-equivalent upload is this x the replies
        self.model_bytes: int | None = None

    # -- collection ------------------------------------------------------------
    def entry(self, rnd: int) -> dict[str, Any]:
        """The (mutable) entry of round ``rnd``, created with zero counters."""
        if rnd not in self.rounds:
            self.rounds[rnd] = {
                "round": rnd, "accuracy": None, "loss": None, "bytes_up": 0, "bytes_down": 0,
                "clients": 0, "rejected": {},
            }
        return self.rounds[rnd]

    def start_round(self, rnd: int) -> None:
        """Mark the start of round ``rnd`` (for ``wall_s``)."""
        self._t_round.setdefault(rnd, time.monotonic())

    def add(self, rnd: int, **fields: Any) -> None:
        """Set fields of round ``rnd``; the byte counts (:data:`ADDED`) add up, ``rejected`` merges."""
        e = self.entry(rnd)
        for k, v in fields.items():
            if k in ADDED:
                e[k] = e.get(k, 0) + int(v)
            elif k == "rejected":
                e[k].update({str(c): str(r) for c, r in v.items()})
            else:
                e[k] = v

    def note_noise(self, client_id: int, rate: float) -> None:
        """Record a client's realised label-noise rate (reported in its replies)."""
        self.noise_rates[str(client_id)] = float(rate)

    def end_round(self, rnd: int, metrics: Mapping[str, Any] | None) -> None:
        """Close round ``rnd`` with the centralized metrics, log a line, write the file."""
        e = self.entry(rnd)
        for k, v in (metrics or {}).items():
            e[k] = float(v) if isinstance(v, (int, float)) else v
        t0 = self._t_round.get(rnd)
        e["wall_s"] = round(time.monotonic() - t0, 3) if t0 is not None else 0.0
        log(INFO, "%s", self.progress_line(rnd))
        self.flush()

    def progress_line(self, rnd: int) -> str:
        """One readable line about round ``rnd``."""
        e = self.rounds[rnd]
        up = sum(r["bytes_up"] for k, r in self.rounds.items() if k <= rnd)
        parts = [f"[fedprune] round {rnd:>3}/{self.num_rounds}"]
        if e.get("accuracy") is not None:
            parts.append(f"acc {e['accuracy']:.4f}")
        if e.get("dense_accuracy") is not None:
            parts.append(f"dense acc {e['dense_accuracy']:.4f}")
        if e.get("loss") is not None:
            parts.append(f"loss {e['loss']:.4f}")
        parts.append(f"clients {e['clients']}")
        if e["rejected"]:
            parts.append(f"rejected {len(e['rejected'])}")
        parts.append(f"up {e['bytes_up'] / MB:.2f} MB (total {up / MB:.2f})")
        parts.append(f"down {e['bytes_down'] / MB:.2f} MB")
        parts.append(f"{e.get('wall_s', 0.0):.1f} s")
        return " | ".join(parts)

    # -- checkpoints -----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the rounds so far and the noise rates."""
        return {"rounds": [self.rounds[k] for k in sorted(self.rounds)],
                "noise_rates": dict(self.noise_rates)}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's :meth:`state`."""
        self.rounds = {int(r["round"]): dict(r) for r in state["rounds"]}
        self.noise_rates = dict(state["noise_rates"])

    # -- output ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything recorded so far, as results.json holds it."""
        rounds = [self.rounds[k] for k in sorted(self.rounds)]
        accs = [r["accuracy"] for r in rounds if r.get("accuracy") is not None]
        summary = {
            "rounds_completed": max((r["round"] for r in rounds), default=0),
            "final_accuracy": accs[-1] if accs else None,
            "best_accuracy": max(accs) if accs else None,
            "total_bytes_up": sum(r["bytes_up"] for r in rounds),
            "total_bytes_down": sum(r["bytes_down"] for r in rounds),
            "total_client_flops": sum(r.get("client_flops", 0.0) for r in rounds),
            "total_dense_client_flops": sum(r.get("dense_client_flops", 0.0) for r in rounds),
            "wall_s": round(time.monotonic() - self._t_run, 3),
        }
        for k in ("wire_bytes_up", "wire_bytes_down"):
            if any(k in r for r in rounds):
                summary[f"total_{k}"] = sum(r.get(k, 0) for r in rounds)
        if self.model_bytes:
            dense = self.model_bytes * sum(int(r["clients"]) for r in rounds)
            summary["dense_bytes_up"] = dense
            summary["upload_vs_dense"] = summary["total_bytes_up"] / dense if dense else None
        return {
            "config": self.config, "rounds": rounds, "noise_rates": self.noise_rates,
            "summary": summary,
        }

    def flush(self) -> None:
        """Write results.json atomically (temporary file, fsync, rename)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(_finite(self.to_dict()), indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".results.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _finite(x: Any) -> Any:
    """Replace NaN/inf floats by None so that results.json is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
