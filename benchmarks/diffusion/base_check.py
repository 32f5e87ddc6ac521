"""Check the diffusion benchmark's base: sample it, let the judge read the samples, record everything.

Samples 20 images of each class 0-9 from ``cache/base`` (DDIM, 50 steps, eta 0, seed 0; :mod:`sampling`); class 9
was never trained (its embedding row is still the initial one), so its row shows what the base makes before any
fine-tuning: the starting point of subject fidelity. The judge (:mod:`judge`) reads every sample: the base's prior
fidelity is, per class 0-8, the share of its samples read as that class. Writes

* ``results/base_samples.png``: one row per class 0-9, red frames on the samples read as another class;
* ``results/pretrain.json``: the pre-training record (config, steps, seconds, machine, final loss, loss log),
  the judge (its command and metrics, its accuracy on the real eval digits sent 28 -> 16 -> 32 per class)
  and the base's sample fidelity per class, with the judge's readings of the class-9 row.

Trains what is missing first (the base with :mod:`pretrain`, the judge with ``vectorfit train``).

Example::

    nice -n 10 python benchmarks/diffusion/base_check.py --threads 2
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PER_CLASS, SEED, STEPS = 20, 0, 50


def fidelity(pred, labels, probs, classes) -> dict:
    """Per class: share (%) of its samples read as it, the judge's mean probability of it, what else was read."""
    out = {}
    for c in classes:
        mask = labels == c
        read = collections.Counter(int(v) for v in pred[mask])
        out[str(c)] = {"read_as_class_%": round(100.0 * read[c] / int(mask.sum()), 1),
                       "mean_prob": round(float(probs[mask, c].mean()), 3),
                       "readings": {str(k): v for k, v in sorted(read.items())}}
    return out


def summary(r: dict) -> str:
    """One sentence on the base for the benchmark's README (run.py reads ``summary``)."""
    return (f"class-conditional UNet2DModel pre-trained here ({r['parameters']:,} parameters; widths "
            f"{'/'.join(map(str, r['unet']['block_out_channels']))}, self-attention at 8x8 and 4x4) on the "
            f"{r['train_images']:,} MNIST-5k training digits 0-8 at 16 px: {r['train']['steps']:,} steps of batch "
            f"{r['train']['batch']} ({r['epochs']} epochs, {r['seconds'] / 60:.0f} min on {r['machine'].get('cpus')} "
            f"CPU cores); the judge reads its samples of 0-8 as their digit "
            f"{r['base_samples']['fidelity_0_8_mean_%']}% of the time, and real 16-px eval digits "
            f"{r['judge']['overall_28_to_16_to_32']}%")


def check(threads: int = 0) -> dict:
    import judge as J
    import torch
    from diffusers import DDPMScheduler, UNet2DModel
    from pretrain import CLASSES, pretrain
    from sampling import grid, sample

    if threads:
        torch.set_num_threads(threads)
    base = pretrain(threads=threads)
    unet = UNet2DModel.from_pretrained(str(base))
    scheduler = DDPMScheduler.from_pretrained(str(base))
    model = J.load_judge(J.train_judge(threads=threads))
    images, labels = sample(unet, scheduler, classes=range(10), per_class=PER_CLASS, seed=SEED, steps=STEPS)
    pred, probs = J.read(images, model)
    grid(images, RESULTS / "base_samples.png", columns=PER_CLASS, wrong=(pred != labels).tolist())
    fid = fidelity(pred, labels, probs, range(10))
    trained = [fid[str(c)]["read_as_class_%"] for c in CLASSES]
    sys.path.insert(0, str(HERE.parent / "quality"))
    from run import portable  # benchmarks/quality/run.py

    record = json.loads((base / "train.json").read_text())
    record["judge"] = J.judge_record(model=model)
    record["base_samples"] = {
        "sampler": f"DDIM {STEPS} steps, eta 0, seed {SEED}, {PER_CLASS} per class",
        "grid": "benchmarks/diffusion/results/base_samples.png",
        "fidelity_0_8_mean_%": round(sum(trained) / len(trained), 1),
        "per_class": fid,
        "note": "class 9 was never trained: its row is the base before fine-tuning (subject fidelity at start)"}
    record["summary"] = summary(record)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pretrain.json").write_text(json.dumps(portable(record), indent=2) + "\n")
    return record


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    r = check(a.threads)
    print(json.dumps({"judge": {k: v for k, v in r["judge"].items() if k.startswith("overall")},
                      "fidelity_0_8_mean_%": r["base_samples"]["fidelity_0_8_mean_%"],
                      "per_class": {c: v["read_as_class_%"] for c, v in r["base_samples"]["per_class"].items()}},
                     indent=2))
