"""What each training image is conditioned on: a class id, a prompt, or nothing, checked against the model.

Rules (each mismatch is one :class:`~vf_core.errors.TaskError` line, raised before anything is written):

* **unconditional** models (no class embeddings, no text): labels are ignored; a prompt
  (``--instance-prompt``, ``--class-prompt``, captions) or ``--instance-class`` is an error.
* **class-conditional** models (``UNet2DModel`` with ``num_class_embeds``, DiT): an image's class id is its
  label. Class names that are all integers (``mnist-5k``'s ``"0".."9"``, folders named ``9``) are the ids
  themselves, so a folder holding only ``9/`` trains class 9; other names are numbered in sorted order.
  ``--instance-class C`` gives every image class ``C`` (a flat folder of a new subject, DreamBooth-style). An id
  the model does not have is an error, and so is a prompt.
* **text-conditional** models (a pipeline with a text encoder): the prompt is ``--instance-prompt`` for every
  image (DreamBooth), else the image's caption, else its class name; with none of these it is an error.

Example:
    >>> from vf_backends_diffusion.conditioning import class_ids
    >>> class_ids(["0", "9"]), class_ids(["cat", "dog"])
    ([0, 9], [0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from vf_core.errors import TaskError

__all__ = ["class_ids", "parse_class", "Conditions", "training_conditions", "prior_classes"]


def class_ids(label_names: Sequence[str]) -> list[int]:
    """Class ids of label names: the integers themselves when every name is one, else positions."""
    names = [str(n).strip() for n in label_names]
    if names and all(n.lstrip("-").isdigit() for n in names):
        return [int(n) for n in names]
    return list(range(len(names)))


def parse_class(value, label_names: Sequence[str], num_classes: int, option: str = "--class") -> int:
    """A class given by name (one of ``label_names``) or id, checked against the model's ``num_classes``."""
    text = str(value).strip()
    names = [str(n) for n in label_names]
    if text in names:
        cid = class_ids(names)[names.index(text)]
    elif text.lstrip("-").isdigit():
        cid = int(text)
    else:
        known = f" (names: {', '.join(names)})" if names else ""
        raise TaskError(f"{option} {value!r}: not a class id or a known class name{known}")
    if not 0 <= cid < num_classes:
        raise TaskError(f"{option} {value!r}: class id {cid} is not one of the model's {num_classes} classes"
                        f" (0..{num_classes - 1})")
    return cid


@dataclass
class Conditions:
    """Per-image conditioning of a training set: class ids or prompts (or neither)."""

    labels: Optional[list[int]] = None
    prompts: Optional[list[str]] = None

    def describe(self) -> str:
        if self.labels is not None:
            return f"classes {sorted(set(self.labels))}"
        if self.prompts is not None:
            shown = sorted(set(self.prompts))
            return f"{len(shown)} prompt(s), e.g. {shown[0]!r}"
        return "unconditional"


def _option(args, name):
    return getattr(args, name, None)


def training_conditions(parts, data, args) -> Conditions:
    """The conditioning of each image of ``data`` (an ``ImageSet``) for ``parts``' model, from the options."""
    kind = parts.conditioning
    text_given = [o for o in ("instance_prompt", "class_prompt", "captions") if _option(args, o)]
    if "text" not in kind and text_given:
        model = "an unconditional model" if kind == "none" else "a class-conditional model (it takes class ids)"
        raise TaskError(f"--{text_given[0].replace('_', '-')}: {parts.source} is {model}, which takes no text prompt;"
                        " drop the prompt" + (" (use --instance-class to give the images a class)"
                                              if kind != "none" else ""))
    if kind == "none":
        if _option(args, "instance_class") is not None:
            raise TaskError(f"--instance-class: {parts.source} is an unconditional model, which takes no class")
        return Conditions()
    if kind == "class":
        n = parts.classes
        if _option(args, "instance_class") is not None:
            cid = parse_class(args.instance_class, data.label_names, n, "--instance-class")
            return Conditions(labels=[cid] * len(data))
        if data.labels is None:
            raise TaskError(f"{parts.source} is class-conditional ({n} classes) but the data has no classes: give a"
                            " folder with one sub-folder per class, a built-in dataset, or --instance-class C")
        ids = class_ids(data.label_names)
        labels = [ids[int(i)] for i in data.labels]
        bad = sorted({c for c in labels if not 0 <= c < n})
        if bad:
            name = data.label_names[ids.index(bad[0])]
            raise TaskError(f"class {name!r} (id {bad[0]}) of the data is not one of the model's {n} classes"
                            f" (0..{n - 1}); keep the others with --classes or give --instance-class")
        return Conditions(labels=labels)
    # text-conditional
    if _option(args, "instance_prompt"):
        return Conditions(prompts=[args.instance_prompt] * len(data))
    if data.captions is not None:
        return Conditions(prompts=list(data.captions))
    if data.labels is not None:
        return Conditions(prompts=[data.label_names[int(i)] for i in data.labels])
    raise TaskError(f"{parts.source} is text-conditional: give --instance-prompt TEXT (DreamBooth), or data with"
                    " captions (metadata.jsonl) or class sub-folders")


def prior_classes(parts, conditions: Conditions, args) -> list[int]:
    """Classes whose samples prior preservation keeps: ``--prior-classes``, else every class of the model that
    the instance data does not train."""
    given = _option(args, "prior_classes")
    if given:
        return [parse_class(c, [], parts.classes, "--prior-classes") for c in given]
    taught = set(conditions.labels or [])
    return [c for c in range(parts.classes) if c not in taught]
