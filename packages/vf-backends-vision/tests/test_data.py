"""Tests of vf_backends_vision.data on a tiny generated image folder and a tiny fake MNIST csv.gz (no network:
the asset fetch is monkeypatched); the real mnist-5k fetch runs only when VECTORFIT_TEST_ASSETS=1."""

from __future__ import annotations

import gzip
import os
import sys
import types

import pytest
import torch
from PIL import Image

from vf_backends_vision import data as vis_data
from vf_backends_vision.data import BUILTIN_IMAGE_DATASETS, DataError, ImageDataset, load_image_dataset


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    rows = []
    for i in range(40):
        label = i % 4
        pixels = [0] * 784
        pixels[label * 28 + 5] = 255  # one bright pixel whose row encodes the label
        rows.append(",".join(map(str, pixels + [label])))
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    asked = []
    monkeypatch.setattr(vis_data, "fetch", lambda asset: asked.append(asset) or path)
    return path, asked


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    colours = {"blue": (0, 0, 255), "red": (255, 0, 0)}
    for name, colour in colours.items():
        (root / name / "sub").mkdir(parents=True)
        for i in range(5):
            size = (12, 10) if i % 2 else (10, 10)
            where = root / name / ("sub" if i == 4 else "") / f"{i}.{'png' if i % 2 else 'jpg'}"
            Image.new("RGB", size, colour).save(where)
    (root / "red" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_mnist_builtin_shapes_labels_and_normalisation(fake_mnist):
    path, asked = fake_mnist
    train, ev = load_image_dataset("mnist-5k")
    assert asked == [BUILTIN_IMAGE_DATASETS["mnist-5k"].asset]
    assert isinstance(train, ImageDataset) and len(train) == 32 and len(ev) == 8
    assert train.images.shape == (32, 3, 28, 28) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.long and train.label_names == ["0", "1", "2", "3"]
    assert train.images.min() == -1.0 and train.images.max() == 1.0  # mean = std = 0.5
    assert torch.equal(train.images[:, 0], train.images[:, 2])      # grayscale replicated
    for img, label in zip(train.images, train.labels):
        assert img[0, int(label), 5] == 1.0 and (img[0] == 1.0).sum() == 1
    x, y = train[0]
    assert x.shape == (3, 28, 28) and y.dtype == torch.long


def test_split_is_fixed_and_caps_keep_prefix(fake_mnist):
    a_train, a_ev = load_image_dataset("mnist-5k")
    b_train, b_ev = load_image_dataset("mnist-5k", max_train=5, max_eval=3)
    assert torch.equal(b_train.labels, a_train.labels[:5]) and torch.equal(b_ev.images, a_ev.images[:3])
    c_train, _ = load_image_dataset("mnist-5k")
    assert torch.equal(c_train.images, a_train.images)
    assert not torch.equal(load_image_dataset("mnist-5k", seed=3)[1].labels, a_ev.labels)


def test_resize_and_custom_normalisation(fake_mnist):
    train, _ = load_image_dataset("mnist-5k", image_size=(16, 20), mean=0.0, std=[1.0, 2.0, 4.0], max_train=4)
    assert train.images.shape == (4, 3, 16, 20)
    assert torch.allclose(train.images[:, 0], 2 * train.images[:, 1]) and train.images.min() >= 0
    big, _ = load_image_dataset("mnist-5k", image_size=56, max_train=2)
    assert big.images.shape == (2, 3, 56, 56)


def test_local_pixel_csv_path(fake_mnist):
    path, asked = fake_mnist
    train, ev = load_image_dataset(path)
    assert asked == [] and len(train) + len(ev) == 40


def test_image_folder(image_folder):
    with pytest.raises(DataError, match="differ in size.*image_size="):
        load_image_dataset(image_folder)
    train, ev = load_image_dataset(image_folder, image_size=8)
    assert train.label_names == ["blue", "red"] and len(train) + len(ev) == 10
    assert train.images.shape[1:] == (3, 8, 8)
    for img, label in zip(train.images, train.labels):
        channel = 2 if label == 0 else 0  # blue or red
        assert img[channel].mean() > 0.9 and img[1].mean() < -0.9


def test_folder_errors(tmp_path):
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_dataset(tmp_path / "empty_root")
    (tmp_path / "r" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_image_dataset(tmp_path / "r")
    (tmp_path / "r" / "cat" / "bad.png").write_bytes(b"not a png")
    Image.new("RGB", (4, 4)).save(tmp_path / "r" / "cat" / "ok.png")
    with pytest.raises(DataError, match="bad.png: cannot read as an image"):
        load_image_dataset(tmp_path / "r", image_size=4)


def test_bad_spec_and_arguments(tmp_path, fake_mnist):
    with pytest.raises(DataError, match="neither a built-in dataset .*mnist-5k"):
        load_image_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="image_size"):
        load_image_dataset("mnist-5k", image_size=0)
    with pytest.raises(DataError, match="std"):
        load_image_dataset("mnist-5k", std=0)
    with pytest.raises(DataError, match="max_eval"):
        load_image_dataset("mnist-5k", max_eval=-1)
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3,4,0\n1,2,3\n")
    with pytest.raises(DataError, match="line 2: 3 values"):
        load_image_dataset(bad)


def test_digits_without_and_with_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match="pip install scikit-learn"):
        load_image_dataset("digits")
    fake = types.ModuleType("sklearn.datasets")
    fake.load_digits = lambda: types.SimpleNamespace(images=[[[16.0] * 8] * 8] * 10, target=list(range(10)))
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    train, ev = load_image_dataset("digits", image_size=16)
    assert train.images.shape == (8, 3, 16, 16) and len(ev) == 2 and torch.all(train.images == 1.0)


@pytest.mark.skipif(os.environ.get("VECTORFIT_TEST_ASSETS") != "1", reason="set VECTORFIT_TEST_ASSETS=1 to fetch")
def test_real_mnist_5k():
    train, ev = load_image_dataset("mnist-5k")
    assert train.images.shape == (4000, 3, 28, 28) and ev.images.shape == (1000, 3, 28, 28)
    assert torch.bincount(torch.cat([train.labels, ev.labels])).tolist() == [500] * 10
