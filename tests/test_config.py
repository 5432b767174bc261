import pytest
import tomllib

from fedprune.config import ConfigError, RunConfig, resolve_data_dir

from conftest import ROOT


def test_pyproject_schema_equals_dataclass_defaults():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert table == RunConfig.defaults()


def test_the_strategies_defaults_are_the_run_configs():
    """RunConfig is where a default lives: a FedPrune-family strategy built in code (the
    plug-in API) gets the same default as a run-config that leaves the key out."""
    import inspect

    from fedprune_flwr.strategies.fedbt import FedBTPruneCore
    from fedprune_flwr.strategies.fedprune import FedPruneCore

    defaults = RunConfig()
    for cls in (FedPruneCore, FedBTPruneCore):
        shared = [(n, p.default) for n, p in inspect.signature(cls.__init__).parameters.items()
                  if hasattr(defaults, n) and p.default is not inspect.Parameter.empty]
        assert len(shared) >= 20 or cls is FedBTPruneCore
        for name, value in shared:
            assert value == getattr(defaults, name), (cls.__name__, name, value)


def test_required_key_names_exist():
    keys = set(RunConfig.keys())
    for k in ("num-server-rounds", "fraction-train", "local-epochs", "lr", "batch-size", "dataset",
              "partitioner", "model", "seed", "strategy", "data-dir", "results-dir"):
        assert k in keys


def test_unknown_key_is_rejected_with_valid_names():
    with pytest.raises(ConfigError, match="unknown run-config key 'num-rounds'.*num-server-rounds"):
        RunConfig.from_mapping({"num-rounds": 3})


def test_types_and_ranges_are_checked():
    with pytest.raises(ConfigError, match="'lr' must be float"):
        RunConfig.from_mapping({"lr": "fast"})
    with pytest.raises(ConfigError, match="'fraction-train' must be in"):
        RunConfig.from_mapping({"fraction-train": 1.5})
    with pytest.raises(ConfigError, match="noise-type"):
        RunConfig.from_mapping({"noise-type": "gaussian"})
    with pytest.raises(ConfigError, match="'grown-start' must be 'zero' or 'residual'"):
        RunConfig.from_mapping({"grown-start": "random"})
    with pytest.raises(ConfigError, match="'cgsv-rule' must be 'scores' or 'classes'"):
        RunConfig.from_mapping({"cgsv-rule": "softmax"})
    with pytest.raises(ConfigError, match="'lambda-min' must be in \\[0, lambda0 = 0.5\\]"):
        RunConfig.from_mapping({"lambda-min": 0.7})
    # values that pass a plain range check but fail later (or never): refused up front
    with pytest.raises(ConfigError, match="'seed' must be >= 0"):
        RunConfig.from_mapping({"seed": -1})
    for key in ("lr", "momentum", "weight-decay", "clip-updates"):
        for bad in (float("inf"), float("nan")):
            with pytest.raises(ConfigError, match=f"'{key}' must be a finite number"):
                RunConfig.from_mapping({key: bad})
    cfg = RunConfig.from_mapping({"lr": 1, "num-server-rounds": 3.0})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.num_server_rounds == 3


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDPRUNE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir("") == (tmp_path / "env").resolve()
    assert resolve_data_dir(str(tmp_path / "cfg")) == (tmp_path / "cfg").resolve()
    monkeypatch.delenv("FEDPRUNE_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir("") == tmp_path / "cache" / "fedprune" / "data"


def test_an_impossible_partition_is_refused_before_any_client_starts():
    from fedprune.data import load_dataset
    from fedprune_flwr.strategies.server_app import check_partition, run

    data = load_dataset("mnist-mini")  # 10,000 training images
    cfg = RunConfig.from_mapping({"partitioner": "shard"})  # 2 shards of 20 per client
    check_partition(cfg, data, 100)  # 4,000 images: fine
    with pytest.raises(ConfigError, match="cannot split 'mnist-mini' over 300 clients: shard "
                                          "partitioner needs 300 clients x 2 shards"):
        check_partition(cfg, data, 300)

    class Grid:  # the ServerApp checks with the nodes connected when it starts
        def get_node_ids(self):
            return list(range(300))

    with pytest.raises(ConfigError, match="over 300 clients"):
        run(Grid(), cfg)


def test_unknown_names_fail_at_once_with_a_did_you_mean(tmp_path):
    from fedprune.config import STRATEGY_NAMES
    from fedprune_flwr.strategies.server_app import STRATEGIES
    from fedprune_lab.run import main as fedprune_run

    assert sorted(STRATEGY_NAMES) == sorted(STRATEGIES)
    for key, typo, meant in (("strategy", "fedprun", "fedprune"), ("dataset", "mnsit", "mnist"),
                             ("model", "cnn-mnst", "cnn-mnist")):
        with pytest.raises(ConfigError, match=f"'{key}': unknown '{typo}'; did you mean '{meant}'"):
            RunConfig.from_mapping({key: typo})
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: fedprun\n")
    with pytest.raises(SystemExit, match="fedprune-run: .*did you mean 'fedprune'"):
        fedprune_run([str(bad)])


def test_every_yaml_experiment_has_an_up_to_date_toml_twin_that_flower_reads_alike():
    from flwr.common.config import parse_config_args

    from fedprune_lab.experiments import load_experiment, to_toml

    conf = ROOT / "conf"
    yamls = sorted(conf.glob("*.yaml"))
    assert len(yamls) >= 15
    for y in yamls:
        twin = y.with_suffix(".toml")
        assert twin.is_file(), f"{twin.name} missing: python -m fedprune_lab.experiments conf/*.yaml"
        assert twin.read_text() == to_toml(y), f"{twin.name} is stale: regenerate it"
        # what `flwr run . --run-config conf/<name>.toml` hands the ServerApp
        assert parse_config_args([str(twin)]) == load_experiment(y).overrides, twin.name
        assert load_experiment(twin).overrides == load_experiment(y).overrides


def test_an_experiment_file_that_is_neither_yaml_nor_toml_is_an_error(tmp_path):
    from fedprune_lab.experiments import load_experiment

    bad = tmp_path / "fedprune.json"
    bad.write_text('{"strategy": "fedprune"}')
    with pytest.raises(ConfigError, match="fedprune.json: an experiment file is YAML or TOML"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("strategy = fedprune\n")  # unquoted string
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_experiment(broken)
    typo = tmp_path / "typo.toml"
    typo.write_text('sparsty = 0.9\n')
    with pytest.raises(ConfigError, match="typo.toml: unknown run-config key 'sparsty'"):
        load_experiment(typo)
