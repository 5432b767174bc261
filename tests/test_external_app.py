"""Another team's Flower app (tests/external_app: its own pyproject, model and data)
uses FedPrune through the public API only, and runs through `flwr run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from fedprune_lab.run import flwr_cli, local_superlink_pids

from conftest import ROOT

APP = ROOT / "tests" / "external_app"


@pytest.mark.integration
def test_an_external_app_trains_with_fedprune_through_flwr_run(tmp_path):
    home, out = tmp_path / "flwr-home", tmp_path / "results"
    home.mkdir()
    env = {**os.environ, "FLWR_HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    before = local_superlink_pids_for(home)
    try:
        subprocess.run([flwr_cli(), "run", str(APP), "--stream", "--run-config",
                        f"num-server-rounds=2 results-dir='{out}'", "--federation-config",
                        "num-supernodes=3 init-args-num-cpus=2"],
                       check=True, env=env, timeout=300, capture_output=True)
        ls = subprocess.run([flwr_cli(), "ls", "--format", "json"], check=True, env=env,
                            capture_output=True, text=True, timeout=60)
    finally:
        for pid in local_superlink_pids_for(home) - before:
            os.kill(pid, signal.SIGTERM)
    runs = json.loads(ls.stdout)["runs"]
    assert [r["status"] for r in runs] == ["finished:completed"]
    rounds = json.loads((out / "results.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[2]["accuracy"] > rounds[0]["accuracy"]
    sys.path.insert(0, str(APP))
    try:
        from ext_app.task import make_net
    finally:
        sys.path.remove(str(APP))
    dense = 4 * sum(p.numel() for p in make_net().state_dict().values())  # float32 bytes
    for r in rounds[1:]:
        assert r["clients"] == 3 and r["bytes_up"] < 0.3 * dense * r["clients"]


def local_superlink_pids_for(home) -> set[int]:
    """:func:`fedprune_lab.run.local_superlink_pids` for ``home`` as FLWR_HOME."""
    old = os.environ.get("FLWR_HOME")
    os.environ["FLWR_HOME"] = str(home)
    try:
        return local_superlink_pids()
    finally:
        if old is None:
            del os.environ["FLWR_HOME"]
        else:
            os.environ["FLWR_HOME"] = old
