#!/usr/bin/env python
"""Why VectorFit stalls at the majority class: a plain AdamW loop on MiniLM / Rotten Tomatoes (the quick budget),
tracing per step the loss, the spread of the pooled features across the batch, the pooler's tanh saturation and
how far each kind of vector (singular values, biases) has moved.

Usage: python benchmarks/quality/stall_diagnose.py --seed 1 --variant default [--steps 60]
Variants: default (s and b at --lr), nobias (s only), bias-lr (biases at --bias-lr), relative (s = s0 (1 + t)),
meanpool (the head reads the mean of the last hidden states instead of the CLS pooler).
Writes benchmarks/quality/results/stall/diagnose/<variant>__s<seed>.json; ``--plot`` draws
benchmarks/quality/results/stall/stall_diagnosis.png from those records.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


LABELS = {"default": "s and b at 1e-2 (old default)", "nobias": "s only (no biases)",
          "bias-lr": "biases at 1e-3", "relative": "relative s, biases at 1e-2",
          "meanpool": "mean-pooling head, biases at 1e-2"}


def plot(seed: int) -> Path:
    """CLS spread across the batch per step for every variant, and the attribution bars of the default run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = HERE / "results" / "stall" / "diagnose"
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for variant, label in LABELS.items():
        path = folder / f"{variant}__s{seed}.json"
        if path.is_file():
            trace = json.loads(path.read_text())["trace"]
            key = "pooled_spread" if variant == "meanpool" else "cls_spread"
            left.plot([t["step"] for t in trace], [t[key] for t in trace], label=label)
    left.set(xlabel="optimizer step", ylabel="std of the CLS state across the batch (mean over dims)",
             title=f"MiniLM, Rotten Tomatoes, seed {seed}: the features collapse", yscale="log")
    left.legend(fontsize=8)
    default = folder / f"default__s{seed}.json"
    if default.is_file():
        attribution = json.loads(default.read_text()).get("cls_spread_after_reset", {})
        names = list(attribution)
        right.barh(names, [attribution[n] for n in names],
                   color=["black" if n == "trained" else "tab:red" if "bias" in n else "tab:blue" for n in names])
        right.invert_yaxis()
        right.set(xlabel="CLS spread after putting one group back to its initial values",
                  title="which vectors cause it (default run, last batch)")
    fig.tight_layout()
    out = HERE / "results" / "stall" / "stall_diagnosis.png"
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot", action="store_true", help="only draw the figure from the records")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variant", default="default")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--bias-lr", type=float, default=1e-3)
    args = ap.parse_args()
    if args.plot:
        print(plot(args.seed))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import set_seed
    from vf_backends_nlp.data import load_text_dataset
    from vf_backends_nlp.models import load_text_classifier
    from vf_core import VectorFitConfig, get_vectorfit_model

    torch.set_num_threads(2)
    train, _ = load_text_dataset("rotten-tomatoes", max_train=2000, max_eval=10)
    set_seed(args.seed)
    model, tok = load_text_classifier("minilm", label_names=train.label_names)
    cfg = {"train_bias": args.variant != "nobias"}
    if args.variant == "relative":
        cfg["sigma_parametrization"] = "relative"
    vf = get_vectorfit_model(model, VectorFitConfig(**cfg))
    groups = {"sigma": [], "bias": [], "head": list(vf.head_parameters().values())}
    for v in vf.vectors:
        groups[v.kind].append(v.parameter)
    lrs = {"sigma": args.lr, "bias": args.bias_lr if args.variant == "bias-lr" else args.lr, "head": args.lr}
    opt = torch.optim.AdamW([{"params": p, "lr": lrs[k]} for k, p in groups.items() if p], weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train), generator=g).tolist()
    pooled = {}
    bert = model.bert
    bert.pooler.register_forward_hook(lambda m, i, o: pooled.__setitem__("x", (i[0][:, 0], o)))
    trace = []
    for step in range(args.steps):
        idx = order[(step * 32) % len(order):][:32]
        batch = tok([train.texts[i] for i in idx], truncation=True, max_length=48, padding=True, return_tensors="pt")
        labels = torch.tensor([train.labels[i] for i in idx])
        if args.variant == "meanpool":
            hidden = bert(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            feats = (hidden * mask).sum(1) / mask.sum(1)
            logits = model.classifier(feats)
            cls, pool = hidden[:, 0], feats
        else:
            logits = model(**batch).logits
            cls, pool = pooled["x"]
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        gnorm = torch.sqrt(sum((p.grad ** 2).sum() for grp in groups.values() for p in grp if p.grad is not None))
        opt.step()
        moved = {k: float(torch.cat([(v.parameter.detach() - v.initial).abs().flatten() for v in vf.vectors
                                     if v.kind == k]).mean()) for k in ("sigma", "bias")
                 if any(v.kind == k for v in vf.vectors)}
        trace.append({
            "step": step, "loss": float(loss), "grad_norm": float(gnorm.detach()),
            "pooled_spread": float(pool.detach().std(0).mean()),
            "pooled_abs": float(pool.detach().abs().mean()),
            "cls_spread": float(cls.detach().std(0).mean()),
            "tanh_saturated": float((pool.detach().abs() > 0.99).float().mean()),
            "pred_majority_share": float((logits.argmax(-1) == 1).float().mean()),
            **{f"moved_{k}": v for k, v in moved.items()},
        })
        if step % 10 == 0 or step == args.steps - 1:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in trace[-1].items()}))
    # attribution: the CLS spread on the last batch with one role's (or kind's) vectors put back to their start
    attribution = {}
    model.eval()

    def spread() -> float:
        with torch.no_grad():
            hidden = bert(**batch).last_hidden_state
        return float(hidden[:, 0].std(0).mean())

    attribution["trained"] = spread()
    groups_to_reset = {f"{kind}:{role}": [v for v in vf.vectors if v.kind == kind and v.role == role]
                       for kind in ("sigma", "bias") for role in ("q", "k", "v", "o", "f1", "f2")}
    groups_to_reset.update({f"{kind}:all": [v for v in vf.vectors if v.kind == kind] for kind in ("sigma", "bias")})
    for key, vecs in groups_to_reset.items():
        if not vecs:
            continue
        saved = [v.parameter.detach().clone() for v in vecs]
        with torch.no_grad():
            for v in vecs:
                v.parameter.copy_(v.initial)
        attribution[f"reset {key}"] = spread()
        with torch.no_grad():
            for v, value in zip(vecs, saved):
                v.parameter.copy_(value)
    print(json.dumps({"cls_spread_after_reset": {k: round(x, 4) for k, x in attribution.items()}}))
    out = HERE / "results" / "stall" / "diagnose"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.variant}__s{args.seed}.json").write_text(
        json.dumps({"args": vars(args), "trace": trace, "cls_spread_after_reset": attribution}, indent=1))


if __name__ == "__main__":
    main()
