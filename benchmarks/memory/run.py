"""Memory at scale: decomposing a 1B-class decoder on the CPU, against the plain model.

VectorFit (https://arxiv.org/abs/2503.19530) replaces every targeted weight ``W0`` by frozen factors ``U``, ``V^T``
and trained singular values. This script measures what that costs when a model is large: start-up time and peak
memory of ``get_vectorfit_model`` against building the plain model, and whether the peak stays within

    bound = (the process with the plain model built) + (the factors' bytes) + (one layer's temporaries)
            + (what the first call loads once: plugins, LAPACK's code; measured on a tiny matrix)

which is what decomposing, swapping in and freeing one target at a time allows (``vf_core.injection``).

The shape (Llama-style, built from a ``LlamaConfig``, random weights, nothing downloaded): hidden 2048, 16 layers,
32 heads, 8 key/value heads, gated MLP 5632, vocabulary 32,000, LM head untied: 0.85 B parameters.

Every measurement runs in its own child process (peak RSS is ``VmHWM``, reset with ``/proc/self/clear_refs`` where
a phase is measured alone; ``ru_maxrss`` elsewhere):

- ``plain``: build the model (``from_config``, then the dtype): time, the process's peak RSS and its RSS after.
- ``layer``: one matrix of each distinct targeted shape, decomposed alone through ``get_vectorfit_model``: the
  peak above (the weight + its factors) is that layer's temporaries; the largest is the bound's last term. Also
  the largest relative error of ``U diag(s) V^T`` against ``W0`` at init, in the model's dtype.
- ``vectorfit``: build the model, then ``get_vectorfit_model`` with the default config: start-up time, the peak
  RSS of the injection alone and of the whole process, the RSS after, the factors' bytes against the weights they
  replace, peak / bound.

The SVD cache is off by default (``VECTORFIT_SVD_CACHE=0``: every start decomposes); ``--cache tmp`` gives the
children an empty temporary cache directory instead (cold: decomposed and written).

How to run it (about 8 minutes per ``vectorfit`` child at one thread on a busy 2-core machine)::

    nice -n 5 python benchmarks/memory/run.py                           # float32 and bfloat16, this checkout
    nice -n 5 python benchmarks/memory/run.py --src /path/to/other/checkout --label before
    python benchmarks/memory/run.py --tiny --out /tmp/memory-check     # a tiny shape: checks the script (~1 min)

Writes ``benchmarks/memory/results/memory-1b[-<N>layers][-<label>][-cache].json`` and ``.md`` (``memory-tiny...`` with
``--tiny``); a ``--cache tmp`` run removes its temporary cache at the end. The committed results: ``memory-1b-cache``
(the full shape, both dtypes, cache cold) and ``memory-1b-4layers-{before,after}-cache`` (bfloat16, 4 layers, the
code before streaming against after, through ``--src``)::

    nice -n 5 python benchmarks/memory/run.py --cache tmp
    nice -n 5 python benchmarks/memory/run.py --cache tmp --layers 4 --dtypes bfloat16 --parts vectorfit \
        --src /path/to/a/checkout/of/43db64c --label before
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGES = ("packages/vf-core/src", "packages/vf-backends-nlp/src", "src")

SHAPES = {
    "full": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=5632, vocab_size=32000),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=176, vocab_size=512),
}
MB = 2 ** 20


# ------------------------------------------------------------------------------------------------ in the children
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def peak_mb() -> float:
    """The peak RSS since exec or the last :func:`reset_peak`."""
    return _status_kb("VmHWM") / 1024


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)
        return True
    except OSError:
        return False


def settle() -> float:
    """Collect garbage, hand the heap's free blocks back, and return the RSS."""
    import gc

    gc.collect()
    try:
        from vf_core.heap import return_freed_memory

        return_freed_memory()
    except ImportError:
        pass
    return rss_mb()


def llama_config(args):
    from transformers import LlamaConfig

    shape = dict(SHAPES["tiny" if args.tiny else "full"])
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    return LlamaConfig(**shape, tie_word_embeddings=False,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def build_model(args):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device("cpu"):
        return LlamaForCausalLM(llama_config(args)).to(getattr(torch, args.dtype)).train()


def child_plain(args) -> dict:
    import torch  # noqa: F401

    base = settle()
    start = time.perf_counter()
    model = build_model(args)
    seconds = time.perf_counter() - start
    peak = peak_mb()
    return {"build_s": seconds, "rss_imports_mb": base, "peak_rss_mb": peak, "rss_after_mb": settle(),
            "model_mb": tensor_bytes([*model.parameters(), *model.buffers()]) / MB,
            "parameters": sum(p.numel() for p in model.parameters())}


def _factor_bytes(layers) -> tuple[int, int]:
    """(bytes of every tensor the decomposed layers hold but biases, bytes of the dense weights they replace)."""
    factors = replaced = 0
    for layer in layers.values():
        factors += tensor_bytes(t for n, t in [*layer.named_parameters(), *layer.named_buffers()]
                                if not n.endswith("bias"))
        for part in layer.parts.values():
            u, vt = part.u, part.vt
            replaced += u.shape[0] * vt.shape[1] * u.element_size()
    return factors, replaced


def child_layer(args) -> dict:
    """One matrix of each targeted shape, decomposed alone: its temporaries and its exactness at init."""
    import torch
    from torch import nn
    from vf_core import get_vectorfit_model

    cfg = llama_config(args)
    h, i = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    shapes = {"q_proj": (h, h), "k_proj": (kv, h), "gate_proj": (i, h), "down_proj": (h, i)}
    dtype = getattr(torch, args.dtype)
    # first a tiny matrix: what the first call loads once (plugins, LAPACK's code) is not a layer's temporaries
    before = settle()
    reset_peak()
    get_vectorfit_model(nn.Sequential(nn.Linear(8, 8)).to(dtype), target_modules=["0"], modules_to_save=[])
    out = {"first_call_mb": peak_mb() - before, "matrices": {}}
    for name, (d_out, d_in) in shapes.items():
        torch.manual_seed(0)
        holder = nn.Sequential()
        holder.add_module(name, nn.Linear(d_in, d_out, bias=False))
        nn.init.normal_(holder[0].weight, std=cfg.initializer_range)
        holder = holder.to(dtype)
        w0 = holder[0].weight.detach().clone()  # for the exactness check only, allocated before the baseline
        before = settle()
        reset_peak()
        vf = get_vectorfit_model(holder, target_modules=[name], modules_to_save=[])
        peak = peak_mb()
        layers = vf.decomposed_layers()
        factors, weight = _factor_bytes(layers)
        layer = next(iter(layers.values()))
        dense = layer.dense_weight(torch.float32)
        err = float((dense - w0.float()).norm() / w0.float().norm())
        stored = layer.weight.detach()  # rebuilt and rounded to the model's dtype, as inference uses it
        err_stored = float((stored.float() - w0.float()).norm() / w0.float().norm())
        out["matrices"][name] = {"shape": [d_out, d_in], "weight_mb": weight / MB, "factors_mb": factors / MB,
                     "temporaries_mb": peak - before - factors / MB, "rel_error_init": err,
                     "rel_error_init_stored_dtype": err_stored, "dtype_eps": torch.finfo(dtype).eps,
                     "factor_dtype": str(layer.parts["main"].u.dtype).replace("torch.", "")}
        del vf, layers, layer, holder, w0, dense, stored
    return out


def child_vectorfit(args) -> dict:
    import torch  # noqa: F401
    from vf_core import get_vectorfit_model

    base = settle()
    start = time.perf_counter()
    model = build_model(args)
    build_s = time.perf_counter() - start
    build_peak = peak_mb()
    model_mb = tensor_bytes([*model.parameters(), *model.buffers()]) / MB
    before = settle()
    reset_peak()
    start = time.perf_counter()
    vf = get_vectorfit_model(model)
    startup_s = time.perf_counter() - start
    inject_peak = peak_mb()
    writes = {}
    if os.environ.get("VECTORFIT_SVD_CACHE") != "0":
        from vf_core.svd import wait_for_cache_writes

        start = time.perf_counter()
        wait_for_cache_writes()  # written on a background thread after get_vectorfit_model returned
        writes = {"cache_writes_after_return_s": time.perf_counter() - start,
                  "peak_rss_with_cache_writes_mb": peak_mb()}
    layers = vf.decomposed_layers()
    factors, replaced = _factor_bytes(layers)
    dtypes = sorted({str(t.dtype).replace("torch.", "") for layer in layers.values() for t in layer.buffers()})
    return {"build_s": build_s, "startup_s": startup_s, "rss_imports_mb": base, "build_peak_rss_mb": build_peak,
            "rss_model_mb": before, "inject_peak_rss_mb": inject_peak,
            "process_peak_rss_mb": max(build_peak, inject_peak), "rss_after_mb": settle(),
            "model_mb": model_mb, "factors_mb": factors / MB, "replaced_weights_mb": replaced / MB,
            "targets": len(layers), "factor_dtypes": dtypes, **writes}


CHILDREN = {"plain": child_plain, "layer": child_layer, "vectorfit": child_vectorfit}


# ------------------------------------------------------------------------------------------------ in the parent
def run_child(args, mode: str, dtype: str, cache_dir) -> dict:
    src = Path(args.src).resolve()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join(str(src / p) for p in PACKAGES))
    if cache_dir is None:
        env["VECTORFIT_SVD_CACHE"] = "0"
    else:
        env.pop("VECTORFIT_SVD_CACHE", None)
        env["VECTORFIT_CACHE"] = tempfile.mkdtemp(prefix="vf-memory-cache-", dir=cache_dir)
    cmd = [sys.executable, __file__, "--child", mode, "--dtype", dtype, "--threads", str(args.threads)]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--layers", str(args.layers)] if args.layers else []
    print(f"  {mode} {dtype} ...", flush=True)
    cmd = ["nice", "-n", str(args.nice)] + cmd if args.nice else cmd
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} {dtype} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["child_wall_s"] = time.perf_counter() - start
    print(f"    {json.dumps(result)}", flush=True)
    return result


def summarise(dtype_result: dict) -> dict:
    plain, layer, vf = dtype_result["plain"], dtype_result["layer"], dtype_result["vectorfit"]
    worst = max(layer["matrices"].values(), key=lambda r: r["temporaries_mb"])
    bound = vf["rss_model_mb"] + vf["factors_mb"] + worst["temporaries_mb"] + layer["first_call_mb"]
    return {"bound_mb": bound, "largest_layer_temporaries_mb": worst["temporaries_mb"],
            "first_call_mb": layer["first_call_mb"],
            "inject_peak_over_bound": vf["inject_peak_rss_mb"] / bound,
            "inject_peak_over_model_plus_factors": vf["inject_peak_rss_mb"] / (vf["rss_model_mb"] + vf["factors_mb"]),
            "process_peak_over_plain_peak": vf["process_peak_rss_mb"] / plain["peak_rss_mb"],
            "rss_after_over_plain": vf["rss_after_mb"] / plain["rss_after_mb"],
            "factors_over_replaced_weights": vf["factors_mb"] / vf["replaced_weights_mb"],
            "startup_over_plain_build": (vf["build_s"] + vf["startup_s"]) / plain["build_s"],
            "max_rel_error_init": max(r["rel_error_init"] for r in layer["matrices"].values()),
            "max_rel_error_init_stored_dtype": max(r["rel_error_init_stored_dtype"]
                                                   for r in layer["matrices"].values())}


def table(result: dict) -> str:
    lines = [f"# Memory at scale: {result['shape_name']}", "",
             f"{result['parameters'] / 1e9:.2f} B parameters; code: {result['label']} ({result['commit']});"
             f" SVD cache: {result['cache']}; torch threads {result['threads']}; {result['machine']}", "",
             "| | " + " | ".join(result["dtypes"]) + " |", "|---|" + "---|" * len(result["dtypes"])]
    rows = [("plain model: build (s)", "plain", "build_s", "{:.1f}"),
            ("plain model: peak RSS (MB)", "plain", "peak_rss_mb", "{:,.0f}"),
            ("plain model: weights (MB)", "plain", "model_mb", "{:,.0f}"),
            ("VectorFit: get_vectorfit_model (s)", "vectorfit", "startup_s", "{:.1f}"),
            ("VectorFit: RSS with the plain model (MB)", "vectorfit", "rss_model_mb", "{:,.0f}"),
            ("VectorFit: factors (MB)", "vectorfit", "factors_mb", "{:,.0f}"),
            ("VectorFit: dense weights they replace (MB)", "vectorfit", "replaced_weights_mb", "{:,.0f}"),
            ("VectorFit: peak RSS while injecting (MB)", "vectorfit", "inject_peak_rss_mb", "{:,.0f}"),
            ("... until the cache writes end (MB)", "vectorfit", "peak_rss_with_cache_writes_mb", "{:,.0f}"),
            ("VectorFit: RSS after (MB)", "vectorfit", "rss_after_mb", "{:,.0f}"),
            ("bound: model + factors + largest layer's temporaries + first call (MB)", "summary", "bound_mb",
             "{:,.0f}"),
            ("largest layer's temporaries (MB)", "summary", "largest_layer_temporaries_mb", "{:,.0f}"),
            ("first call's one-time loading (MB)", "summary", "first_call_mb", "{:,.0f}"),
            ("**peak / bound**", "summary", "inject_peak_over_bound", "**{:.3f}**"),
            ("peak / (model + factors)", "summary", "inject_peak_over_model_plus_factors", "{:.3f}"),
            ("process peak / plain model's peak", "summary", "process_peak_over_plain_peak", "{:.2f}x"),
            ("RSS after / plain model's", "summary", "rss_after_over_plain", "{:.2f}x"),
            ("factors / replaced weights (bytes)", "summary", "factors_over_replaced_weights", "{:.2f}x"),
            ("start-up (build + inject) / plain build", "summary", "startup_over_plain_build", "{:.0f}x"),
            ("largest rel. error of U diag(s) V^T at init (float32)", "summary", "max_rel_error_init", "{:.1e}"),
            ("... rebuilt in the model's dtype", "summary", "max_rel_error_init_stored_dtype", "{:.1e}")]
    for label, part, key, fmt in rows:
        cells = []
        for d in result["dtypes"]:
            value = result["results"][d].get(part, {}).get(key)
            cells.append(fmt.format(value) if value is not None else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Factors' dtypes: " + "; ".join(f"{d}: {', '.join(result['results'][d]['vectorfit']['factor_dtypes'])}"
                                                  for d in result["dtypes"]), "",
              "One matrix decomposed alone (temporaries = peak RSS above the weight and its factors):", "",
              "| dtype | matrix | shape | weight (MB) | factors (MB) | temporaries (MB) | rel. error at init |",
              "|---|---|---|---|---|---|---|"]
    for d in result["dtypes"]:
        for name, r in result["results"][d].get("layer", {}).get("matrices", {}).items():
            lines.append(f"| {d} | {name} | {r['shape'][0]} x {r['shape'][1]} | {r['weight_mb']:.0f} |"
                         f" {r['factors_mb']:.0f} | {r['temporaries_mb']:.0f} | {r['rel_error_init']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--tiny", action="store_true", help="a tiny shape that checks the script in seconds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", type=int, default=0, help="another number of layers (a shorter comparison)")
    parser.add_argument("--cache", choices=("off", "tmp"), default="off")
    parser.add_argument("--src", default=str(REPO), help="the checkout whose packages the children import")
    parser.add_argument("--label", default="", help="a name for this run (e.g. 'before'), part of the file name")
    parser.add_argument("--nice", type=int, default=0, help="run the children under nice -n NICE")
    parser.add_argument("--parts", default="plain,layer,vectorfit")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--child", choices=tuple(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return

    cache_root = None if args.cache == "off" else tempfile.mkdtemp(prefix="vf-memory-")
    src = Path(args.src).resolve()
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    with torch.device("meta"):
        from transformers import LlamaForCausalLM

        params = sum(p.numel() for p in LlamaForCausalLM(llama_config(args)).parameters())
    result = {"shape_name": "tiny" if args.tiny else "1B-class Llama-style decoder",
              "shape": {k: getattr(llama_config(args), k) for k in SHAPES["full"]}, "parameters": params,
              "label": args.label or "this",
              "commit": commit + ("+uncommitted" if dirty else ""), "cache": "off (VECTORFIT_SVD_CACHE=0)"
              if args.cache == "off" else "cold, in an empty temporary directory", "threads": args.threads,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs",
              "torch": torch.__version__, "dtypes": args.dtypes.split(","), "results": {}}
    try:
        for dtype in result["dtypes"]:
            print(f"{dtype}:", flush=True)
            result["results"][dtype] = {part: run_child(args, part, dtype, cache_root)
                                        for part in args.parts.split(",")}
            if all(p in result["results"][dtype] for p in CHILDREN):
                result["results"][dtype]["summary"] = summarise(result["results"][dtype])
    finally:
        if cache_root is not None:
            shutil.rmtree(cache_root, ignore_errors=True)  # gigabytes of factors
    name = "memory-" + ("tiny" if args.tiny else "1b") + (f"-{args.layers}layers" if args.layers else "")
    name += f"-{args.label}" if args.label else ""
    name += "-cache" if args.cache == "tmp" else ""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
