"""The GPU suite's smoke run (benchmarks/gpu_suite.py --smoke): every job of the suite with
FedPrune, on the CPU, one round at tiny sizes, so that the suite runs the day a GPU is lent."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.integration
def test_gpu_suite_smoke_runs_every_job(tmp_path, data_dir):
    env = {**os.environ, "FEDPRUNE_DATA_DIR": str(data_dir),
           "FEDPRUNE_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--smoke",
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in (out / "table.md").read_text().splitlines()[2:]]
    got = {(r[0].strip(), r[1].strip()): r for r in rows}
    assert set(got) == {("resnet18-cifar10", "fedprune-0.9"), ("gpt-shakespeare", "fedprune-0.9")}
    for (job, _method), r in got.items():
        assert r[2].strip() == "1"  # one round
        if job.startswith("gpt"):
            assert float(r[4]) > 1.0  # a perplexity
        assert 0 < float(r[6]) < 0.2  # 90% sparsity: a sparse upload
