"""``vectorfit inspect``: what an adapter, a run directory or a model contains."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from safetensors import safe_open
from vf_core.config import VectorFitConfig
from vf_core.errors import TargetError
from vf_core.roles import ROLES
from vf_core.saving import WEIGHTS_NAME, read_adapter_config
from vf_core.targets import identify_family, resolve_heads, resolve_targets

from .errors import CLIError
from .rundir import Run, is_run_dir
from .selection import choose_task, get_runner, list_tasks

__all__ = ["inspect_command", "describe_adapter", "describe_model", "method_counts", "family_mapping"]


def _fmt(n: int) -> str:
    return f"{n:,}"


# ------------------------------------------------------------------------------------------------ adapters
def describe_adapter(path: Path) -> dict:
    """A VectorFit, PEFT or BitFit adapter directory, from its files only (no model is loaded)."""
    cfg_path = path / "adapter_config.json"
    if not cfg_path.is_file():
        raise CLIError(f"{path} has no adapter_config.json: not an adapter directory")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CLIError(f"{cfg_path} is not valid JSON ({exc})") from None
    if meta.get("format") == "vectorfit-adapter":
        read_adapter_config(path)  # version checks
        vectors = meta.get("vectors", [])
        by_kind: dict[str, int] = defaultdict(int)
        by_role: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        by_layer: dict[str, int] = defaultdict(int)
        for v in vectors:
            by_kind[v["kind"]] += v["numel"]
            by_role[str(v.get("role"))][v["kind"]] += v["numel"]
            by_layer[str(v.get("layer"))] += v["numel"]
        head = _head_count(path, meta.get("modules_to_save") or [])
        config = meta.get("config", {})
        return {
            "kind": "vectorfit adapter",
            "path": str(path),
            "method": config.get("method"),
            "family": meta.get("family"),
            "base_model_class": meta.get("base_model_class"),
            "roles": sorted({v.get("role") for v in vectors if v.get("role")}, key=ROLES.index),
            "modules": len(meta.get("fingerprints", {})),
            "vectors": len(vectors),
            "trainable_by_kind": dict(by_kind),
            "trainable_by_role": {r: dict(k) for r, k in by_role.items()},
            "trainable_by_layer": dict(by_layer),
            "head_modules": meta.get("modules_to_save"),
            "head_params": head,
            "trainable_params": sum(by_kind.values()) + head,
            "config": config,
            "vf_core_version": meta.get("vf_core_version"),
        }
    if meta.get("format") == "vectorfit-bitfit":
        with safe_open(str(path / "bitfit_model.safetensors"), "pt") as fh:
            sizes = {k: _numel(fh.get_slice(k).get_shape()) for k in fh.keys()}
        heads = meta.get("heads", [])
        head = sum(n for k, n in sizes.items() if any(k.startswith(h + ".") for h in heads))
        return {"kind": "bitfit adapter", "path": str(path), "tensors": len(sizes), "head_modules": heads,
                "bias_params": sum(sizes.values()) - head, "head_params": head,
                "trainable_params": sum(sizes.values())}
    if "peft_type" in meta:
        sizes = {}
        weights = path / "adapter_model.safetensors"
        if weights.is_file():
            with safe_open(str(weights), "pt") as fh:
                sizes = {k: _numel(fh.get_slice(k).get_shape()) for k in fh.keys()}
        targets = meta.get("target_modules")
        return {"kind": f"PEFT {meta['peft_type']} adapter", "path": str(path), "r": meta.get("r"),
                "init_r": meta.get("init_r"), "target_r": meta.get("target_r"),
                "target_modules": sorted(targets) if isinstance(targets, list) else targets,
                "modules_to_save": meta.get("modules_to_save"), "saved_params": sum(sizes.values()),
                "lora_params": sum(n for k, n in sizes.items() if "lora_" in k)}
    raise CLIError(f"{cfg_path} is neither a VectorFit, BitFit nor PEFT adapter config")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _head_count(path: Path, heads: list[str]) -> int:
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        return 0
    with safe_open(str(weights), "pt") as fh:
        return sum(_numel(fh.get_slice(k).get_shape()) for k in fh.keys() if k.startswith("module::"))


# ------------------------------------------------------------------------------------------------ models
def method_counts(model, *, roles=ROLES, svfit_rank: int = 16, off_diagonals: int = 2) -> tuple[list[dict], dict, Any]:
    """Targeted modules of ``model`` (per the family) and each method's trainable count, computed from shapes."""
    try:
        family = identify_family(model, infer=True)  # declared, else inferred from the model's structure
        targets = resolve_targets(model, VectorFitConfig(roles=list(roles)), family)
    except TargetError as exc:
        raise CLIError(" ".join(str(exc).split())) from None
    heads = resolve_heads(model, VectorFitConfig(), family)
    head_ids = {id(p) for h in heads for p in model.get_submodule(h).parameters()}
    head = sum(p.numel() for p in model.parameters() if id(p) in head_ids)
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    rows, counts = [], defaultdict(int)
    for t in targets:
        d_out, d_in = t.matrix_shape()
        # a 3-D expert parameter: every count is per expert's matrix, times the experts
        copies = t.expert.experts if t.expert is not None else 1
        has_bias = (t.expert.bias is not None) if t.expert is not None else getattr(t.module, "bias", None) is not None
        start = 0
        for s in t.slices:
            k = min(s.rows, d_in)
            bias = s.rows if has_bias else 0
            row = {"module": t.name, "layer": t.layer, "role": s.role, "shape": [s.rows, int(d_in)], "k": k,
                   "bias": bool(has_bias), "targeted": s.targeted}
            if t.expert is not None:
                row["experts"] = copies
            rows.append(row)
            start += s.rows
            if not s.targeted:
                continue
            counts["vectorfit"] += copies * (k + bias)
            counts["vectorfit (sigma only)"] += copies * k
            if s.role in ("q", "k", "v", "o"):
                counts["vectorfit (attention only)"] += copies * (k + bias)
            counts[f"svfit (r={svfit_rank})"] += copies * min(svfit_rank, k)
            d = off_diagonals
            counts[f"svft (banded, d={d})"] += copies * (k * (2 * d + 1) - d * (d + 1) if k > d else k * k)
        for r in (1, 8):
            counts[f"lora r={r}"] += copies * r * (int(d_out) + int(d_in))
        counts["adalora r=12->8"] += copies * 12 * (int(d_out) + int(d_in) + 1)
    bias_params = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias") and id(p) not in head_ids)
    counts["bitfit"] = bias_params
    out = {name: n + head for name, n in counts.items()}
    out["full"] = total
    return rows, {"total_params": total, "head_params": head, "heads": heads, "methods": out}, family


def family_mapping(family) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """``(role -> module paths within a block, fused path -> {roles, split, note})`` of a declared or inferred
    family."""
    roles: dict[str, list[str]] = {r: list(family.roles.get(r, ())) for r in ROLES if family.roles.get(r)}
    fused = {}
    for rel, fm in family.fused.items():
        for r in fm.roles:
            if not fm.whole:
                roles.setdefault(r, []).append(f"{rel}[{r}]")
        fused[rel] = {"roles": list(fm.roles), "split": "whole" if fm.whole else "interleaved" if fm.order else
                      "blocked", "note": fm.note}
    return {r: roles[r] for r in ROLES if r in roles}, fused


def describe_model(model, spec: str, verbose: bool = False) -> dict:
    rows, summary, family = method_counts(model)
    by_role: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["targeted"]:
            by_role[str(r["role"])] += 1
    role_modules, fused = family_mapping(family) if family else ({}, {})
    return {"kind": "model", "model": spec, "class": type(model).__name__,
            "family": family.name if family else None, "backend": family.backend if family else None,
            "origin": family.origin if family else None, "family_notes": family.notes if family else None,
            "block_pattern": family.block_pattern if family else None, "role_modules": role_modules,
            "fused": fused,
            "roles": [r for r in ROLES if r in by_role], "modules_per_role": dict(by_role),
            "blocks": len({r["layer"] for r in rows}), **summary, "targets": rows if verbose else rows[:12],
            "targets_shown": len(rows) if verbose else min(len(rows), 12), "targets_total": len(rows)}


# ------------------------------------------------------------------------------------------------ text
def _print(info: dict) -> None:
    kind = info.get("kind")
    if kind == "run":
        run = info["run"]
        print(f"run directory {info['path']}")
        task = run.get("task_name") or run.get("task")
        print(f"  backend {run.get('backend')}, task {task}, model {run.get('model')}, data {run.get('data')}")
        print(f"  method {run.get('method_label')}")
        m = info.get("metrics") or {}
        if m:
            key = m.get("primary_metric", "eval_accuracy")
            print(f"  {key} {m.get(key)}, trainable {_fmt(m.get('trainable_params', 0))} of"
                  f" {_fmt(m.get('total_params', 0))}, {m.get('train_seconds')} s")
        else:
            print("  not finished (no metrics.json)")
        if info.get("adapter"):
            print()
            _print(info["adapter"])
        return
    if kind == "vectorfit adapter":
        print(f"VectorFit adapter {info['path']}")
        print(f"  method {info['method']}, family {info['family']}, base {info['base_model_class']}")
        print(f"  roles {','.join(info['roles'])}; {info['modules']} modules, {info['vectors']} vectors")
        print("  trainable: " + " + ".join(f"{_fmt(n)} {k}" for k, n in info["trainable_by_kind"].items())
              + f" + {_fmt(info['head_params'])} head ({', '.join(info['head_modules'] or [])})"
              + f" = {_fmt(info['trainable_params'])}")
        print("  by role:   " + ", ".join(f"{r}: " + "/".join(f"{_fmt(n)} {k}" for k, n in kinds.items())
                                         for r, kinds in info["trainable_by_role"].items()))
        print("  by layer:  " + ", ".join(f"{layer}: {_fmt(n)}" for layer, n in info["trainable_by_layer"].items()))
        return
    if kind == "model":
        inferred = info.get("origin") == "inferred"
        origin = f"inferred from its structure, no backend declares {info['class']}" if inferred \
            else f"{info['backend']} backend"
        print(f"model {info['model']}: {info['class']}, family {info['family']} ({origin})")
        if info.get("family_notes"):
            print(f"  {info['family_notes']}")
        print(f"  {info['blocks']} blocks; roles {','.join(info['roles'])}; modules per role "
              + ", ".join(f"{r}: {n}" for r, n in info["modules_per_role"].items()))
        if info.get("role_modules"):
            print(f"  blocks {info['block_pattern']}; in each: "
                  + "; ".join(f"{r} <- {', '.join(paths)}" for r, paths in info["role_modules"].items()))
        for rel, fused in (info.get("fused") or {}).items():
            print(f"  fused {rel}: {fused['note'] or '/'.join(fused['roles']) + ' ' + fused['split']}")
        head = (f"head {', '.join(info['heads'])} ({_fmt(info['head_params'])})" if info["heads"]
                else "no new head (the model keeps its own output layer)")
        print(f"  parameters {_fmt(info['total_params'])}; {head}")
        print("  trainable parameters per method (head included):")
        for name, n in info["methods"].items():
            print(f"    {name:28s} {_fmt(n):>14s}  {100 * n / max(info['total_params'], 1):8.4f}%")
        print(f"  targeted modules ({info['targets_shown']} of {info['targets_total']}; --verbose lists all):")
        for r in info["targets"]:
            experts = f"{r['experts']} experts x " if r.get("experts") else ""
            print(f"    layer {r['layer']!s:>3} {r['role'] or '-':3s} {r['module']}  {experts}"
                  f"{r['shape'][0]}x{r['shape'][1]}"
                  f"  k={r['k']}{'' if r['bias'] else '  (no bias)'}{'' if r['targeted'] else '  (not targeted)'}")
        return
    print(f"{kind} {info.get('path')}")
    for key, value in info.items():
        if key not in ("kind", "path") and value is not None:
            print(f"  {key}: {value}")


# ------------------------------------------------------------------------------------------------ command
def inspect_command(args: argparse.Namespace) -> int:
    target = args.model or args.target
    if not target:
        raise CLIError("give an adapter directory, a run directory, or a model (alias, path or --model)")
    path = Path(target).expanduser()
    if not args.model and path.is_dir() and is_run_dir(path):
        run = Run.open(path)
        adapter = describe_adapter(run.adapter_dir) if (run.adapter_dir / "adapter_config.json").is_file() else None
        info = {"kind": "run", "path": str(path), "run": {"backend": run.backend, "task_name": run.task_name,
                                                           "model": run.model_spec,
                                                           "data": run.info.get("data"), "task": run.task,
                                                           "method_label": run.info.get("method_label")},
                "metrics": run.metrics(), "adapter": adapter}
    elif not args.model and path.is_dir() and (path / "adapter_config.json").is_file():
        info = describe_adapter(path)
    else:
        task, _ = choose_task(list_tasks(), target, backend=args.backend)
        runner = get_runner(task)
        model = runner.load_model(target, num_labels=args.num_labels)
        info = describe_model(model, target, verbose=args.verbose)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print(info)
    return 0
