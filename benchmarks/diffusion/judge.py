"""The diffusion benchmark's judge: a digit classifier trained by the project's own command, reading 16-px samples.

The judge is EfficientNet-Lite0 (ImageNet weights from its registry package) fully fine-tuned by ``vectorfit train``
(:data:`TRAIN_OPTIONS`: ``--image-size 32 --method full --epochs 5 --lr 1e-3 --scheduler cosine --seed 0``) on
MNIST-5k as the diffusion model sees it: the 16-px digits of :func:`digits.write_pixel_csv` (all 5,000, the
packaged order, so the command's fixed split is the same 4,000 / 1,000), which the command enlarges to 32x32. A
judge trained on the 28-px digits instead reads 16-px digits badly (90.8% on 28 -> 32 eval digits, 54.4% on the
same digits sent 28 -> 16 -> 32, after 3 epochs at the default learning rate), hence the 16-px training data.
Run folder ``cache/judge`` (git-ignored). :func:`load_judge` loads it back as a plain timm model
(``cache/judge/model``, the folder ``--method full`` writes; a run of any other method is first folded with
``vectorfit merge``).

:func:`read` takes what the diffusion model makes, a float tensor ``(N, 1, 16, 16)`` in [-1, 1], and sends it
along the path the command's image pipeline would: bilinear upsampling to 32x32, grey replicated to 3 channels,
normalised with mean = std = 0.5 (a pixel ``p`` in [0, 1] becomes ``(p - 0.5) / 0.5``, i.e. exactly the [-1, 1]
value already held), which is the path its training digits took. :func:`real_accuracy` measures it on the
command's 1,000 eval digits sent 28 -> 16 -> 32 (unquantised, as samples are) and, for comparison, 28 -> 32.

Example::

    >>> from judge import load_judge, read                       # doctest: +SKIP
    >>> judge = load_judge()                                      # doctest: +SKIP
    >>> labels, probs = read(images, judge)                       # doctest: +SKIP
    >>> labels.shape, probs.shape                                 # doctest: +SKIP
    (torch.Size([180]), torch.Size([180, 10]))
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE / "cache" / "judge"
DATA = HERE / "cache" / "mnist16.csv.gz"
INPUT = 32
TRAIN_OPTIONS = ["--model", "efficientnet-lite0", "--data", str(DATA), "--image-size", str(INPUT), "--method",
                 "full", "--epochs", "5", "--lr", "1e-3", "--scheduler", "cosine", "--warmup-ratio", "0.05",
                 "--seed", "0", "--no-progress"]


def train_judge(run: Path = RUN, *, threads: int = 0, device: str = "auto") -> Path:
    """Train the judge with ``vectorfit train`` unless ``run/metrics.json`` exists; return ``run``."""
    from digits import write_pixel_csv

    if (run / "metrics.json").is_file():
        return run
    write_pixel_csv(DATA)
    cmd = [sys.executable, "-m", "vectorfit", "train", *TRAIN_OPTIONS, "--output", str(run), "--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    if run.exists():  # an interrupted run: continue it
        cmd += ["--resume"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(cmd, check=True, env=env)
    return run


def _model_dir(run: Path) -> Path:
    from vf_backends_vision.models import is_saved_model_dir

    if is_saved_model_dir(run / "model"):  # --method full
        return run / "model"
    merged = run.parent / f"{run.name}-merged"
    if not is_saved_model_dir(merged):
        subprocess.run([sys.executable, "-m", "vectorfit", "merge", str(run), "--output", str(merged)], check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return merged


def load_judge(run: Path = RUN):
    """The judge as an eval-mode timm model on CPU (trained first when ``run`` holds no finished run)."""
    from vf_backends_vision.models import load_image_classifier

    model, pre = load_image_classifier(str(_model_dir(train_judge(run))))
    if tuple(pre["mean"]) != (0.5,) * 3 or tuple(pre["std"]) != (0.5,) * 3:
        raise ValueError(f"judge normalisation {pre['mean']}/{pre['std']}: read() assumes mean = std = 0.5")
    return model.eval()


def read(images, judge, *, batch: int = 256):
    """``(labels, probs)`` of ``images`` (N, 1, H, W) in [-1, 1]: LongTensor (N,) and softmax (N, 10)."""
    import torch
    import torch.nn.functional as F

    device = next(judge.parameters()).device
    probs = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = images[s:s + batch].float().clamp(-1, 1).to(device)
            if x.shape[-1] != INPUT or x.shape[-2] != INPUT:
                x = F.interpolate(x, size=(INPUT, INPUT), mode="bilinear", align_corners=False)
            probs.append(judge(x.expand(-1, 3, -1, -1)).float().softmax(-1).cpu())
    probs = torch.cat(probs)
    return probs.argmax(-1), probs


def per_class(pred, truth, classes) -> dict:
    """Share (in %) of ``truth == c`` examples read as ``c``, per class ``c``, and their mean."""
    out = {}
    for c in classes:
        mask = truth == c
        out[str(c)] = round(100.0 * float((pred[mask] == c).float().mean()), 1) if bool(mask.any()) else None
    vals = [v for v in out.values() if v is not None]
    out["mean"] = round(sum(vals) / len(vals), 1) if vals else None
    return out


def real_accuracy(judge) -> dict:
    """The judge on the command's 1,000 eval digits, 28 -> 16 -> 32 (as samples) and 28 -> 32 (sharper)."""
    import torch.nn.functional as F
    from digits import mnist16

    (_, _), (x16, y) = mnist16()
    _, (x28, _) = mnist16(size=28)  # 28 -> 28: no resize, only the [-1, 1] scaling
    direct, _ = read(F.interpolate(x28, size=(INPUT, INPUT), mode="bilinear", align_corners=False), judge)
    via16, _ = read(x16, judge)
    return {"eval_images": len(y), "accuracy_28_to_32": per_class(direct, y, range(10)),
            "accuracy_28_to_16_to_32": per_class(via16, y, range(10)),
            "overall_28_to_32": round(100.0 * float((direct == y).float().mean()), 1),
            "overall_28_to_16_to_32": round(100.0 * float((via16 == y).float().mean()), 1)}


def judge_record(run: Path = RUN, model=None) -> dict:
    """What the benchmark says about its judge: the command, its metrics.json, accuracy on real 16-px digits."""
    metrics = json.loads((run / "metrics.json").read_text())
    keep = {k: metrics[k] for k in ("eval_accuracy", "trainable_params", "train_seconds") if k in metrics}
    return {"command": "vectorfit train " + " ".join(TRAIN_OPTIONS) + f" --output {run}",
            "metrics": keep, **real_accuracy(model if model is not None else load_judge(run))}


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    print(json.dumps(judge_record(train_judge(threads=2)), indent=2))
