"""Deployment Engine on loopback: SuperLink + 3 SuperNodes over TLS with node authentication."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.integration


def test_tls_auth_deployment_runs_fedprune_and_refuses_unregistered_node(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "local_deploy.py"), "--nodes", "3", "--tls",
         "--auth", "--unregistered-probe", "--workdir", str(tmp_path / "work"), "--timeout", "600",
         # 400 examples per client, a larger step and 1,000 test images: the run's time
         # here is process start-up (a ClientApp process per message), not training
         "--run-config",
         f"strategy='fedprune' num-server-rounds=2 local-epochs=1 max-client-samples=400 "
         f"batch-size=16 lr=0.05 eval-samples=1000 results-dir='{out}'"],
        capture_output=True, text=True, timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "refused by the SuperLink (305)" in log
    assert "run status: finished:completed" in log
    res = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
    assert res["rounds"][2]["clients"] >= 2 and res["rounds"][2]["accuracy"] > 0.5
    # every process the script started was stopped
    for name in ("superlink", "supernode-0", "supernode-1", "supernode-2"):
        assert f"stopped {name}" in log
