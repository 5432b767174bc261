"""FedBT partial training: client compute and upload relative to dense FedAvg, next to the paper's.

    python benchmarks/fedbt_cost.py [--rounds 10] [--sparsity 0.8] [--no-bert-base]
                                    [--accuracy-rounds 0] [--out DIR]

Per model and method, the mean over ``--rounds`` rounds of one client's

* compute: training FLOPs per example (:func:`fedprune.flops.partial_training_flops`:
  forward over every layer, backward down to the lowest trained layer, weight
  gradients of trained layers only, scaled by mask density) over dense FedAvg's
  (:func:`fedprune.flops.training_flops`);
* upload: bytes of the encoded reply (:func:`fedprune.codec.encode_state` of the
  trained tensors, sparse ones under the global mask) over dense FedAvg's
  (every tensor, float32);

computed from the schedules (:mod:`fedprune.partial`), the FLOP counter and the
codec, without training. ``fedbt-prune`` and ``fedprune`` use FedPrune's
initial global mask (largest weights, ERK densities at ``--sparsity``); their
masks move during training, their sizes do not. Models: ``bert-tiny``
(tokens-synthetic shapes), ``vit`` (28x28x1, 10 classes), and a BERT-base
shaped encoder (12 blocks, dim 768, 12 heads, MLP 3072, 30,522 tokens, 128
positions, 2 classes; random weights) for the comparison with FedBT's
figures, which were measured on BERT-base: seconds of client computation
and MB transferred (34.31% / 7.04% in further pre-training, 48.26% / 20.19%
in fine-tuning). ``--accuracy-rounds N`` also runs N rounds of each method
on bert-tiny / tokens-synthetic through Flower's simulation (2 clients) and
reports accuracy and the measured ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedprune import codec, wire
from fedprune.flops import forward_order, layer_macs, partial_training_flops, training_flops
from fedprune.masks import layer_budgets, magnitude_masks, prunable_names
from fedprune.models import TextEncoder, build_model
from fedprune.partial import PartialSchedule, layer_groups

import _env  # noqa: F401  (loopback Ray, private FLWR_HOME; before Ray / Flower load)

PAPER = {"pretrain": (34.31, 7.04), "finetune": (48.26, 20.19)}  # FedBT, BERT-base: % of BERT-FL


def models(bert_base: bool) -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    """name -> (model, one example's input shape)."""
    out = {
        "bert-tiny": (build_model("bert-tiny", (32,), 4, seed=0, vocab_size=200), (32,)),
        "vit": (build_model("vit", (1, 28, 28), 10, seed=0), (1, 28, 28)),
    }
    if bert_base:
        torch.manual_seed(0)
        out["bert-base shape"] = (TextEncoder(128, 30522, 2, dim=768, depth=12, heads=12,
                                              hidden=3072), (128,))
    return out


def costs(model: torch.nn.Module, shape: tuple[int, ...], rounds: int,
          sparsity: float) -> list[tuple[str, float, float, float]]:
    """(method, compute %, upload %, download %) rows for one model, means over ``rounds`` rounds."""
    state = wire.state_to_numpy(model.state_dict())
    dense_bytes = sum(v.nbytes for v in state.values())
    macs, order = layer_macs(model, shape), forward_order(model, shape)
    dense_flops = training_flops(macs, 1)
    params = dict(model.named_parameters())
    names = prunable_names(model)
    budgets = layer_budgets({k: tuple(params[k].shape) for k in names}, 1.0 - sparsity, "erk")
    masks_t = magnitude_masks({k: params[k] for k in names}, budgets)
    masks = {k: m.numpy() for k, m in masks_t.items()}
    groups = layer_groups(model)

    def upload(keys: list[str], with_masks: bool) -> int:
        sub = {k: state[k] for k in keys}
        return wire.nbytes(codec.encode_state(sub, {k: masks[k] for k in keys if k in masks}
                                              if with_masks else {}))

    sparse_down = 100 * upload(list(state), True) / dense_bytes  # W on M, every layer
    rows = [("fedavg (dense, all layers)", 100.0, 100.0, 100.0),
            (f"fedprune ({sparsity:.0%} sparse)",
             100 * training_flops(macs, 1, masks_t) / dense_flops, sparse_down, sparse_down)]
    for sparse in (False, True):
        for mode in ("pretrain", "finetune"):
            sched = PartialSchedule(groups, mode, rounds)
            flops, up = [], []
            for t in range(1, rounds + 1):
                keys = sched.tensors_for(t)
                flops.append(partial_training_flops(macs, 1, order, keys, masks_t if sparse else None))
                up.append(upload(keys, sparse))
            label = f"fedbt-prune {mode}" if sparse else f"fedbt {mode}"
            rows.append((label, 100 * float(np.mean(flops)) / dense_flops,
                         100 * float(np.mean(up)) / dense_bytes, sparse_down if sparse else 100.0))
    return rows


def accuracy_runs(rounds: int, out: Path) -> list[dict]:
    """Measured: N rounds of each method on bert-tiny / tokens-synthetic (2 clients)."""
    from fedprune_lab.simulation import simulate

    base = {"model": "bert-tiny", "dataset": "tokens-synthetic", "num-server-rounds": rounds,
            "fraction-train": 1.0, "min-train-clients": 2, "local-epochs": 1, "lr": 0.05,
            "max-client-samples": 500, "seed": 0}
    runs = {"fedavg": {"strategy": "fedavg"},
            "fedprune": {"strategy": "fedprune"},
            "fedbt pretrain": {"strategy": "fedbt", "fedbt-mode": "pretrain"},
            "fedbt finetune": {"strategy": "fedbt", "fedbt-mode": "finetune"},
            "fedbt-prune pretrain": {"strategy": "fedbt-prune", "fedbt-mode": "pretrain"},
            "fedbt-prune finetune": {"strategy": "fedbt-prune", "fedbt-mode": "finetune"}}
    res = {}
    for label, extra in runs.items():
        t0 = time.perf_counter()
        res[label] = simulate(2, {**base, **extra}, out / label.replace(" ", "-"))
        print(f"  ran {label}: {time.perf_counter() - t0:.0f} s", flush=True)
    ref = res["fedavg"]["rounds"][1:]
    ref_up = np.mean([r["bytes_up"] for r in ref])
    rows = []
    for label, r in res.items():
        rr = r["rounds"][1:]
        rows.append({
            "method": label,
            "final_accuracy": r["summary"]["final_accuracy"],
            "best_accuracy": r["summary"]["best_accuracy"],
            "compute_pct": 100 * sum(x["client_flops"] for x in rr)
            / sum(x["dense_client_flops"] for x in rr),
            "upload_pct": 100 * float(np.mean([x["bytes_up"] for x in rr])) / ref_up,
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10, help="rounds the schedules span (FedBT's example: 10)")
    p.add_argument("--sparsity", type=float, default=0.8, help="FedPrune's sparsity for the -prune rows")
    p.add_argument("--no-bert-base", action="store_true", help="skip the 110M-parameter BERT-base shape")
    p.add_argument("--accuracy-rounds", type=int, default=0, help="also run this many rounds (0 = no)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fedbt_cost")
    args = p.parse_args()
    torch.set_num_threads(1)
    lines = [f"FedBT cost per client and round, mean over {args.rounds} rounds, % of dense FedAvg "
             "on the same model (compute: training FLOPs; upload / download: encoded bytes)", ""]
    lines.append("| model | method | compute % | upload % | download % | FedBT paper (BERT-base) "
                 "compute / communication % |")
    lines.append("|---|---|---|---|---|---|")
    table = {}
    for name, (model, shape) in models(not args.no_bert_base).items():
        t0 = time.perf_counter()
        rows = costs(model, shape, args.rounds, args.sparsity)
        table[name] = rows
        n = sum(p.numel() for p in model.parameters())
        for method, c, u, d in rows:
            paper = next((f"{PAPER[m][0]:.2f} / {PAPER[m][1]:.2f}" for m in PAPER
                          if method == f"fedbt {m}"), "")
            lines.append(f"| {name} ({n / 1e6:.2f}M) | {method} | {c:.1f} | {u:.1f} | {d:.1f} | {paper} |")
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    if args.accuracy_rounds > 0:
        with tempfile.TemporaryDirectory() as tmp:
            acc = accuracy_runs(args.accuracy_rounds, Path(tmp))
        lines += ["", f"Measured, bert-tiny on tokens-synthetic, {args.accuracy_rounds} rounds, 2 clients "
                  "x 500 examples, 1 local epoch, lr 0.05 (Flower simulation; compute and upload as % "
                  "of what the clients reported / sent against dense FedAvg's run):", "",
                  "| method | final acc | best acc | compute % | upload % |", "|---|---|---|---|---|"]
        for r in acc:
            lines.append(f"| {r['method']} | {r['final_accuracy']:.4f} | {r['best_accuracy']:.4f} | "
                         f"{r['compute_pct']:.1f} | {r['upload_pct']:.1f} |")
        table["measured"] = acc  # type: ignore[assignment]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
