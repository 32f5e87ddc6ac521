"""Diffusion models as the ``image-generation`` task loads and saves them: a denoiser, its noise scheduler and,
for latent and text-conditioned pipelines, the VAE, the text encoder and the tokenizer.

What ``--model`` may name (a local folder, or a Hugging Face hub id already in the local cache):

* a **diffusers model folder** (``config.json`` whose ``_class_name`` is a denoiser: ``UNet2DModel``,
  ``UNet2DConditionModel``, ``DiTTransformer2DModel``, ``Transformer2DModel``, ``PixArtTransformer2DModel``), with
  its scheduler's ``scheduler_config.json`` in the same folder (or in a sibling ``scheduler/`` folder); without one,
  a default ``DDPMScheduler`` (1,000 steps, linear betas, epsilon prediction), as diffusers' unconditional training
  example builds it;
* a **pipeline folder** (``model_index.json``: Stable Diffusion-style ``unet``/``transformer``, ``scheduler``,
  optional ``vae``, ``text_encoder``, ``tokenizer``).

Only the denoiser is adapted (VectorFit, LoRA...); the VAE and the text encoder stay frozen. ``save_denoiser``
writes a merged (or fully trained) denoiser back in the same layout, so ``from_pretrained`` and the pipeline load
it: a model folder with its scheduler config, or a copy of the pipeline folder with the new denoiser.

Example::

    >>> from vf_backends_diffusion.models import load_parts        # doctest: +SKIP
    >>> parts = load_parts("runs/base-unet")                         # doctest: +SKIP
    >>> parts.kind, parts.conditioning, type(parts.scheduler).__name__   # doctest: +SKIP
    ('model', 'class', 'DDPMScheduler')
"""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from vf_core.assets import DataError
from vf_core.errors import TaskError
from vf_core.hub import parse_hub_id, resolve_hub_model

__all__ = ["DENOISERS", "DiffusionParts", "describe_folder", "is_denoiser_folder", "load_parts", "resolve_folder",
           "save_denoiser", "denoise", "num_classes"]

#: diffusers classes the task trains, and where a pipeline keeps them
DENOISERS = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", "Transformer2DModel",
             "PixArtTransformer2DModel")
_PIPELINE_DENOISER_FOLDERS = ("unet", "transformer")
SCHEDULER_FILE = "scheduler_config.json"


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resolve_folder(spec: str) -> Optional[Path]:
    """A local folder, or the snapshot of a hub id ``org/name[@revision]``: the local cache first, downloaded when
    online (:func:`vf_core.hub.resolve_hub_model`); None when ``spec`` is neither."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    parsed = parse_hub_id(spec)
    if parsed is None:
        return None
    try:
        return resolve_hub_model(*parsed)
    except DataError as exc:
        raise TaskError(" ".join(str(exc).split())) from None


def describe_folder(path: Path) -> tuple[str, str]:
    """``(kind, class name)`` of a folder: ``("pipeline", "StableDiffusionPipeline")``, ``("model", "UNet2DModel")``,
    ``("other", what it is)``."""
    index = _read_json(path / "model_index.json")
    if index is not None:
        return "pipeline", str(index.get("_class_name", "a pipeline"))
    config = _read_json(path / "config.json")
    if config is None:
        return "other", "a folder without config.json or model_index.json"
    name = config.get("_class_name")
    if name in DENOISERS:
        return "model", name
    if name:
        return "other", f"a diffusers {name}"
    return "other", f"a {config.get('model_type', 'non-diffusers')} model (config.json has no diffusers _class_name)"


def is_denoiser_folder(spec: str) -> bool:
    """Whether ``spec`` is a local folder this task loads (cheap: reads one JSON file)."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        return False
    kind, name = describe_folder(path)
    if kind == "model":
        return True
    if kind == "pipeline":
        index = _read_json(path / "model_index.json") or {}
        return any(f in index for f in _PIPELINE_DENOISER_FOLDERS)
    return False


@dataclass
class DiffusionParts:
    """A denoiser and what it needs to train and sample.

    ``conditioning``: ``"none"`` (unconditional), ``"class"`` (class labels), ``"text"`` (a text encoder's states)
    or ``"text+class"``. ``latent``: whether it denoises a VAE's latents.
    """

    denoiser: Any
    scheduler: Any
    kind: str                         # "model" | "pipeline"
    source: Path
    denoiser_folder: str = ""         # "unet" / "transformer" in a pipeline, "" for a model folder
    vae: Any = None
    text_encoder: Any = None
    tokenizer: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def latent(self) -> bool:
        return self.vae is not None

    @property
    def classes(self) -> int:
        return num_classes(self.denoiser)

    @property
    def takes_text(self) -> bool:
        return "encoder_hidden_states" in _forward_parameters(self.denoiser) and \
            getattr(self.denoiser.config, "cross_attention_dim", None) is not None

    @property
    def conditioning(self) -> str:
        text, cls = self.text_encoder is not None and self.takes_text, self.classes > 0
        return "text+class" if text and cls else "text" if text else "class" if cls else "none"

    @property
    def channels(self) -> int:
        """Channels of the images the task feeds: the VAE's input, else the denoiser's."""
        config = self.vae.config if self.vae is not None else self.denoiser.config
        return int(config.in_channels)

    @property
    def sample_size(self) -> int:
        """Side in pixels of the images it makes by default."""
        size = getattr(self.denoiser.config, "sample_size", None) or 32
        size = size[0] if isinstance(size, (list, tuple)) else size
        if self.vae is not None:
            size *= 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(size)


def num_classes(denoiser) -> int:
    """Class labels a denoiser takes: UNets' ``num_class_embeds``, DiT's ``num_embeds_ada_norm``; 0 for none."""
    config = denoiser.config
    if type(denoiser).__name__ in ("DiTTransformer2DModel", "Transformer2DModel") and \
            getattr(config, "norm_type", None) == "ada_norm_zero":
        return int(getattr(config, "num_embeds_ada_norm", 0) or 0)
    if getattr(config, "class_embed_type", None) not in (None, "timestep", "identity"):
        return 0  # projection-style class embeddings take vectors, not ids
    return int(getattr(config, "num_class_embeds", None) or 0)


def _forward_parameters(denoiser) -> set:
    return set(inspect.signature(type(denoiser).forward).parameters)


def _scheduler(folder: Path, fallback: Optional[Path] = None):
    import diffusers

    for candidate in (folder / SCHEDULER_FILE, folder / "scheduler" / SCHEDULER_FILE,
                      *((fallback / SCHEDULER_FILE,) if fallback else ())):
        config = _read_json(candidate)
        if config is not None:
            cls = getattr(diffusers, str(config.get("_class_name", "DDPMScheduler")), None)
            if cls is None or not hasattr(cls, "add_noise"):
                raise TaskError(f"{candidate}: scheduler {config.get('_class_name')!r} is not a noise scheduler this"
                                " task trains with (DDPM-style schedulers with add_noise); use DDPMScheduler")
            return cls.from_config(config), False
    return diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon"), True


def load_parts(spec: str) -> DiffusionParts:
    """Load ``spec`` (a model or pipeline folder, or a cached hub id) as :class:`DiffusionParts`; raises
    :class:`~vf_core.errors.TaskError` with one line when it is not a denoiser this task trains."""
    import diffusers

    folder = resolve_folder(spec)
    if folder is None:
        raise TaskError(f"--model {spec!r}: no such folder (nor a hub id in the local cache); give a diffusers model"
                        " folder (UNet2DModel, UNet2DConditionModel, DiT) or a pipeline folder")
    kind, name = describe_folder(folder)
    if kind == "other":
        raise TaskError(f"--model {spec!r} is {name}, not a denoiser; image-generation trains a diffusers model folder"
                        f" ({', '.join(DENOISERS)}) or a pipeline folder with model_index.json")
    if kind == "model":
        denoiser = getattr(diffusers, name).from_pretrained(folder)
        scheduler, default = _scheduler(folder, folder.parent / "scheduler")
        parts = DiffusionParts(denoiser, scheduler, kind, folder)
        if default:
            parts.notes.append(f"{folder} has no {SCHEDULER_FILE}: training with a default DDPMScheduler"
                               " (1000 steps, linear betas, epsilon prediction)")
        return parts
    index = _read_json(folder / "model_index.json") or {}
    sub = next((f for f in _PIPELINE_DENOISER_FOLDERS if f in index), None)
    if sub is None:
        raise TaskError(f"--model {spec!r}: pipeline {name} has no unet or transformer component to train")
    cls_name = (index[sub] or [None, None])[1]
    if cls_name not in DENOISERS:
        raise TaskError(f"--model {spec!r}: the pipeline's {sub} is a {cls_name}, which this task does not train"
                        f" (it trains {', '.join(DENOISERS)})")
    denoiser = getattr(diffusers, cls_name).from_pretrained(folder / sub)
    scheduler, _ = _scheduler(folder / "scheduler")
    parts = DiffusionParts(denoiser, scheduler, kind, folder, denoiser_folder=sub)
    if "vae" in index and (folder / "vae").is_dir():
        vae_cls = getattr(diffusers, index["vae"][1])
        parts.vae = vae_cls.from_pretrained(folder / "vae").eval().requires_grad_(False)
    if "text_encoder" in index and (folder / "text_encoder").is_dir():
        try:
            import transformers
        except ImportError:
            raise TaskError(f"--model {spec!r}: the pipeline's text encoder needs transformers: pip install"
                            " 'vf-backends-diffusion[pipelines]'") from None
        library, enc_cls = index["text_encoder"]
        parts.text_encoder = getattr(transformers, enc_cls).from_pretrained(folder / "text_encoder").eval()
        parts.text_encoder.requires_grad_(False)
        tok_cls = (index.get("tokenizer") or [None, "AutoTokenizer"])[1]
        parts.tokenizer = getattr(transformers, tok_cls).from_pretrained(folder / "tokenizer")
    return parts


def denoise(denoiser, x, t, *, class_labels=None, encoder_hidden_states=None, forward_of=None):
    """The denoiser's prediction for noisy ``x`` at timesteps ``t`` with the conditioning it accepts, trimmed to
    ``x``'s channels (DiT's learned-sigma half is dropped). ``forward_of``: the plain model whose ``forward``
    names the arguments, when ``denoiser`` is a wrapper (VectorFit, PEFT)."""
    params = _forward_parameters(forward_of if forward_of is not None else denoiser)
    kwargs = {"timestep": t, "return_dict": False}
    if class_labels is not None and "class_labels" in params:
        kwargs["class_labels"] = class_labels
    if "encoder_hidden_states" in params and encoder_hidden_states is not None:
        kwargs["encoder_hidden_states"] = encoder_hidden_states
    if "added_cond_kwargs" in params and "Transformer" in type(forward_of or denoiser).__name__:
        kwargs["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}  # PixArt-style micro-conditions
    out = denoiser(x, **kwargs)
    out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)
    return out[:, : x.shape[1]] if out.shape[1] != x.shape[1] else out


def save_denoiser(denoiser, directory: str | Path, *, source: Path, kind: str, denoiser_folder: str,
                  scheduler=None) -> None:
    """Write ``denoiser`` in the layout of ``source``: a model folder with the scheduler config, or a copy of the
    pipeline folder whose ``unet``/``transformer`` is replaced; ``from_pretrained`` loads either."""
    out = Path(directory)
    if kind == "pipeline":
        out.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.name == denoiser_folder or item.name.startswith("."):
                continue
            target = out / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
        denoiser.save_pretrained(out / denoiser_folder)
        return
    denoiser.save_pretrained(out)
    if scheduler is not None:
        scheduler.save_pretrained(out)
