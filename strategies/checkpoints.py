"""Checkpoints of a strategy's whole server state, armed by the ServerApp.

A :class:`Checkpointer` is handed to a strategy (its ``checkpointer`` attribute)
rather than mixed into it: the strategy's round loop asks it whether a round is
due and it writes, atomically, the newest global arrays, the recorder's rounds and
the strategy's own state (``extra_state``). :func:`setup_checkpoints` arms one
from the run-config and, with ``resume``, loads the last checkpoint after
checking that it was written by the same run.
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common.logger import log

from fedprune.checkpoint import CheckpointError, join, load_checkpoint, save_checkpoint, split
from fedprune.config import NOT_COMPUTED, ConfigError, RunConfig, computed

CHECKPOINT_FILE = "checkpoint.npz"


class Checkpointer:
    """Writes ``path`` after every ``every`` rounds and after the last one."""

    def __init__(self, path: str | Path, every: int) -> None:
        if every <= 0:
            raise ValueError(f"checkpoint every must be > 0, got {every}")
        self.path, self.every = Path(path), every

    def due(self, rnd: int, last: int) -> bool:
        return rnd > 0 and (rnd % self.every == 0 or rnd == last)

    def save(self, strategy: Any, rnd: int) -> None:
        """Write ``strategy``'s state after round ``rnd``: its newest global arrays
        (``latest``), its recorder and its ``extra_state`` when it has one."""
        if strategy.latest is None:
            raise CheckpointError("no global arrays to checkpoint yet")
        arrays = join("model", {k: v.numpy() for k, v in strategy.latest.items()})
        meta: dict[str, Any] = {"round": rnd, "recorder": strategy.recorder.state(),
                                "strategy": type(strategy).__name__,
                                "config": strategy.recorder.config}
        extra = getattr(strategy, "extra_state", None)
        if extra is not None:
            more_arrays, more_meta = extra()
            arrays.update(join("state", more_arrays))
            meta["state"] = more_meta
        save_checkpoint(self.path, arrays, meta)
        log(INFO, "[fedprune] checkpoint after round %d: %s", rnd, self.path)


def restore(strategy: Any, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> ArrayRecord:
    """Load a checkpoint's state into ``strategy`` (its own state, its recorder and
    its ``round_offset``); return the model arrays to start from."""
    if meta.get("strategy") != type(strategy).__name__:
        raise CheckpointError(f"checkpoint of strategy {meta.get('strategy')!r}, this run is "
                              f"{type(strategy).__name__!r}")
    load = getattr(strategy, "load_extra_state", None)
    if load is not None:
        load(split(arrays, "state"), meta.get("state", {}))
    strategy.recorder.restore(meta["recorder"])
    strategy.round_offset = int(meta["round"])
    return ArrayRecord({k: Array(v) for k, v in split(arrays, "model").items()})


def setup_checkpoints(cfg: RunConfig, strategy: Any, initial: ArrayRecord) -> ArrayRecord:
    """Arm checkpointing (``checkpoint-every`` > 0) and, with ``resume``, load the last one.

    Raises
    ------
    CheckpointError
        ``resume`` without a usable checkpoint, a checkpoint of a different run
        (its config differs), or an existing checkpoint when not resuming (it
        is never overwritten silently).
    """
    if cfg.checkpoint_every <= 0:
        if cfg.resume:
            raise ConfigError("resume=true needs checkpoint-every > 0 and a results-dir")
        return initial
    if not cfg.results_dir:
        raise ConfigError("checkpoint-every > 0 needs a results-dir for the checkpoint file")
    if not hasattr(strategy, "checkpointer"):
        raise ConfigError(f"strategy {cfg.strategy!r} does not support checkpoints")
    path = Path(cfg.results_dir) / CHECKPOINT_FILE
    strategy.checkpointer = Checkpointer(path, cfg.checkpoint_every)
    if not cfg.resume:
        if path.exists():
            raise CheckpointError(
                f"a checkpoint of an earlier run exists at {path}; set resume=true to continue "
                "it, or choose another results-dir (it is not overwritten)"
            )
        return initial
    arrays, meta = load_checkpoint(path)
    # only keys that change what is computed must agree (not the folder, nor how often
    # checkpoints are written)
    mine = {k: v for k, v in computed(cfg.to_dict()).items() if k not in NOT_COMPUTED}
    # keys added to fedprune after the checkpoint was written: what that run did
    theirs = computed({**RunConfig.predated_defaults(), **meta.get("config", {})})
    theirs = {k: v for k, v in theirs.items() if k not in NOT_COMPUTED}
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        raise CheckpointError(f"checkpoint {path} was written by a different run: {differ} differ")
    restored = restore(strategy, arrays, meta)
    log(INFO, "[fedprune] resuming after round %d from %s", meta["round"], path)
    return restored
