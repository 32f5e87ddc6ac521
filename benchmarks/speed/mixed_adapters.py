"""Mixed-adapter batches: one batch in which the examples use 8 different adapters, against the same batch on one
adapter, and against PEFT's mixed-adapter LoRA batch (8 LoRA r=8 adapters, ``adapter_names=``).

Paper: https://arxiv.org/abs/2503.19530 (VectorFit). Every VectorFit adapter trained from one base shares its ``U``
and ``V``, so a batch can mix adapters in one factored pass (``U (s_e * (V^T x)) + b_e`` per example ``e``,
:mod:`vf_core.selection`); PEFT runs the base layer once and each LoRA adapter on its sub-batch.

The model: MiniLM's shape (BERT, 6 layers x 384, 12 heads, intermediate 1536, vocabulary 30,522, about 22.7 M
parameters) from a ``BertConfig``, randomly initialised (seed 0; random weights time the same as trained ones), a
2-label head in ``modules_to_save`` for both methods; both target the six roles (q, k, v, o, f1, f2). Every adapter
gets random values of its own (its vectors, LoRA's ``B`` matrices, its head), so no work is skipped.

Measured, in one process, inference (``eval()``, ``torch.no_grad()``), a batch of ``--batch`` examples x ``--seq``
tokens, the arms interleaved round by round (``--rounds`` rounds of ``--repeats`` calls each), medians per call:

- ``vf_one``: VectorFit, the whole batch on one adapter (the ordinary path: the cached dense weight per layer);
- ``vf_one_factored``: the whole batch through the mixed path with one adapter name (``adapter_names=["default"]*B``);
- ``vf_mixed8``: 8 adapters, examples assigned round-robin (the default ``mixed_batch_strategy="factored"``);
- ``vf_mixed8_dense``: the same with ``mixed_batch_strategy="dense"`` (each adapter's dense weights built once and
  kept: 8 dense copies of the targeted weights);
- ``peft_one`` and ``peft_mixed8``: the same with PEFT LoRA r=8 (``adapter_names=`` for the mixed batch);
- ``base``: the plain model.

Headline ratios: ``vf_mixed8 / vf_one`` (goal at most 1.15x), ``peft_mixed8 / peft_one`` and
``vf_mixed8 / peft_mixed8`` (goal below 1.0x), and the same for ``vf_mixed8_dense``. Run at low priority with one thread::

    nice -n 5 python benchmarks/speed/mixed_adapters.py --threads 1
    python benchmarks/speed/mixed_adapters.py --tiny --out /tmp/mixed-check     # a tiny shape: checks the script

Writes ``benchmarks/speed/results/mixed-adapters-<device>[-b<batch>x<seq>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from methods import ROLE_REGEX  # the six roles as a regular expression of BERT's module names (PEFT's targets)

ADAPTERS = 8


def build(tiny: bool):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    if tiny:
        cfg = BertConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_labels=2)
    else:
        cfg = BertConfig(vocab_size=30522, hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                         num_attention_heads=12, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def _randomise(params, seed: int, scale: float = 0.02) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))


def vectorfit_arm(model, device):
    from vf_core import VectorFitConfig, get_vectorfit_model

    vf = get_vectorfit_model(model, VectorFitConfig(modules_to_save=["classifier"]))
    names = ["default"] + [f"a{i}" for i in range(1, ADAPTERS)]
    for i, name in enumerate(names):
        if name != "default":
            vf.add_adapter(name)
            vf.set_adapter(name)
        _randomise(vf._live_slots().values(), seed=100 + i)
    vf.set_adapter("default")
    return vf.to(device).eval(), names


def peft_arm(model, device):
    from peft import LoraConfig, get_peft_model

    def config():
        return LoraConfig(r=8, lora_alpha=16, target_modules=ROLE_REGEX, modules_to_save=["classifier"])

    pm = get_peft_model(model, config(), adapter_name="default")
    names = ["default"] + [f"a{i}" for i in range(1, ADAPTERS)]
    for name in names[1:]:
        pm.add_adapter(name, config())
    for i, name in enumerate(names):
        params = [p for n, p in pm.named_parameters() if (f"lora_B.{name}." in n or f"modules_to_save.{name}." in n)]
        _randomise(params, seed=200 + i, scale=0.05)
    pm.set_adapter("default")
    return pm.to(device).eval(), names


def dense_arm(vf, batch, names):
    """The mixed batch with ``mixed_batch_strategy="dense"`` (each adapter's dense weights cached)."""
    vf.mixed_batch_strategy = "dense"
    try:
        return vf(**batch, adapter_names=names)
    finally:
        vf.mixed_batch_strategy = "factored"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    base = build(args.tiny).to(device)
    vf, vf_names = vectorfit_arm(build(args.tiny), device)
    peft_model, peft_names = peft_arm(build(args.tiny), device)
    g = torch.Generator().manual_seed(1)
    vocab = base.config.vocab_size
    batch = {"input_ids": torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(device),
             "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long, device=device)}
    mixed_vf = [vf_names[i % ADAPTERS] for i in range(args.batch)]
    mixed_peft = [peft_names[i % ADAPTERS] for i in range(args.batch)]

    arms = {
        "base": lambda: base(**batch),
        "vf_one": lambda: vf(**batch),
        "vf_one_factored": lambda: vf(**batch, adapter_names=["default"] * args.batch),
        "vf_mixed8": lambda: vf(**batch, adapter_names=mixed_vf),
        "vf_mixed8_dense": lambda: dense_arm(vf, batch, mixed_vf),
        "peft_one": lambda: peft_model(**batch),
        "peft_mixed8": lambda: peft_model(**batch, adapter_names=mixed_peft),
    }
    # correctness first: each example of the mixed batch equals its adapter alone
    with torch.no_grad():
        mixed = vf(**batch, adapter_names=mixed_vf).logits
        mixed_dense = dense_arm(vf, batch, mixed_vf).logits
        worst = 0.0
        for name in vf_names:
            vf.set_adapter(name)
            alone = vf(**batch).logits
            rows = [i for i, n in enumerate(mixed_vf) if n == name]
            worst = max(worst, (mixed[rows] - alone[rows]).abs().max().item(),
                        (mixed_dense[rows] - alone[rows]).abs().max().item())
        vf.set_adapter("default")
        for fn in arms.values():  # warm-up (dense caches, allocator)
            fn()
    times: dict[str, list[float]] = {k: [] for k in arms}
    with torch.no_grad():
        for r in range(args.rounds):
            order = list(arms) if r % 2 == 0 else list(reversed(arms))
            for name in order:
                for _ in range(args.repeats):
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    arms[name]()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        "vf_mixed8 / vf_one": med["vf_mixed8"] / med["vf_one"],
        "vf_mixed8_dense / vf_one": med["vf_mixed8_dense"] / med["vf_one"],
        "vf_mixed8_dense / peft_mixed8": med["vf_mixed8_dense"] / med["peft_mixed8"],
        "vf_mixed8 / vf_one_factored": med["vf_mixed8"] / med["vf_one_factored"],
        "vf_one_factored / vf_one": med["vf_one_factored"] / med["vf_one"],
        "peft_mixed8 / peft_one": med["peft_mixed8"] / med["peft_one"],
        "vf_mixed8 / peft_mixed8": med["vf_mixed8"] / med["peft_mixed8"],
        "vf_one / base": med["vf_one"] / med["base"],
        "peft_one / base": med["peft_one"] / med["base"],
    }
    goals = {"vf_mixed8 / vf_one <= 1.15": ratios["vf_mixed8 / vf_one"] <= 1.15,
             "vf_mixed8 / peft_mixed8 < 1.0": ratios["vf_mixed8 / peft_mixed8"] < 1.0,
             "vf_mixed8_dense / vf_one <= 1.15": ratios["vf_mixed8_dense / vf_one"] <= 1.15,
             "vf_mixed8_dense / peft_mixed8 < 1.0": ratios["vf_mixed8_dense / peft_mixed8"] < 1.0}
    result = {
        "model": "tiny BERT" if args.tiny else "MiniLM shape (BERT 6 x 384, random weights)",
        "device": str(device), "threads": args.threads, "batch": args.batch, "seq": args.seq,
        "rounds": args.rounds, "repeats": args.repeats, "adapters": ADAPTERS,
        "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
        "median_s": med, "ratios": ratios, "goals_met": goals,
        "tokens_per_s": {k: args.batch * args.seq / v for k, v in med.items()},
        "mixed_max_abs_diff_vs_alone": worst, "all_times_s": times,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"mixed-adapters{'-tiny' if args.tiny else ''}-{device.type}"
    if (args.batch, args.seq) != (32, 128):
        stem += f"-b{args.batch}x{args.seq}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Mixed-adapter batches, {result['model']}, {device.type}, {args.threads} thread(s), batch "
             f"{args.batch} x {args.seq} tokens, inference; medians of {args.rounds} x {args.repeats} interleaved calls"
             " (benchmarks/speed/mixed_adapters.py).", "",
             "| arm | median forward (s) | tokens/s |", "|---|---|---|"]
    lines += [f"| {k} | {v:.4f} | {result['tokens_per_s'][k]:,.0f} |" for k, v in med.items()]
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.2f}x |" for k, v in ratios.items()]
    lines += ["", "| goal | met |", "|---|---|"] + [f"| {k} | {'yes' if v else 'no'} |" for k, v in goals.items()]
    lines += ["", f"Max abs logit difference, mixed batch vs each adapter alone: {worst:.2e}."]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
