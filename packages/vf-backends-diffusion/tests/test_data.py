"""Tests of vf_backends_diffusion.data on tiny PNG/JPEG folders made with PIL and a tiny fake mnist-5k (the asset
fetch is monkeypatched: no network); the real mnist-5k runs only when VECTORFIT_TEST_ASSETS=1."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from vf_backends_diffusion import data as diff_data
from vf_backends_diffusion.data import DataError, DataReport, ImageSet, load_image_data
from vf_core.images import BUILTIN_IMAGE_SOURCES


def v(x: int) -> float:
    """The [-1, 1] value a 0..255 pixel maps to, computed the way the loader does (float32)."""
    return float(torch.tensor(float(x)).div(127.5).sub(1.0))


def solid(path, colour, size=(8, 8), mode="RGB"):
    Image.new(mode, size, colour).save(path)
    return path


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """200 rows, 20 per digit; digit d has one bright pixel at row d, column 5."""
    rows = []
    for i in range(200):
        label = i % 10
        pixels = [0] * 784
        pixels[label * 28 + 5] = 255
        rows.append(",".join(map(str, pixels + [label])))
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    asked = []
    monkeypatch.setattr(diff_data, "fetch", lambda asset: asked.append(asset) or path)
    return asked


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "classes"
    for name, colour in {"red": (255, 0, 0), "blue": (0, 0, 255)}.items():
        (root / name / "sub").mkdir(parents=True)
        for i in range(5):
            solid(root / name / ("sub" if i == 4 else "") / f"{i}.png", colour)
    (root / "red" / "notes.md").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


@pytest.fixture
def mixed_folder(tmp_path):
    """A flat folder of every mode and shape, one unreadable PNG, one truncated PNG and a non-image file."""
    root = tmp_path / "mixed"
    root.mkdir()
    solid(root / "rgb.png", (255, 0, 0), size=(10, 10))              # RGB, resized
    solid(root / "clear.png", (0, 0, 0, 0), mode="RGBA")              # transparent: white
    solid(root / "half.png", (0, 0, 0, 128), mode="RGBA")             # half transparent black on white
    solid(root / "gray.png", 0, mode="L")
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 255, 0] + [0] * 765)
    pal.save(root / "pal.png")                                         # P: green
    wide = np.zeros((8, 16, 3), dtype=np.uint8)                        # 16 wide: columns 4..11 are the centre
    wide[:, :4, 0] = 255
    wide[:, 4:12, 1] = 255
    wide[:, 12:, 2] = 255
    Image.fromarray(wide).save(root / "wide.png")
    deep = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))    # 16-bit grayscale: white
    deep.save(root / "deep.png")
    (root / "bad.png").write_bytes(b"\x00garbage, not a png")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good, "PNG")
    (root / "cut.png").write_bytes(good.getvalue()[:60])               # a header, then nothing
    (root / "notes.md").write_text("# notes")
    return root


def test_class_folders_labels_exact_values_and_sources(class_folder):
    train, ev, report = load_image_data(class_folder, image_size=8, channels=3, eval_fraction=0.2)
    assert isinstance(train, ImageSet) and isinstance(report, DataReport)
    assert train.label_names == ev.label_names == ["blue", "red"]
    assert len(train) == 8 and len(ev) == 2 and train.captions is None
    assert train.images.shape == (8, 3, 8, 8) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.long and sorted(set(train.sources) | set(ev.sources)) == sorted(
        str(p) for p in class_folder.rglob("*.png"))
    for img, label, src in zip(train.images, train.labels, train.sources):
        assert ("red" if label == 1 else "blue") in src
        expected = torch.tensor([1.0, -1.0, -1.0] if label == 1 else [-1.0, -1.0, 1.0]).view(3, 1, 1)
        assert torch.equal(img, expected.expand(3, 8, 8))
    assert report.notes() == [] and report.skipped == [] and report.resized == 0


def test_class_folder_classes_keep_full_label_list(class_folder):
    train, ev, _ = load_image_data(class_folder, image_size=8, channels=1, classes=["red"], eval_fraction=0.2)
    assert train.label_names == ["blue", "red"] and set(train.labels.tolist() + ev.labels.tolist()) == {1}
    assert len(train) + len(ev) == 5
    assert torch.equal(train.images, torch.full((4, 1, 8, 8), v(76)))  # PIL's luma of pure red
    with pytest.raises(DataError, match=r"unknown class 'green' in .*; known: blue, red"):
        load_image_data(class_folder, image_size=8, channels=3, classes=["green"])


def test_mixed_modes_sizes_and_unreadable_files(mixed_folder):
    train, ev, report = load_image_data(mixed_folder, image_size=8, channels=3, eval_fraction=0.05)
    assert report.eval_reuses_train and torch.equal(ev.images, train.images) and ev.sources == train.sources
    assert train.labels is None and train.label_names == [] and train.captions is None
    by_name = {os.path.basename(s): img for s, img in zip(train.sources, train.images)}
    assert sorted(by_name) == ["clear.png", "deep.png", "gray.png", "half.png", "pal.png", "rgb.png", "wide.png"]
    assert train.images.shape == (7, 3, 8, 8)

    def is_colour(img, rgb):
        return torch.equal(img, torch.tensor([v(c) for c in rgb]).view(3, 1, 1).expand(3, 8, 8))

    assert is_colour(by_name["rgb.png"], (255, 0, 0))        # resized 10x10 -> 8x8, solid stays exact
    assert is_colour(by_name["clear.png"], (255, 255, 255))  # transparent composited on white
    assert is_colour(by_name["half.png"], (127, 127, 127))
    assert is_colour(by_name["gray.png"], (0, 0, 0))
    assert is_colour(by_name["pal.png"], (0, 255, 0))
    assert is_colour(by_name["wide.png"], (0, 255, 0))       # centre-cropped to columns 4..11
    assert is_colour(by_name["deep.png"], (255, 255, 255))   # 16-bit scaled, not clipped
    assert [os.path.basename(f) for f, _ in report.skipped] == ["bad.png", "cut.png"]
    assert "notes.md" not in str(report.skipped)
    assert report.resized == 2 and report.converted == {"RGBA": 2, "L": 1, "P": 1, "I;16": 1}
    notes = report.notes()
    assert notes[0].startswith(f"skipped 2 unreadable image files (first: {mixed_folder / 'bad.png'}: ")
    assert notes[1:] == ["resized 2 images of other sizes to 8x8",
                         "converted 2 RGBA, 1 I;16, 1 L, 1 P images to 3 channels",
                         "eval is a copy of train (too few images to hold any out): the eval loss measures fit"]


def test_caps_refill_past_images_that_fail_to_decode(mixed_folder):
    for seed in range(4):  # cut.png opens but fails to decode: it is skipped and the next image taken instead
        train, _, report = load_image_data(mixed_folder, image_size=8, channels=3, eval_fraction=0.05, seed=seed,
                                           max_train=6)
        assert len(train) == 6 and "cut.png" not in " ".join(train.sources)
        assert [os.path.basename(f) for f, _ in report.skipped][0] == "bad.png"


def test_one_channel_and_non_square_size(tmp_path):
    root = tmp_path / "rgba"
    root.mkdir()
    for i in range(3):
        solid(root / f"{i}.png", (255, 0, 0, 255), size=(6, 4), mode="RGBA")
    train, _, report = load_image_data(root, image_size=(4, 8), channels=1)
    assert train.images.shape == (3, 1, 4, 8) and torch.equal(train.images, torch.full((3, 1, 4, 8), v(76)))
    assert report.notes() == ["resized 3 images of other sizes to 4x8 (HxW)",
                              "converted 3 RGBA images to 1 channel",
                              "eval is a copy of train (too few images to hold any out): the eval loss measures fit"]


def test_jpeg_and_exif_free_photo_close_to_colour(tmp_path):
    root = tmp_path / "jpg" / "cat"
    root.mkdir(parents=True)
    for i in range(2):
        solid(root / f"{i}.jpg", (200, 100, 50), size=(12, 9))
    train, _, report = load_image_data(root.parent, image_size=6, channels=3)
    target = torch.tensor([v(200), v(100), v(50)]).view(1, 3, 1, 1)
    assert train.images.shape[1:] == (3, 6, 6) and (train.images - target).abs().max() < 0.05
    assert report.resized == len(train)


def test_captions_from_metadata_jsonl(tmp_path):
    root = tmp_path / "dog"
    root.mkdir()
    texts = {"a.png": "a photo of sks dog", "b.png": "sks dog on grass", "c.png": "sks dog asleep"}
    for i, name in enumerate(texts):
        solid(root / name, (i, i, i))
    fields = ["text", "caption", "prompt"]
    lines = [json.dumps({"file_name": f"./{n}" if i == 0 else n, fields[i]: t, "other": 1})
             for i, (n, t) in enumerate(texts.items())]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n\n")
    train, ev, _ = load_image_data(root, image_size=8, channels=3)
    assert {os.path.basename(s): c for s, c in zip(train.sources, train.captions)} == texts
    assert ev.captions == train.captions and train.labels is None


def test_captions_csv_sidecars_and_explicit_file_wins(tmp_path):
    root = tmp_path / "cap"
    root.mkdir()
    for name in ("a.png", "b.jpg"):
        solid(root / name, (9, 9, 9))
    (root / "a.txt").write_text("sidecar a\n")
    (root / "b.txt").write_text("sidecar b")
    train, _, _ = load_image_data(root, image_size=8, channels=3)
    assert sorted(train.captions) == ["sidecar a", "sidecar b"]
    (root / "captions.csv").write_text('file_name,text\na.png,"csv a, with comma"\nb.jpg,csv b\n')
    train, _, _ = load_image_data(root, image_size=8, channels=3)
    assert sorted(train.captions) == ["csv a, with comma", "csv b"]
    other = tmp_path / "mine.jsonl"
    other.write_text('{"file_name": "a.png", "prompt": "mine a"}\n{"file_name": "b.jpg", "text": "mine b"}\n')
    train, _, _ = load_image_data(root, image_size=8, channels=3, captions=str(other))
    assert sorted(train.captions) == ["mine a", "mine b"]
    (root / "in.csv").write_text("file_name,caption\na.png,in a\nb.jpg,in b\n")
    train, _, _ = load_image_data(root, image_size=8, channels=3, captions="in.csv")  # a name in the folder
    assert sorted(train.captions) == ["in a", "in b"]


def test_caption_errors(tmp_path):
    root = tmp_path / "cap"
    root.mkdir()
    for name in ("a.png", "b.png"):
        solid(root / name, (9, 9, 9))
    (root / "a.txt").write_text("only a")
    with pytest.raises(DataError, match=r"1 image without a caption \(first: b.png\); .*beside each image"):
        load_image_data(root, image_size=8, channels=3)
    cases = {
        '{"file_name": "a.png", "text": "x"}\n{"file_name": "z.png", "text": "y"}\n':
            r"metadata.jsonl, line 2: 'z.png' is not an image in",
        '{"file_name": "a.png", "text": "x"}\nnot json\n': r"line 2: not valid JSON",
        '{"file_name": "a.png", "label": 3}\n': r"line 1: no caption text",
        '{"text": "x"}\n': r"line 1: no 'file_name'",
        '{"file_name": "a.png", "text": "x"}\n{"file_name": "a.png", "text": "y"}\n':
            r"line 2: 'a.png' has a caption already \(line 1\)",
        '{"file_name": "a.png", "text": "x"}\n': r"without a caption \(first: b.png\); give every image one in .*"
                                                 r"metadata.jsonl",
    }
    for text, message in cases.items():
        (root / "metadata.jsonl").write_text(text)
        with pytest.raises(DataError, match=message):
            load_image_data(root, image_size=8, channels=3)
    (root / "metadata.jsonl").unlink()
    (root / "captions.csv").write_text("name,words\na.png,x\n")
    with pytest.raises(DataError, match="expected a header with columns file_name and text.*found name, words"):
        load_image_data(root, image_size=8, channels=3)
    with pytest.raises(DataError, match="captions file 'nope.csv' not found"):
        load_image_data(root, image_size=8, channels=3, captions="nope.csv")
    (root / "c.json").write_text("{}")
    with pytest.raises(DataError, match=r"must be .jsonl .* or .csv"):
        load_image_data(root, image_size=8, channels=3, captions="c.json")


def test_mnist_5k_class_9_keeps_label_ids(fake_mnist):
    train, ev, report = load_image_data("mnist-5k", image_size=16, channels=1, classes=["9"])
    assert fake_mnist == [BUILTIN_IMAGE_SOURCES["mnist-5k"].asset]
    assert len(train) == 18 and len(ev) == 2 and not report.eval_reuses_train
    assert set(train.labels.tolist()) == set(ev.labels.tolist()) == {9}
    assert train.label_names == [str(d) for d in range(10)] and train.captions is None
    assert train.images.shape == (18, 1, 16, 16) and train.images.dtype == torch.float32
    assert train.images.min() == -1.0 and train.images.max() <= 1.0 and train.images.max() > -1.0
    assert all(s.startswith("mnist-5k row ") and int(s.split()[-1]) % 10 == 9 for s in train.sources)
    assert report.notes() == ["resized 20 images of other sizes to 16x16"]


def test_mnist_exact_values_three_channels_split_and_caps(fake_mnist):
    train, ev, report = load_image_data("mnist-5k", image_size=28, channels=3)
    assert len(train) == 180 and len(ev) == 20 and not set(train.sources) & set(ev.sources)
    assert torch.equal(train.images[:, 0], train.images[:, 2])
    for img, label in zip(train.images, train.labels):
        assert img[0, int(label), 5] == 1.0 and (img[0] == 1.0).sum() == 1 and (img[0] == -1.0).sum() == 783
    assert report.resized == 0 and report.converted == {"L": 200}
    capped, capped_ev, _ = load_image_data("mnist-5k", image_size=28, channels=3, max_train=5, max_eval=3)
    assert capped.sources == train.sources[:5] and torch.equal(capped_ev.images, ev.images[:3])
    other, _, _ = load_image_data("mnist-5k", image_size=28, channels=3, seed=1)
    assert other.sources != train.sources


def test_digits_through_a_fake_sklearn(monkeypatch):
    fake = types.ModuleType("sklearn.datasets")
    fake.load_digits = lambda: types.SimpleNamespace(images=np.full((20, 8, 8), 16.0), target=[i % 10 for i in
                                                                                                range(20)])
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    train, ev, report = load_image_data("digits", image_size=8, channels=1, classes=["3", "4"])
    assert len(train) == len(ev) == 4 and report.eval_reuses_train  # round(4 * 0.1) == 0: nothing held out
    assert sorted(train.labels.tolist()) == [3, 3, 4, 4] and torch.all(train.images == 1.0)


def test_subset():
    data = ImageSet(torch.arange(4.0).view(4, 1, 1, 1), torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"],
                    ["x", "y"], ["s0", "s1", "s2", "s3"])
    part = data.subset(torch.tensor([3, 1]))
    assert len(part) == 2 and part.images.flatten().tolist() == [3.0, 1.0] and part.labels.tolist() == [1, 1]
    assert part.captions == ["d", "b"] and part.sources == ["s3", "s1"] and part.label_names == ["x", "y"]
    part.images += 10
    assert data.images.flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    bare = ImageSet(torch.zeros(2, 1, 1, 1), None, None, [], ["p", "q"]).subset(range(1, 2))
    assert bare.labels is None and bare.captions is None and bare.sources == ["q"]


def test_bad_specs_and_arguments(tmp_path, fake_mnist, class_folder):
    with pytest.raises(DataError, match=r"^'.*missing' is neither a built-in dataset \(mnist-5k, digits\) nor an "
                                        r"image folder"):
        load_image_data(tmp_path / "missing", image_size=8, channels=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        load_image_data(tmp_path / "empty", image_size=8, channels=3)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"nope")
    (junk / "y.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"junk: no readable images \(first: .*x.png: "):
        load_image_data(junk, image_size=8, channels=3)
    with pytest.raises(DataError, match="classes= needs labelled data"):
        solid(junk / "z.png", (1, 1, 1))
        load_image_data(junk, image_size=8, channels=3, classes=["a"])
    solid(class_folder / "stray.png", (1, 1, 1))
    with pytest.raises(DataError, match=r"both directly \(stray.png\) and in sub-folders \(blue/\)"):
        load_image_data(class_folder, image_size=8, channels=3)
    with pytest.raises(DataError, match="channels must be 1"):
        load_image_data("mnist-5k", image_size=8, channels=2)
    for size in (0, (8,), "16", (8, -1)):
        with pytest.raises(DataError, match="image_size"):
            load_image_data("mnist-5k", image_size=size, channels=1)
    with pytest.raises(DataError, match="max_train"):
        load_image_data("mnist-5k", image_size=8, channels=1, max_train=0)
    with pytest.raises(DataError, match="eval_fraction"):
        load_image_data("mnist-5k", image_size=8, channels=1, eval_fraction=1.0)
    with pytest.raises(DataError, match="captions= applies to image folders"):
        load_image_data("mnist-5k", image_size=8, channels=1, captions="c.csv")
    with pytest.raises(DataError, match=r"unknown classes '10', 'x' in mnist-5k; known: 0, 1, 2"):
        load_image_data("mnist-5k", image_size=8, channels=1, classes=["10", "x"])


@pytest.mark.skipif(os.environ.get("VECTORFIT_TEST_ASSETS") != "1", reason="set VECTORFIT_TEST_ASSETS=1 to fetch")
def test_real_mnist_5k_class_9():
    train, ev, report = load_image_data("mnist-5k", image_size=16, channels=1, classes=["9"])
    assert len(train) == 450 and len(ev) == 50 and len(train.label_names) == 10
    assert set(train.labels.tolist()) == {9} and train.images.shape == (450, 1, 16, 16)
    assert train.images.min() == -1.0 and 0.9 < train.images.max() <= 1.0
    assert report.notes() == ["resized 500 images of other sizes to 16x16"]
