"""Captions for a folder of training images, in the layouts diffusion training scripts use.

:func:`read_captions` looks, in order, for: an explicit captions file; ``metadata.jsonl`` (Hugging Face
imagefolder: one ``{"file_name": "a.png", "text": "..."}`` per line, ``caption`` or ``prompt`` standing for
``text``); ``captions.jsonl``; ``captions.csv`` (a header with ``file_name`` and ``text``/``caption``/``prompt``);
then a sidecar ``a.txt`` beside each ``a.png``. ``file_name`` is relative to the image folder. A line naming no
image of the folder, a line without text, bad JSON or a second caption for one image is a
:class:`~vf_core.assets.DataError` naming the file and line.

Example::

    >>> from pathlib import Path
    >>> from vf_backends_diffusion.captions import read_captions
    >>> captions, where = read_captions(Path("dog"), [Path("dog/a.png")])   # doctest: +SKIP
    >>> captions, where                                                      # doctest: +SKIP
    ({'a.png': 'a photo of sks dog'}, 'dog/metadata.jsonl')
"""

from __future__ import annotations

import csv
import json
from pathlib import Path, PurePosixPath
from typing import Optional

from vf_core.assets import DataError

__all__ = ["CAPTION_FILES", "TEXT_FIELDS", "read_captions", "read_caption_file"]

#: caption files looked for in the folder, in this order (sidecar ``.txt`` files come last)
CAPTION_FILES = ("metadata.jsonl", "captions.jsonl", "captions.csv")
#: names the caption column may have, in order of preference
TEXT_FIELDS = ("text", "caption", "prompt")


def read_captions(root: Path, files: list[Path],
                  explicit: Optional[str] = None) -> tuple[Optional[dict[str, str]], str]:
    """``({file name relative to root, "/"-separated: caption}, where they came from)`` for the images ``files``
    of the folder ``root``, or ``(None, "")`` when it has no captions. ``explicit`` names a captions file (a path,
    or a name inside ``root``) that wins over the folder's own."""
    rel = [f.relative_to(root).as_posix() for f in files]
    known = set(rel)
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file() and (root / explicit).is_file():
            path = root / explicit
        if not path.is_file():
            raise DataError(f"captions file {explicit!r} not found (looked as given and in {root})")
        return read_caption_file(path, root, known), str(path)
    for name in CAPTION_FILES:
        if (root / name).is_file():
            return read_caption_file(root / name, root, known), str(root / name)
    sidecars = {r: f.with_suffix(".txt") for r, f in zip(rel, files) if f.with_suffix(".txt").is_file()}
    if not sidecars:
        return None, ""
    out = {}
    for r, txt in sidecars.items():
        try:
            out[r] = txt.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{txt}: cannot read the caption ({exc})") from exc
    return out, "a .txt file beside each image"


def read_caption_file(path: Path, root: Path, known: set[str]) -> dict[str, str]:
    """Captions of a ``.jsonl`` or ``.csv`` file (see module doc), each naming one of the ``known`` images."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DataError(f"{path}: a captions file must be .jsonl (one JSON object per line) or .csv")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(_jsonl_rows(path, fh) if suffix == ".jsonl" else _csv_rows(path, fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    out, line_of = {}, {}
    for no, row in rows:
        name = row.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path}, line {no}: no 'file_name' naming the image")
        text = next((row[k] for k in TEXT_FIELDS if row.get(k) is not None), None)
        if not isinstance(text, str):
            raise DataError(f"{path}, line {no}: no caption text (a {', '.join(map(repr, TEXT_FIELDS))} field)")
        key = PurePosixPath(name.strip().replace("\\", "/")).as_posix()
        if key not in known:
            raise DataError(f"{path}, line {no}: {name!r} is not an image in {root} (file_name is relative to "
                            "the image folder); fix the name or remove the line")
        if key in out:
            raise DataError(f"{path}, line {no}: {name!r} has a caption already (line {line_of[key]})")
        out[key], line_of[key] = text.strip(), no
    return out


def _jsonl_rows(path: Path, fh):
    for no, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {no}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {no}: expected a JSON object like {{\"file_name\": ..., \"text\": ...}}")
        yield no, row


def _csv_rows(path: Path, fh):
    reader = csv.DictReader(fh)
    header = reader.fieldnames or []
    if "file_name" not in header or not any(k in header for k in TEXT_FIELDS):
        raise DataError(f"{path}: expected a header with columns file_name and text (or caption, prompt), "
                        f"found {', '.join(header) or 'none'}")
    for row in reader:
        yield reader.line_num, row
