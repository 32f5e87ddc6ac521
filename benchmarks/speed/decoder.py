"""Speed and memory of VectorFit against PEFT's LoRA on a decoder: a Llama-shaped causal language model.

The shape: grouped-query attention and a gated MLP, 12 layers x 768, 12 heads, 4 key/value heads, intermediate
2048, vocabulary 32,000 (about 125 M parameters), randomly initialised from a ``LlamaConfig`` (seed 0; no
pre-trained decoder weights are available offline, and random weights time the same). The loss is the causal LM
loss (``labels = input_ids``); there is no new head (``modules_to_save=[]``), the LM head stays frozen.

Measured, like ``run.py`` (whose step loop, memory children and table this script reuses):

- the median training step (forward, backward, AdamW) of VectorFit with AVF (as ``methods.vectorfit``), PEFT
  LoRA r=1 and LoRA r=8, all on the same six roles (q, k, v, o, f1 = gate_proj + up_proj, f2 = down_proj; LoRA
  through a regular expression of the Llama module names), in one process, alternating the methods round by round;
- peak memory (peak RSS; on a GPU ``torch.cuda.max_memory_allocated``) in one child process per method (build,
  three steps); on a CPU a second child with the steady allocator, as in ``run.py``;
- greedy generation tokens per second (``model.generate``, batch 1 and 8, a 32-token prompt, 64 new tokens with
  ``min_new_tokens`` equal to the maximum so that every run generates the same count) of VectorFit unmerged and
  merged (``merge_and_unload``) against the base model, alternated over rounds. Targets: unmerged at least 0.9x the
  base's tokens per second, merged 1.0x; the output says whether each is met (a median ratio up to 0.03 below its
  target counts as met: timing noise).

Ratios against LoRA r=1 (and r=8) are the headline figures.

How to run it. The full-size run on the project's 2-core CPU machine (defaults: batch 4 x 128 tokens, 3 rounds of
2 steps, generation batches 1 and 8) takes about 5 to 10 minutes; run it when the machine is otherwise idle::

    python benchmarks/speed/decoder.py --threads 2
    python benchmarks/speed/decoder.py --only generate --rounds 5           # one part only
    python benchmarks/speed/decoder.py --device cuda --dtype bfloat16 --batch 16 --seq 512   # on a GPU
    python benchmarks/speed/decoder.py --tiny --out /tmp/decoder-check      # a tiny shape: checks the script
    python benchmarks/speed/decoder.py --tiny --only step,generate --out /tmp/decoder-check   # ~15 s

``--tiny`` (2 layers x 64, vocabulary 512) takes seconds per part; its six memory children cost most of its
time (about 1.5 minutes on a busy 2-core machine, each one importing torch, transformers and PEFT).

Writes ``benchmarks/speed/results/decoder[-<device>-<dtype>][-<parts>][-b<batch>x<seq>].json`` and ``.md``
(``decoder-tiny...`` with ``--tiny``; ``--out`` picks another folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  (the BERT benchmark: step loop, memory children, table)
from methods import DECODER_METHODS  # noqa: E402

#: the full shape (Llama-style, about 125 M parameters) and the tiny one of ``--tiny``
SHAPES = {
    "full": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                 intermediate_size=2048, vocab_size=32000, max_position_embeddings=2048),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, max_position_embeddings=256),
}

#: per-shape defaults of the options left unset on the command line
DEFAULTS = {
    "full": dict(batch=4, seq=128, rounds=3, steps=2, gen_batches="1,8", prompt=32, new_tokens=64),
    "tiny": dict(batch=2, seq=16, rounds=2, steps=1, gen_batches="1,2", prompt=8, new_tokens=8),
}

#: generation targets: tokens per second against the base model
TARGETS = {"unmerged": 0.9, "merged": 1.0}
#: how far below a target a median may fall and still count as met (timing noise)
TOLERANCE = 0.03

PARTS = ("step", "memory", "generate")


def config(args):
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES["tiny" if args.tiny else "full"], pad_token_id=0, bos_token_id=1, eos_token_id=2,
                       tie_word_embeddings=False)


def build_decoder(args, train: bool = True):
    """A seeded random Llama causal LM on ``run.DEVICE`` in ``run.DTYPE``: every call builds the same weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(config(args)).to(device=run.DEVICE, dtype=run.DTYPE)
    model.train(train)
    run.sync()
    return model


def parameters(args) -> int:
    """The model's parameter count, from a model built on the meta device (no memory, no initialisation)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(config(args)).parameters())


def token_ids(vocab: int, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random ids in ``[3, vocab)``: clear of the pad, bos and eos ids."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=gen).to(run.DEVICE)


def make_batch(vocab: int, batch: int, seq: int) -> dict:
    ids = token_ids(vocab, batch, seq)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def memory_child(args) -> None:
    prepared = DECODER_METHODS[args.memory_child](build_decoder(args))
    optimizer = torch.optim.AdamW(prepared.params, lr=1e-4)
    batch = make_batch(config(args).vocab_size, args.batch, args.seq)
    for step in range(3):
        run.one_step(prepared, optimizer, batch, step)
    gpu = {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if run.DEVICE.type == "cuda" else {}
    print(json.dumps({"peak_rss_mb": run.peak_rss_mb(), **gpu}))


def child_command(args, method: str) -> list[str]:
    cmd = [sys.executable, __file__, "--batch", str(args.batch), "--seq", str(args.seq), "--device", args.device,
           "--dtype", args.dtype, "--memory-child", method]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    return cmd


def measure_generation(args) -> dict:
    """Greedy tokens per second of the base model, VectorFit unmerged and merged, the order rotated every round."""
    from vf_core import VectorFitConfig, get_vectorfit_model

    vf_config = VectorFitConfig(modules_to_save=[])
    models = {"base": build_decoder(args, train=False),
              "unmerged": get_vectorfit_model(build_decoder(args, train=False), vf_config).eval(),
              "merged": get_vectorfit_model(build_decoder(args, train=False), vf_config).merge_and_unload().eval()}
    vocab = config(args).vocab_size
    batches = [int(b) for b in args.gen_batches.split(",")]
    prompts = {b: token_ids(vocab, b, args.prompt, seed=b) for b in batches}
    options = dict(do_sample=False, num_beams=1, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                   pad_token_id=0)
    outputs = {}

    def timed(name: str, b: int) -> float:
        ids = prompts[b]
        run.sync()
        start = time.perf_counter()
        out = models[name].generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
        run.sync()
        elapsed = time.perf_counter() - start
        if out.shape != (b, args.prompt + args.new_tokens):
            expected = (b, args.prompt + args.new_tokens)
            raise RuntimeError(f"{name} generated {tuple(out.shape)} tokens, expected {expected}")
        outputs[name, b] = out[:, args.prompt:]
        return elapsed

    names = list(models)
    times = {(k, b): [] for k in names for b in batches}
    with torch.inference_mode():
        for b in batches:  # warm-up
            for k in names:
                timed(k, b)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for b in batches:
                for k in order:
                    times[k, b].append(timed(k, b))
            print(f"  generate round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} b{b} {b * args.new_tokens / statistics.median(times[k, b]):.1f} tok/s"
                for b in batches for k in names), flush=True)
    out: dict = {}
    for b in batches:
        base = statistics.median(times["base", b])
        for k in names:
            med = statistics.median(times[k, b])
            row = {"batch": b, "seconds": med, "tokens_per_s": b * args.new_tokens / med, "runs": len(times[k, b]),
                   "ratio_vs_base": base / med,
                   "same_tokens_as_base": bool(torch.equal(outputs[k, b], outputs["base", b]))}
            if k in TARGETS:
                row["target"] = TARGETS[k]
                row["target_met"] = row["ratio_vs_base"] >= TARGETS[k] - TOLERANCE
            out[f"{k}_b{b}"] = row
    return out


def table(result) -> str:
    lines = [run.table(result)] if "steps" in result or "memory" in result else []
    steps, mem = result.get("steps", {}), result.get("memory", {})
    if "vectorfit" in steps or "vectorfit" in mem:
        rows = [("step", steps, "step_s"), ("peak RSS", mem, "peak_rss_mb"),
                ("peak RSS, steady allocator", mem, "peak_rss_mb_steady_allocator"),
                ("peak GPU memory", mem, "peak_gpu_mb")]
        ratio = [f"| VectorFit {what} | " + " | ".join(
                     f"{part['vectorfit'][key] / part[lora][key]:.2f}x" if part.get(lora, {}).get(key) else ""
                     for lora in ("lora_r1", "lora_r8")) + " |"
                 for what, part, key in rows if key in part.get("vectorfit", {})]
        lines += ["", "| VectorFit against | LoRA r=1 | LoRA r=8 |", "|---|---|---|", *ratio]
    if "generation" in result:
        head = f"| generation ({gen_settings(result)}) | batch | tokens/s | / base | target | met | same tokens |"
        lines += ["", head, "|---|---|---|---|---|---|---|"]
        for key, row in result["generation"].items():
            if key == "settings":
                continue
            name = key.rsplit("_b", 1)[0]
            target = f">= {row['target']:.1f}x" if "target" in row else ""
            met = ("yes" if row["target_met"] else "NO") if "target_met" in row else ""
            lines.append(f"| {name} | {row['batch']} | {row['tokens_per_s']:.1f} | {row['ratio_vs_base']:.2f}x | "
                         f"{target} | {met} | {'yes' if row['same_tokens_as_base'] else 'no'} |")
        lines += ["", f"Met: the median ratio is at least its target less {TOLERANCE} (timing noise). Same tokens: the"
                      " greedy continuation equals the base model's (the adapter is untrained, so only rounding can"
                      " change it)."]
    return "\n".join(lines)


def gen_settings(result) -> str:
    s = result["generation"].get("settings", {})
    return f"greedy, {s.get('prompt')}-token prompt, {s.get('new_tokens')} new tokens"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny shape (2 layers x 64), tiny defaults: checks the script")
    p.add_argument("--batch", type=int, help="training batch (default 4; tiny 2)")
    p.add_argument("--seq", type=int, help="training sequence length (default 128; tiny 16)")
    p.add_argument("--steps", type=int, help="steps per method per round (default 2; tiny 1)")
    p.add_argument("--rounds", type=int, help="rounds of steps and of generation (default 3; tiny 2)")
    p.add_argument("--gen-batches", help="generation batch sizes (default 1,8; tiny 1,2)")
    p.add_argument("--prompt", type=int, help="prompt tokens (default 32; tiny 8)")
    p.add_argument("--new-tokens", type=int, help="tokens generated, exactly (default 64; tiny 8)")
    p.add_argument("--methods", default=",".join(DECODER_METHODS))
    p.add_argument("--only", default=",".join(PARTS), help="parts to run among step,memory,generate")
    p.add_argument("--threads", type=int, default=int(os.environ.get("VF_BENCH_THREADS", "0")) or None)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", type=Path, default=run.RESULTS, help="folder of the JSON and markdown results")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in DEFAULTS["tiny" if args.tiny else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.only.split(",")) - set(PARTS)
    if unknown:
        p.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; choose among {', '.join(PARTS)}")
    unknown = set(args.methods.split(",")) - set(DECODER_METHODS)
    if unknown:
        p.error(f"--methods: unknown method(s) {', '.join(sorted(unknown))};"
                f" choose among {', '.join(DECODER_METHODS)}")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    run.DEVICE, run.DTYPE = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)
    started = time.perf_counter()
    methods, only = args.methods.split(","), set(args.only.split(","))
    shape = SHAPES["tiny" if args.tiny else "full"]
    import transformers

    result = {"model": "llama-tiny" if args.tiny else "llama-12x768", "shape": shape,
              "parameters": parameters(args),
              "batch": args.batch, "seq": args.seq, "rounds": args.rounds, "steps_per_round": args.steps,
              "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
              "device": args.device, "dtype": args.dtype}
    if run.DEVICE.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(run.DEVICE)
    if "step" in only:
        vocab = config(args).vocab_size
        result["steps"] = run.measure_steps(args, methods, setups=DECODER_METHODS, build=lambda: build_decoder(args),
                                            batch_of=lambda _model, b, s: make_batch(vocab, b, s))
    if "memory" in only:
        result["memory"] = run.measure_memory(args, methods, command=lambda m: child_command(args, m))
    if "generate" in only:
        result["generation"] = {"settings": {"prompt": args.prompt, "new_tokens": args.new_tokens,
                                             "batches": args.gen_batches, "decoding": "greedy",
                                             "tolerance": TOLERANCE},
                                **measure_generation(args)}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "decoder-tiny" if args.tiny else "decoder"
    name += "" if (args.device, args.dtype) == ("cpu", "float32") else f"-{args.device}-{args.dtype}"
    name += "" if only == set(PARTS) else "-" + "-".join(sorted(only))
    defaults = DEFAULTS["tiny" if args.tiny else "full"]
    name += "" if (args.batch, args.seq) == (defaults["batch"], defaults["seq"]) else f"-b{args.batch}x{args.seq}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (f"Llama-shaped decoder ({result['model']}, {result['parameters']:,} parameters), {args.device} {args.dtype}, "
          f"{result['threads']} threads, training batch {args.batch} x {args.seq} tokens, {result['date']}, "
          f"{result['wall_s']:.0f} s in all.\n\n" + table(result))
    (args.out / f"{name}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
