"""Server checkpoints: atomic files, clear errors, and resume == uninterrupted run."""

import numpy as np
import pytest

from fedprune.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip_and_corruption(tmp_path):
    path = tmp_path / "c.npz"
    arrays = {"model/w": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.eye(2, dtype=bool)}
    save_checkpoint(path, arrays, {"round": 3, "x": {"a": 0.1}})
    got, meta = load_checkpoint(path)
    assert meta["round"] == 3 and meta["x"] == {"a": 0.1}
    assert all(np.array_equal(got[k], v) and got[k].dtype == v.dtype for k, v in arrays.items())
    assert not list(tmp_path.glob(".checkpoint.*"))  # no temporary file left behind
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.ones(2))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "other.npz")


@pytest.mark.integration
def test_killed_run_resumes_to_the_same_final_model(tmp_path, monkeypatch):
    from fedprune_flwr.strategies import fedprune as fp
    from fedprune_flwr.strategies.checkpoints import CHECKPOINT_FILE

    from local_grid import simulate_local as simulate  # the checkpoint is the server's: no Ray

    over = {"strategy": "fedprune", "num-server-rounds": 2, "local-epochs": 1, "seed": 9,
            "fraction-train": 0.75, "readjust-interval": 1, "checkpoint-every": 1}
    full = simulate(4, over, tmp_path / "full")
    want, _ = load_checkpoint(tmp_path / "full" / CHECKPOINT_FILE)

    original = fp.FedPruneCore.configure_train

    def crash_in_round_2(self, server_round, *args):
        if server_round == 2:
            raise RuntimeError("simulated crash")
        return original(self, server_round, *args)

    monkeypatch.setattr(fp.FedPruneCore, "configure_train", crash_in_round_2)
    try:
        simulate(4, over, tmp_path / "cut")
    except Exception:  # the crashed run may or may not surface as an exception
        pass
    ck = tmp_path / "cut" / CHECKPOINT_FILE
    _, meta = load_checkpoint(ck)
    assert meta["round"] == 1
    # (a fresh run into this folder would refuse to start: see the test below)
    monkeypatch.setattr(fp.FedPruneCore, "configure_train", original)
    resumed = simulate(4, {**over, "resume": True}, tmp_path / "cut")
    got, meta = load_checkpoint(ck)
    assert meta["round"] == 2
    assert sorted(got) == sorted(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    assert [r["accuracy"] for r in resumed["rounds"]] == [r["accuracy"] for r in full["rounds"]]


def test_resume_refuses_missing_mismatched_and_existing_checkpoints(tmp_path):
    from fedprune.config import ConfigError, RunConfig
    from fedprune.models import model_from_config
    from fedprune_flwr.strategies.checkpoints import CHECKPOINT_FILE, Checkpointer, setup_checkpoints
    from fedprune_flwr.strategies.results import RoundRecorder
    from fedprune_flwr.strategies.server_app import build_strategy

    def strategy_for(cfg):
        return build_strategy(cfg, RoundRecorder(str(tmp_path), cfg.to_dict(), 3),
                              model_from_config(cfg, (1, 28, 28), 10))

    base = {"strategy": "fedprune", "results-dir": str(tmp_path), "checkpoint-every": 1}
    cfg = RunConfig.from_mapping({**base, "resume": True})
    with pytest.raises(CheckpointError, match="no checkpoint"):
        setup_checkpoints(cfg, strategy_for(cfg), None)
    with pytest.raises(ConfigError, match="needs checkpoint-every"):
        setup_checkpoints(RunConfig.from_mapping({"resume": True}), None, None)
    # a checkpoint written by a run with another sparsity
    other = RunConfig.from_mapping({**base, "sparsity": 0.9})
    s = strategy_for(other)
    s.latest = s.initial_arrays
    Checkpointer(tmp_path / CHECKPOINT_FILE, every=1).save(s, 1)
    with pytest.raises(CheckpointError, match=r"different run: \['sparsity'\]"):
        setup_checkpoints(cfg, strategy_for(cfg), None)
    fresh = RunConfig.from_mapping(base)
    with pytest.raises(CheckpointError, match="not overwritten"):
        setup_checkpoints(fresh, strategy_for(fresh), None)
    # another strategy's checkpoint
    avg = RunConfig.from_mapping({**base, "strategy": "fedavg", "sparsity": 0.9, "resume": True})
    with pytest.raises(CheckpointError, match="different run|strategy"):
        setup_checkpoints(avg, strategy_for(avg), None)


def test_a_checkpoint_from_before_a_new_config_key_resumes_with_its_default(tmp_path):
    from fedprune.config import RunConfig
    from fedprune.models import model_from_config
    from fedprune_flwr.strategies.checkpoints import CHECKPOINT_FILE, Checkpointer, setup_checkpoints
    from fedprune_flwr.strategies.results import RoundRecorder
    from fedprune_flwr.strategies.server_app import build_strategy

    base = {"strategy": "fedprune", "results-dir": str(tmp_path), "checkpoint-every": 1}
    old = RunConfig.from_mapping(base)
    written = {k: v for k, v in old.to_dict().items()  # an older fedprune
               if k not in ("grown-average", "cgsv-reference")}
    s = build_strategy(old, RoundRecorder(str(tmp_path), written, 3),
                       model_from_config(old, (1, 28, 28), 10))
    s.latest = s.initial_arrays
    Checkpointer(tmp_path / CHECKPOINT_FILE, every=1).save(s, 1)
    # (the run predates cgsv-reference too, so it scored against the round: below)
    cfg = RunConfig.from_mapping({**base, "resume": True, "cgsv-reference": "round"})
    fresh = build_strategy(cfg, RoundRecorder(str(tmp_path), cfg.to_dict(), 3),
                           model_from_config(cfg, (1, 28, 28), 10))
    setup_checkpoints(cfg, fresh, None)
    assert fresh.round_offset == 1
    changed = RunConfig.from_mapping({**base, "resume": True, "grown-average": "holders",
                                      "cgsv-reference": "round"})
    with pytest.raises(CheckpointError, match=r"different run: \['grown-average'\]"):
        setup_checkpoints(changed, build_strategy(
            changed, RoundRecorder(str(tmp_path), changed.to_dict(), 3),
            model_from_config(changed, (1, 28, 28), 10)), None)
    # a key whose default changed behaviour when it was added: the old run did not use
    # the new behaviour, whatever today's default is
    for ref, ok in (("round", True), ("trusted", False)):
        cfg = RunConfig.from_mapping({**base, "resume": True, "cgsv-reference": ref})
        fresh = build_strategy(cfg, RoundRecorder(str(tmp_path), cfg.to_dict(), 3),
                               model_from_config(cfg, (1, 28, 28), 10))
        if ok:
            setup_checkpoints(cfg, fresh, None)
        else:
            with pytest.raises(CheckpointError, match=r"\['cgsv-reference'\]"):
                setup_checkpoints(cfg, fresh, None)


def test_resume_ignores_keys_that_do_not_change_what_is_computed(tmp_path):
    from fedprune.config import RunConfig
    from fedprune.models import model_from_config
    from fedprune_flwr.strategies.checkpoints import CHECKPOINT_FILE, Checkpointer, setup_checkpoints
    from fedprune_flwr.strategies.results import RoundRecorder
    from fedprune_flwr.strategies.server_app import build_strategy

    def strategy_for(cfg):
        return build_strategy(cfg, RoundRecorder(cfg.results_dir, cfg.to_dict(), 3),
                              model_from_config(cfg, (1, 28, 28), 10))

    written = RunConfig.from_mapping({"strategy": "fedprune", "results-dir": str(tmp_path / "a"),
                                      "checkpoint-every": 1})
    s = strategy_for(written)
    s.latest = s.initial_arrays
    (tmp_path / "a").mkdir()
    Checkpointer(tmp_path / "a" / CHECKPOINT_FILE, every=1).save(s, 1)
    (tmp_path / "a").rename(tmp_path / "moved")  # the folder moved, checkpoints less often
    moved = RunConfig.from_mapping({"strategy": "fedprune", "results-dir": str(tmp_path / "moved"),
                                    "checkpoint-every": 5, "round-timeout": 60.0, "resume": True})
    setup_checkpoints(moved, strategy_for(moved), None)  # resumes, no error


def test_a_new_run_refuses_a_results_dir_that_holds_another_run(tmp_path):
    from fedprune.config import ConfigError, RunConfig
    from fedprune_flwr.strategies.server_app import run

    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds the results.json of another run"):
        run(None, RunConfig.from_mapping({"results-dir": str(tmp_path)}))
