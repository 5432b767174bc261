"""The GPU suite: large models federated on one GPU, FedAvg against FedPrune at 90% sparsity.

    python benchmarks/gpu_suite.py                 # on a GPU machine: about 10 minutes
    python benchmarks/gpu_suite.py --smoke         # anywhere: a few steps at tiny sizes (CI)

Jobs (each an in-process Flower simulation, ``device = "cuda"``, ``amp = true``,
four clients per GPU through Ray's client resources):

* **ResNet-18 on CIFAR-10 (JPEG)**: 20 clients, Dirichlet 0.3, 10 a round,
  one local epoch on every image a client holds, SGD lr 0.05;
* **the 12.7 M-parameter GPT** (``gpt-char``, ``model-width = 4``) on Shakespeare
  by speaker: 99 clients (one per speaker), 10 a round, AdamW lr 1e-3.

It prints one table: final test accuracy (and perplexity for the GPT), upload and
download MB, the upload as a fraction of dense float32 models, seconds per round
and the peak GPU memory that ``nvidia-smi`` reported while the job ran.
``--smoke`` runs both jobs with FedPrune, on the CPU, for one round of two
clients on a few examples, so that the suite cannot rot unseen:
``tests/test_gpu_suite.py`` runs it. Results go to ``--out`` (one folder per run).
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import threading
import time
from pathlib import Path

import _env  # noqa: F401  (loopback Ray, private FLWR_HOME)

ROOT = Path(__file__).resolve().parents[1]

JOBS = {
    "resnet18-cifar10": {
        "dataset": "cifar10-jpeg", "model": "resnet18", "partitioner": "dirichlet",
        "dirichlet-alpha": 0.3, "lr": 0.05, "momentum": 0.9, "batch-size": 64,
        "num-server-rounds": 10, "eval-batch-size": 1000, "clients": 20,
    },
    "gpt-shakespeare": {
        "dataset": "shakespeare", "model": "gpt-char", "model-width": 4.0,
        "partitioner": "natural", "lr": 1e-3, "batch-size": 64, "max-client-samples": 1000,
        "num-server-rounds": 5, "eval-batch-size": 500, "eval-samples": 5000, "clients": 99,
    },
}
METHODS = {"fedavg": {"strategy": "fedavg"},
           "fedprune-0.9": {"strategy": "fedprune", "sparsity": 0.9}}
SMOKE = {"num-server-rounds": 1, "clients": 2, "max-client-samples": 8, "eval-samples": 16,
         "batch-size": 4, "eval-batch-size": 16}


class GpuMemory:
    """Peak ``memory.used`` of GPU 0 (MiB) sampled by ``nvidia-smi`` every half second."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMemory:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                     "-i", "0"], capture_output=True, text=True, timeout=10, check=True).stdout
                used = float(out.strip().splitlines()[0])
                self.peak = used if self.peak is None else max(self.peak, used)
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                pass
            self._stop.wait(0.5)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def run_one(job: str, method: str, out: Path, smoke: bool, data_dir: str) -> dict:
    """One simulation; its row of the table."""
    from fedprune_lab.simulation import simulate

    settings = {**JOBS[job], **(SMOKE if smoke else {})}
    clients = int(settings.pop("clients"))
    overrides = {**settings, **METHODS[method], "data-dir": data_dir, "seed": 0,
                 "local-epochs": 1,
                 "fraction-train": 1.0 if smoke else 10 / clients,
                 "min-train-clients": clients if smoke else 10}
    if smoke:
        overrides.update({"device": "cpu", "amp": False})
        resources, cpus = {"num_cpus": 1, "num_gpus": 0.0}, 2
    else:
        overrides.update({"device": "cuda", "amp": True})
        resources, cpus = {"num_cpus": 2, "num_gpus": 0.25}, 16
    folder = out / f"{job}__{method}"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    with GpuMemory() as mem:
        res = simulate(clients, overrides, folder, client_resources=resources, num_cpus=cpus)
    wall = time.perf_counter() - t0
    rounds = [r for r in res["rounds"] if r.get("round", 0) > 0]
    last = res["rounds"][-1]
    return {
        "job": job, "method": method, "rounds": len(rounds),
        "accuracy": last.get("accuracy"), "loss": last.get("loss"),
        "up_mb": sum(r.get("bytes_up", 0) for r in rounds) / 1e6,
        "down_mb": sum(r.get("bytes_down", 0) for r in rounds) / 1e6,
        "s_per_round": (sum(r.get("wall_s", 0.0) for r in rounds) / len(rounds)) if rounds else None,
        "of_dense": res["summary"].get("upload_vs_dense"),
        "wall_s": wall, "gpu_mib": mem.peak,
    }


def table(rows: list[dict]) -> str:
    def f(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = ["| job | method | rounds | accuracy | perplexity | upload MB | upload of dense | "
             "download MB | s / round | peak GPU MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ppl = math.exp(r["loss"]) if r["job"].startswith("gpt") and r["loss"] is not None else None
        lines.append(f"| {r['job']} | {r['method']} | {r['rounds']} | {f(r['accuracy'], '.4f')} | "
                     f"{f(ppl, '.2f')} | {r['up_mb']:.1f} | {f(r['of_dense'], '.3f')} | "
                     f"{r['down_mb']:.1f} | "
                     f"{f(r['s_per_round'], '.1f')} | {f(r['gpu_mib'], '.0f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, one round, tiny sizes (CI)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_suite")
    p.add_argument("--data-dir", default="", help="data folder (default $FEDPRUNE_DATA_DIR)")
    p.add_argument("--only", nargs="*", choices=sorted(JOBS), help="these jobs only")
    a = p.parse_args(argv)
    if not a.smoke:
        import torch

        if not torch.cuda.is_available():
            p.error("no CUDA device: run with --smoke on a machine without a GPU")
    rows = []
    # the smoke run checks that every job runs: FedPrune only (its upload is compared
    # with the dense model's bytes in the table); FedAvg's path is the same minus the codec
    methods = ["fedprune-0.9"] if a.smoke else list(METHODS)
    for job in a.only or JOBS:
        for method in methods:
            rows.append(run_one(job, method, a.out, a.smoke, a.data_dir))
            print(f"[gpu-suite] {job} {method}: done in {rows[-1]['wall_s']:.0f} s", flush=True)
    text = table(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "table.md").write_text(text + "\n")
    print(text)
    return rows


if __name__ == "__main__":
    main()
