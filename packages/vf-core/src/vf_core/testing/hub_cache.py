"""A local Hugging Face hub cache laid out from a model folder, for tests that resolve hub ids offline.

``huggingface_hub`` keeps a model as ``<cache>/models--ORG--NAME/`` with ``blobs/`` (the files), ``snapshots/<commit>/``
(symlinks into the blobs) and ``refs/main`` (the commit ``main`` points at). Laying a packaged model out that way
lets ``org/name`` resolve with ``HF_HUB_OFFLINE=1`` and no network, exactly as on a user's machine after a download.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     src = Path(d) / "model"; src.mkdir(); _ = (src / "config.json").write_text("{}")
    ...     snap = lay_out_hub_cache(src, Path(d) / "hub", "org/name")
    ...     (snap / "config.json").read_text(), snap.parent.parent.name
    ('{}', 'models--org--name')
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["lay_out_hub_cache", "TEST_COMMIT"]

TEST_COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def lay_out_hub_cache(source: Path, hub: Path, repo_id: str, commit: str = TEST_COMMIT) -> Path:
    """Lay the files of the folder ``source`` out in the hub cache ``hub`` as ``repo_id`` at ``commit`` (also
    ``main``); returns the snapshot folder."""
    repo = Path(hub) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for i, path in enumerate(sorted(p for p in Path(source).iterdir() if p.is_file())):
        blob = repo / "blobs" / f"{commit[:8]}-{i:04d}"
        os.symlink(path.resolve(), blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
