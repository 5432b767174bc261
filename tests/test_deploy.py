"""Deployment Engine on loopback: the secure variant (TLS, SuperNode and SuperExec
authentication, the SuperLink behind the Fleet-only gateway) with 3 SuperNodes."""

import json
import subprocess
import sys

import pytest

from fedprune.attacks import attackers

from conftest import ROOT

pytestmark = pytest.mark.integration


def test_secure_deployment_runs_fedprune_refuses_every_probe_and_a_malformed_node(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "local_deploy.py"), "--nodes", "3", "--tls",
         "--security-probes", "--workdir", str(tmp_path / "work"), "--timeout", "600",
         # 400 examples per client, a larger step and 1,000 test images: the run's time
         # here is process start-up (a ClientApp process per message), not training
         # every node trains every round; one of the three (attack-fraction 1/3) is a
         # ClientApp that sends a malformed reply each time (fedprune.attacks.malform)
         "--run-config",
         f"strategy='fedprune' num-server-rounds=2 local-epochs=1 max-client-samples=400 "
         f"batch-size=16 lr=0.05 eval-samples=1000 fraction-train=1.0 attack='malformed' "
         # a reply lost on the way ends its round after 240 s (not the default 600 s,
         # the script's whole budget), so the failure shows in the round's record
         f"attack-fraction=0.34 round-timeout=240.0 results-dir='{out}'"],
        capture_output=True, text=True, timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    for probe in ("unregistered", "insecure", "other-ca", "superexec"):
        assert f"probe probe-{probe} exited" in log and f"probe-{probe} exited (None)" not in log
    assert "every security probe was refused" in log
    assert "Control API on the Fleet address: HTTP 404, flwr ls there failed" in log
    assert "run status: finished:completed" in log
    res = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
    (bad,) = attackers(3, 0.34, 0)
    for r in res["rounds"][1:]:  # the malformed node is refused every round, the run goes on
        assert r["clients"] == 2 and list(r["rejected"]) == [str(bad)], r["rejected"]
        assert "num-examples" in r["rejected"][str(bad)]
    assert res["rounds"][2]["accuracy"] > 0.5
    # every process the script started was stopped
    for name in ("superlink", "gateway", "supernode-0", "supernode-1", "supernode-2"):
        assert f"stopped {name}" in log
