"""Speed and memory of VectorFit against PEFT's LoRA, measured side by side in one process.

Measures, alternating the methods so that machine drift cancels: the median training step (forward,
backward, optimizer), start-up (model load + decomposition, cold and from the on-disk cache), inference
unmerged and merged against the original model, and the adapter file size; peak resident memory is measured
in one child process per method. Ratios against LoRA r=1 are the headline figures.

Usage:
    python benchmarks/speed/run.py --model bert-base            # BERT-base shape from a config (random)
    python benchmarks/speed/run.py --model minilm                # the real all-MiniLM-L6-v2
    python benchmarks/speed/run.py --model bert-base --only step --methods lora_r1,vectorfit
    python benchmarks/speed/run.py --device cuda --dtype bfloat16 --steps 10   # on a GPU: -cuda-bfloat16 files

On a GPU every timed region ends with ``torch.cuda.synchronize()``, and the memory column is the peak of
``torch.cuda.max_memory_allocated`` in each method's child process (the RSS is recorded beside it).

Writes ``benchmarks/speed/results/<model>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from methods import METHODS  # noqa: E402

RESULTS = Path(__file__).parent / "results"


#: where the models live and in which dtype (set once from the command line)
DEVICE, DTYPE = torch.device("cpu"), torch.float32


def sync() -> None:
    """Wait for the device, so that a host clock read after it covers the work queued before it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def build_model(name: str, seed: int = 0):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(seed)
    if name == "bert-base":
        from transformers import BertConfig, BertForSequenceClassification

        model = BertForSequenceClassification(BertConfig(num_labels=2))
    elif name == "minilm":
        from vf_backends_nlp.models import load_sequence_classifier

        model = load_sequence_classifier("minilm", num_labels=2)[0]
    else:
        raise SystemExit(f"unknown model {name!r}: use bert-base or minilm")
    model = model.to(device=DEVICE, dtype=DTYPE).train()
    sync()
    return model


def make_batch(model, batch: int, seq: int):
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(1000, vocab, (batch, seq), generator=gen)
    return {"input_ids": ids.to(DEVICE), "attention_mask": torch.ones_like(ids).to(DEVICE),
            "labels": torch.randint(0, 2, (batch,), generator=gen).to(DEVICE)}


def one_step(prepared, optimizer, batch, step: int) -> float:
    sync()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = prepared.module(**batch).loss
    loss.backward()
    if prepared.after_backward is not None:
        prepared.after_backward(step)
    optimizer.step()
    sync()
    return time.perf_counter() - start


def measure_steps(args, methods, setups=None, build=None, batch_of=None):
    """Median step time per method, the methods alternated round by round (``args.rounds`` of ``args.steps``).

    ``setups`` (name -> setup, default :data:`methods.METHODS`), ``build`` (a fresh model, default
    ``build_model(args.model)``) and ``batch_of`` (``(model, batch, seq) -> inputs``, default :func:`make_batch`)
    let another shape reuse the loop (``decoder.py``)."""
    setups = METHODS if setups is None else setups
    build = build or (lambda: build_model(args.model))
    batch_of = batch_of or make_batch
    prepared, optims, times = {}, {}, {m: [] for m in methods}
    for m in methods:
        prepared[m] = setups[m](build())
        optims[m] = torch.optim.AdamW(prepared[m].params, lr=1e-4, weight_decay=0.0)
    batch = batch_of(prepared[methods[0]].module, args.batch, args.seq)
    steps_taken = {m: 0 for m in methods}

    def timed(m):
        elapsed = one_step(prepared[m], optims[m], batch, steps_taken[m])
        steps_taken[m] += 1
        return elapsed

    for m in methods:  # warm-up
        timed(m)
    for r in range(args.rounds):
        order = methods[r % len(methods):] + methods[: r % len(methods)]
        for m in order:
            for _ in range(args.steps):
                times[m].append(timed(m))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {statistics.median(times[m]):.3f}s"
                                                             for m in methods), flush=True)
    trainable = {m: sum(p.numel() for p in prepared[m].params) for m in methods}
    sizes = {}
    for m in methods:
        if prepared[m].save is not None:
            with tempfile.TemporaryDirectory() as d:
                prepared[m].save(d)
                sizes[m] = sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file())
    return {m: {"step_s": statistics.median(times[m]), "steps": len(times[m]), "trainable": trainable[m],
                "adapter_bytes": sizes.get(m), **prepared[m].notes} for m in methods}


def measure_inference(args):
    from vf_core import VectorFitConfig, get_vectorfit_model

    base = build_model(args.model).eval()
    unmerged = get_vectorfit_model(build_model(args.model), VectorFitConfig()).eval()
    merged = get_vectorfit_model(build_model(args.model), VectorFitConfig()).merge_and_unload().eval()
    batch = {k: v for k, v in make_batch(base, args.batch, args.seq).items() if k != "labels"}
    models = {"original": base, "unmerged": unmerged, "merged": merged}
    times = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m(**batch)
        for r in range(args.inference_repeats):
            for k, m in (list(models.items())[r % 3:] + list(models.items())[:r % 3]):  # rotate the order
                sync()
                t = time.perf_counter()
                m(**batch)
                sync()
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: {"forward_s": v, "ratio_vs_original": v / med["original"]} for k, v in med.items()}


def measure_startup(args):
    """Seconds to decompose the model (``get_vectorfit_model``): cold (a fresh cache), then from that cache, for
    ``--startup-trials`` fresh caches, and without any cache; LoRA's and EigenTune's set-up, and the model load
    itself. A cold start returns while the cache files are still written on a background thread:
    ``vectorfit_cold_*_written_s`` is the time until they are all on disk."""
    from vf_core import VectorFitConfig, get_vectorfit_model
    from vf_core.svd import wait_for_cache_writes

    built_at = 0.0  # when the last timed() call's model was ready

    def timed(setup) -> float:
        nonlocal built_at
        model = build_model(args.model)
        t = built_at = time.perf_counter()
        setup(model)
        sync()
        return time.perf_counter() - t

    out = {}
    saved = os.environ.get("VECTORFIT_CACHE")
    try:
        for trial in range(1, args.startup_trials + 1):
            with tempfile.TemporaryDirectory() as cache:
                os.environ["VECTORFIT_CACHE"] = cache
                out[f"vectorfit_cold_{trial}_s"] = timed(lambda m: get_vectorfit_model(m, VectorFitConfig()))
                wait_for_cache_writes()
                out[f"vectorfit_cold_{trial}_written_s"] = time.perf_counter() - built_at
                out[f"vectorfit_cached_{trial}_s"] = timed(lambda m: get_vectorfit_model(m, VectorFitConfig()))
        out["vectorfit_no_cache_s"] = timed(lambda m: get_vectorfit_model(m, VectorFitConfig(svd_cache=False)))
    finally:
        if saved is None:
            os.environ.pop("VECTORFIT_CACHE", None)
        else:
            os.environ["VECTORFIT_CACHE"] = saved
    out["lora_r1_s"] = timed(METHODS["lora_r1"])
    out["eigentune_r16_s"] = timed(METHODS["eigentune_r16"])
    t = time.perf_counter()
    build_model(args.model)
    out["model_load_s"] = time.perf_counter() - t
    return out


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` (Linux) is reset at exec, unlike ``ru_maxrss``, which
    keeps the forking parent's high-water mark."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(args) -> None:
    prepared = METHODS[args.memory_child](build_model(args.model))
    optimizer = torch.optim.AdamW(prepared.params, lr=1e-4)
    batch = make_batch(prepared.module, args.batch, args.seq)
    for step in range(3):
        one_step(prepared, optimizer, batch, step)
    gpu = {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if DEVICE.type == "cuda" else {}
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), **gpu}))


#: the child's environment for the second memory column: large blocks are mapped and unmapped one by one, so the
#: peak follows the memory actually in use rather than glibc's retention of freed heap blocks, which depends on
#: each method's allocation pattern as much as on its needs
STEADY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure_memory(args, methods, command=None):
    """Peak memory of each method, each in a child process (``command(method)`` is its command line; default: this
    script with ``--memory-child``); on a CPU a second child runs with :data:`STEADY_ALLOCATOR`."""
    out = {}
    for m in methods:
        cmd = command(m) if command else [
            sys.executable, __file__, "--model", args.model, "--batch", str(args.batch), "--seq", str(args.seq),
            "--device", args.device, "--dtype", args.dtype, "--memory-child", m]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[m] = json.loads(res.stdout.strip().splitlines()[-1])
        if DEVICE.type == "cpu":  # the allocator column speaks of host memory only
            steady = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                    env={**os.environ, **STEADY_ALLOCATOR})
            out[m]["peak_rss_mb_steady_allocator"] = json.loads(steady.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        print(f"  memory {m}: " + ", ".join(f"{k} {v:.0f}" for k, v in out[m].items()), flush=True)
    return out


def table(result) -> str:
    steps, mem = result.get("steps", {}), result.get("memory", {})
    base_step = steps.get("lora_r1", {}).get("step_s")
    base = mem.get("lora_r1", {})
    columns = [("peak_rss_mb", "peak RSS (MB)", "memory / LoRA r=1"),
               ("peak_rss_mb_steady_allocator", None, "memory, steady allocator / LoRA r=1"),
               ("peak_gpu_mb", "peak GPU memory (MB)", "GPU memory / LoRA r=1")]
    columns = [c for c in columns if any(c[0] in v for v in mem.values())]
    head = ["method", "trainable", "step (s)", "step / LoRA r=1"]
    for _, absolute, ratio in columns:
        head += ([absolute] if absolute else []) + [ratio]
    lines = ["| " + " | ".join(head + ["adapter (KB)"]) + " |", "|" + "---|" * (len(head) + 1)]
    for m in dict.fromkeys(list(steps) + list(mem)):
        s, p = steps.get(m, {}), mem.get(m, {})
        cells = [m, f"{s['trainable']:,}" if s else "", f"{s['step_s']:.4f}" if s else "",
                 f"{s['step_s'] / base_step:.2f}x" if s and base_step else ""]
        for key, absolute, _ in columns:
            value = p.get(key)
            if absolute:
                cells.append(f"{value:.0f}" if value is not None else "")
            cells.append(f"{value / base[key]:.2f}x" if value is not None and base.get(key) else "")
        cells.append(f"{s['adapter_bytes'] / 1024:,.0f}" if s.get("adapter_bytes") else "")
        lines.append("| " + " | ".join(cells) + " |")
    if "inference" in result:
        inf = result["inference"]
        lines += ["", "| inference | forward (s) | / original |", "|---|---|---|"]
        lines += [f"| {k} | {v['forward_s']:.4f} | {v['ratio_vs_original']:.2f}x |" for k, v in inf.items()]
    if "startup" in result:
        lines += ["", "| start-up | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in result["startup"].items()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bert-base", choices=["bert-base", "minilm"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=2, help="steps per method per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--inference-repeats", type=int, default=20, help="forward passes per model, alternated")
    p.add_argument("--startup-trials", type=int, default=3, help="cold + cached start-ups, each on a fresh cache")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--only", default="step,memory,inference,startup")
    p.add_argument("--threads", type=int, default=int(os.environ.get("VF_BENCH_THREADS", "0")) or None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    global DEVICE, DTYPE
    DEVICE, DTYPE = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)
    methods = args.methods.split(",")
    only = set(args.only.split(","))
    result = {"model": args.model, "batch": args.batch, "seq": args.seq, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "date": time.strftime("%Y-%m-%d"), "device": args.device, "dtype": args.dtype}
    if DEVICE.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(DEVICE)
    if "step" in only:
        result["steps"] = measure_steps(args, methods)
    if "memory" in only:
        result["memory"] = measure_memory(args, methods)
    if "inference" in only:
        result["inference"] = measure_inference(args)
    if "startup" in only:
        result["startup"] = measure_startup(args)
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if (args.device, args.dtype) == ("cpu", "float32") else f"-{args.device}-{args.dtype}"
    suffix += "" if only == {"step", "memory", "inference", "startup"} else "-" + "-".join(sorted(only))
    suffix += "" if (args.batch, args.seq) == (16, 128) else f"-b{args.batch}x{args.seq}"
    (RESULTS / f"{args.model}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = table(result)
    (RESULTS / f"{args.model}{suffix}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
