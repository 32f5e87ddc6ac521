"""Models named by Hugging Face hub id (``org/name`` or ``org/name@revision``), resolved through
``huggingface_hub``: the local cache first, the hub only when it is not there and the process is online.

With ``HF_HUB_OFFLINE=1`` only the cache is used, and a model that is not in it is one clear error naming the
cache folder and how to fill it. The cache is the one ``huggingface_hub`` uses (``HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), read when a model is resolved, not at import.
Every backend resolves hub ids through here (huggingface_hub is imported inside the functions only).

Example:
    >>> parse_hub_id("sentence-transformers/all-MiniLM-L6-v2@main")
    ('sentence-transformers/all-MiniLM-L6-v2', 'main')
    >>> parse_hub_id("minilm") is None
    True
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from vf_core.assets import DataError

__all__ = ["parse_hub_id", "hub_cache_dir", "cached_model_dir", "claim_path", "resolve_hub_model", "offline"]

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<rev>[\w./-]+))?$")


def parse_hub_id(spec: str) -> Optional[tuple[str, Optional[str]]]:
    """``(repo_id, revision or None)`` when ``spec`` reads as a hub model id, else None."""
    match = _HUB_ID.match(str(spec))
    if not match:
        return None
    return match.group("repo"), match.group("rev")


def hub_cache_dir() -> Path:
    """The hub cache folder, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface") / "hub"


def cached_model_dir(spec: str, markers: tuple[str, ...] = ("config.json",)) -> Optional[Path]:
    """The snapshot folder of hub id ``spec`` (``org/name[@revision]``) in the local hub cache when it holds one of
    ``markers`` (default ``config.json``; a diffusers pipeline has ``model_index.json``) there, else None. Cheap (paths only, no huggingface_hub import): the tasks' claims read the
    cached config to tell a causal LM from a seq2seq model or an encoder, as for a local directory."""
    parsed = parse_hub_id(spec)
    if parsed is None or Path(spec).expanduser().exists():
        return None
    repo_id, revision = parsed
    repo = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / (revision or "main")
    try:
        commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else (revision or "")
        snapshot = repo / "snapshots" / commit
        return snapshot if commit and any((snapshot / m).is_file() for m in markers) else None
    except OSError:
        return None


def claim_path(spec: str) -> Path:
    """What a task's claim looks at for ``--model spec``: a cached hub snapshot for a hub id the cache holds, else the
    path ``spec`` itself (which may not exist)."""
    return cached_model_dir(spec) or Path(spec).expanduser()


def offline(*variables: str) -> bool:
    """Whether any of the environment variables (default ``HF_HUB_OFFLINE``) turns the hub off, as
    huggingface_hub reads them (1, true, yes or on)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in variables or ("HF_HUB_OFFLINE",))


def resolve_hub_model(repo_id: str, revision: Optional[str] = None) -> Path:
    """The local snapshot folder of ``repo_id`` at ``revision`` (default ``main``): from the cache when it is
    there, else downloaded (unless offline). Raises :class:`~vf_core.assets.DataError` with what to do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    cache = hub_cache_dir()
    shown = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        if offline():
            raise DataError(f"model {shown!r} is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1;"
                            f" download it where the hub is reachable (huggingface-cli download {repo_id}), or unset"
                            " HF_HUB_OFFLINE") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise DataError(f"model {shown!r}: {type(exc).__name__}") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache))
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise DataError(f"model {shown!r} does not exist on the Hugging Face hub (or is private: log in with"
                        " `huggingface-cli login`)") from None
    except Exception as exc:  # no network, a proxy, a full disk...
        raise DataError(f"model {shown!r} could not be fetched from the Hugging Face hub into {cache}"
                        f" ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
