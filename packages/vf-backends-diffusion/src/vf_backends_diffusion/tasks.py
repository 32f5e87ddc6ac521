"""The diffusion backend's task for the ``vectorfit`` command (``vectorfit_tasks`` hook): ``image-generation``.

Cheap to import: diffusers and accelerate are loaded only when a command runs (:mod:`.runner`).

* models: a diffusers model folder (``UNet2DModel``, ``UNet2DConditionModel``, DiT, ``Transformer2DModel``) with its
  scheduler config, or a pipeline folder (Stable Diffusion-style), local or a cached hub id (:mod:`.models`);
* data: an image folder (flat: unconditional or captioned; one sub-folder per class), or ``mnist-5k`` / ``digits``
  (``--classes`` keeps some) (:mod:`.data`);
* engine: accelerate, the denoising loss with the model's own scheduler, DreamBooth prior preservation, EMA;
  ``vectorfit generate`` writes PNGs and a grid.
"""

from __future__ import annotations

from pathlib import Path

from vf_core.plugins import hookimpl
from vf_core.tasks import MAYBE, NO, SURE, Task

__all__ = ["IMAGE_GENERATION", "claim_model", "claim_data", "add_arguments", "BUILTIN_DATA"]

#: built-in datasets it reads (the same packaged images the vision backend classifies)
BUILTIN_DATA = {"mnist-5k": "5,000 MNIST digits (500 per class), 28x28 grayscale; --classes 9 keeps the nines",
                "digits": "scikit-learn's 1,797 8x8 digits; needs scikit-learn"}


def claim_model(spec: str) -> int:
    from vf_core.hub import cached_model_dir

    from .models import describe_folder, is_denoiser_folder

    path = cached_model_dir(spec, ("model_index.json", "config.json")) or Path(spec).expanduser()
    if is_denoiser_folder(str(path)):
        return SURE
    if path.is_dir() and (path / "config.json").is_file() and "diffusers" in describe_folder(path)[1]:
        return MAYBE  # another diffusers model (a VAE...): the runner says why it is not a denoiser
    return NO  # a hub id the cache lacks stays the text tasks' (they download it, or say it is not cached)


def claim_data(spec: str) -> int:
    path = Path(spec).expanduser()
    if spec in BUILTIN_DATA or path.is_dir() or (path.is_file() and path.name.lower().endswith((".csv", ".csv.gz"))):
        return MAYBE  # images (a pixel CSV too); the model decides between generating and classifying them
    return NO


def add_arguments(group) -> None:
    group.add_argument("--resolution", type=int, metavar="PX", help="diffusion: image side in pixels (default:"
                       " the model's sample size, times the VAE's scale for latent models)")
    group.add_argument("--classes", metavar="C,C,...", help="diffusion: keep only these classes of the data"
                       " (names, e.g. --classes 9 for the nines of mnist-5k)")
    group.add_argument("--captions", metavar="FILE", help="diffusion: captions of a flat image folder (JSONL/CSV with"
                       " file_name and text; default: metadata.jsonl in the folder, or a .txt beside each image)")
    group.add_argument("--instance-prompt", metavar="TEXT", help="diffusion (DreamBooth): the prompt of every"
                       " training image, e.g. 'a photo of sks dog'")
    group.add_argument("--instance-class", metavar="C", help="diffusion (DreamBooth, class-conditional models): the"
                       " class id (or name) of every training image")
    group.add_argument("--class-prompt", metavar="TEXT", help="diffusion: prompt of the prior-preservation images"
                       " (text-conditional models), e.g. 'a photo of a dog'")
    group.add_argument("--prior-weight", type=float, metavar="W", help="diffusion: prior preservation on, with"
                       " loss = instance + W x prior (DreamBooth uses 1.0); the base model generates the prior images")
    group.add_argument("--prior-classes", type=lambda t: [c.strip() for c in t.split(",") if c.strip()],
                       metavar="C,C,...", help="diffusion: classes whose samples prior preservation keeps (default:"
                       " every class of the model the data does not train)")
    group.add_argument("--num-class-images", type=int, metavar="N", help="diffusion: prior-preservation images to"
                       " generate (default 100; cached)")
    group.add_argument("--ema", action="store_true", help="diffusion: keep an exponential moving average of the"
                       " trained parameters and save it")
    group.add_argument("--ema-decay", type=float, metavar="D", help="diffusion: EMA decay (default 0.999)")
    group.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="diffusion: mixed precision"
                       " on CUDA (default no; ignored on CPU)")
    group.add_argument("--eval-steps", type=int, metavar="N", help="diffusion: evaluate, draw a sample grid and"
                       " checkpoint every N steps (default: 4 times per run)")
    group.add_argument("--sample-steps", type=int, metavar="S", help="diffusion: denoising steps of the sample"
                       " grids and the prior images (default 25, DDIM for DDPM-trained models)")
    group.add_argument("--num-samples", type=int, metavar="N", help="diffusion: images per sample grid (default 8)")
    group.add_argument("--guidance-scale", type=float, metavar="G", help="diffusion: classifier-free guidance of"
                       " text-conditional sampling (default 1: none; 7.5 is Stable Diffusion's)")


def _runner():
    from .runner import DiffusionRunner

    return DiffusionRunner()


IMAGE_GENERATION = Task(
    name="image-generation",
    backend="diffusion",
    description="fine-tune a diffusion model (UNet, DiT, Stable Diffusion pipeline) on images, DreamBooth-style",
    aliases=("diffusion", "dreambooth"),
    models="a diffusers model folder (UNet2DModel, UNet2DConditionModel, DiT, Transformer2DModel) with its"
           " scheduler config, or a pipeline folder (model_index.json); local or a cached hub id",
    data="an image folder (flat, captioned with metadata.jsonl, or one sub-folder per class), a pixel CSV (one"
         " image per row, label last), or a built-in alias",
    datasets=dict(BUILTIN_DATA),
    claim_model=claim_model,
    claim_data=claim_data,
    runner=_runner,
    headline="eval_loss",
    generates=True,
    generated="images",
    new_head=False,
    defaults={"batch_size": 16, "eval_fraction": 0.1},
    add_arguments=add_arguments,
    engine="accelerate",
    requires=("diffusers", "accelerate"),
    install_hint="pip install 'vectorfit[diffusion]' (or 'vf-backends-diffusion[diffusers]' accelerate)",
)


@hookimpl
def vectorfit_tasks():
    return [IMAGE_GENERATION]
