"""The imagefolder dataset: tiny PNG/JPEG trees and tar archives written here."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config.schema import DatasetConfig
from bench.data import load_dataset
from bench.data.cache import CACHE_ENV, cache_dir
from bench.core.errors import BenchError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpeg"
CLASSES = ["cat", "dog", "emu"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tree(root: Path, per_class: dict[str, int], *, size=(5, 6), grey=False, seed=0) -> dict:
    """root/<split>/<class>/<i>.png; returns {(split, class, i): HWC array}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for split, n in per_class.items():
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = size if grey else (*size, 3)
                array = rng.integers(0, 256, shape, dtype=np.uint8)
                (folder / f"{i:03d}.png").write_bytes(_png(array))
                truth[(split, cls, i)] = array
    return truth


def _as_chw(array: np.ndarray) -> np.ndarray:
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _cfg(root: Path, **kw) -> DatasetConfig:
    return DatasetConfig(name="imagefolder", root=str(root), **kw)


def test_folder_loads_pixels_and_labels(tmp_path):
    truth = write_tree(tmp_path / "data", {"train": 10, "test": 4})
    (tmp_path / "data" / "train" / "cat" / "notes.txt").write_text("not an image: ignored")
    data = load_dataset(_cfg(tmp_path / "data", val_fraction=0.2))
    assert data.classes == CLASSES and data.input_shape == (3, 5, 6) and data.train_x.dtype == torch.uint8
    assert len(data.train_x) == 24 and len(data.val_x) == 6 and len(data.test_x) == 12
    assert (data.val_y.bincount() == 2).all()
    expected_test = np.stack([_as_chw(truth[("test", c, i)]) for c in CLASSES for i in range(4)])
    assert np.array_equal(data.test_x.numpy(), expected_test)
    assert data.test_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    train_rows = {bytes(_as_chw(truth[("train", c, i)])): k for k, c in enumerate(CLASSES) for i in range(10)}
    got = torch.cat([data.train_x, data.val_x]), torch.cat([data.train_y, data.val_y])
    assert sorted(train_rows[bytes(x.numpy())] for x in got[0]) == sorted(got[1].tolist())


def test_decoded_once_then_cached(tmp_path, monkeypatch):
    write_tree(tmp_path / "data", {"train": 4, "test": 2}, grey=True)
    first = load_dataset(_cfg(tmp_path / "data"))
    assert first.input_shape == (1, 5, 6)  # all grey: one channel
    cached = list(cache_dir().glob("imagefolder-data-*.npz"))
    assert len(cached) == 1

    import bench.data.imagefolder as imagefolder
    with monkeypatch.context() as patch:
        patch.setattr(imagefolder, "decode_image_folder", lambda root: pytest.fail("decoded again"))
        again = load_dataset(_cfg(tmp_path / "data"))
    assert torch.equal(again.test_x, first.test_x)

    # a changed file changes the key: decoded afresh, not read stale
    extra = tmp_path / "data" / "train" / "dog" / "999.png"
    extra.write_bytes(_png(np.zeros((5, 6), np.uint8)))
    grown = load_dataset(_cfg(tmp_path / "data"))
    assert len(grown.train_y) + len(grown.val_y) == len(first.train_y) + len(first.val_y) + 1
    assert len(list(cache_dir().glob("imagefolder-data-*.npz"))) == 2


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    write_tree(tmp_path / "data", {"train": 4, "test": 2})
    first = load_dataset(_cfg(tmp_path / "data"))
    (entry,) = cache_dir().glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    assert torch.equal(load_dataset(_cfg(tmp_path / "data")).test_x, first.test_x)


def test_mixed_grey_and_rgb_become_rgb_with_a_warning(tmp_path, capsys):
    write_tree(tmp_path / "data", {"train": 4, "test": 2})
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    (tmp_path / "data" / "test" / "emu" / "000.png").write_bytes(_png(grey))
    (tmp_path / "data" / "train" / "cat" / "003.png").write_bytes(_png(grey[::-1]))
    data = load_dataset(_cfg(tmp_path / "data"))
    assert data.input_shape == (3, 5, 6)
    emu = data.test_x[data.test_y == 2][0]
    assert all(np.array_equal(emu[c].numpy(), grey) for c in range(3))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: image folder {(tmp_path / 'data').resolve()}: 2 of 18 images are greyscale "
                        f"among colour ones; they are used as RGB (grey level copied to all 3 channels)"]
    load_dataset(_cfg(tmp_path / "data"))                 # from the decode cache: said once, when decoded
    assert "warning:" not in capsys.readouterr().err
    write_tree(tmp_path / "grey", {"train": 4, "test": 2}, grey=True)
    assert load_dataset(_cfg(tmp_path / "grey")).input_shape == (1, 5, 6)
    assert "warning:" not in capsys.readouterr().err      # all grey: one channel, nothing to say


def test_tar_archives_are_read_without_extracting(tmp_path):
    write_tree(tmp_path / "tree", {"train": 5, "test": 3})
    archives = tmp_path / "archives"
    archives.mkdir()
    for split in ("train", "test"):
        with tarfile.open(archives / f"{split}.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "tree" / split, arcname=split)
    from_tar = load_dataset(_cfg(archives))
    from_tree = load_dataset(_cfg(tmp_path / "tree"))
    assert from_tar.classes == CLASSES
    for split in ("train", "val", "test"):
        assert torch.equal(from_tar.split(split)[0], from_tree.split(split)[0])
        assert torch.equal(from_tar.split(split)[1], from_tree.split(split)[1])
    assert sorted(p.name for p in archives.iterdir()) == ["test.tar.gz", "train.tar.gz"]


# ----- bad input ----------------------------------------------------------------------
def test_truncated_image_names_the_file(tmp_path):
    write_tree(tmp_path / "data", {"train": 4, "test": 2})
    bad = tmp_path / "data" / "train" / "dog" / "002.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(BenchError, match=f"{bad}: cannot decode image"):
        load_dataset(_cfg(tmp_path / "data"))


def test_truncated_jpeg_in_archive_names_the_member(tmp_path):
    write_tree(tmp_path / "tree", {"train": 3, "test": 2})
    jpeg = io.BytesIO()
    Image.fromarray(np.full((5, 6, 3), 90, np.uint8)).save(jpeg, format="JPEG")
    (tmp_path / "tree" / "test" / "cat" / "zz.jpg").write_bytes(jpeg.getvalue()[:60])
    with tarfile.open(tmp_path / "test.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "tree" / "test", arcname="test")
    os.rename(tmp_path / "tree" / "train", tmp_path / "train")
    with pytest.raises(BenchError, match=r"test\.tar\.gz:test/cat/zz\.jpg: cannot decode image"):
        load_dataset(_cfg(tmp_path))


def test_class_mismatch(tmp_path):
    write_tree(tmp_path / "data", {"train": 3, "test": 2})
    (tmp_path / "data" / "test" / "emu").rename(tmp_path / "data" / "test" / "yak")
    with pytest.raises(BenchError, match="classes differ.*only in train: emu; only in test: yak"):
        load_dataset(_cfg(tmp_path / "data"))


def test_missing_split_size_mismatch_and_empty_class(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load_dataset(_cfg(tmp_path / "absent"))
    with pytest.raises(BenchError, match="--data-root"):
        load_dataset(DatasetConfig(name="imagefolder"))
    write_tree(tmp_path / "a", {"train": 3})
    with pytest.raises(BenchError, match="no test split"):
        load_dataset(_cfg(tmp_path / "a"))
    write_tree(tmp_path / "b", {"train": 3, "test": 2})
    (tmp_path / "b" / "test" / "dog" / "big.png").write_bytes(_png(np.zeros((7, 7, 3), np.uint8)))
    with pytest.raises(BenchError, match="big.png: image is 7×7 but .* is 6×5"):
        load_dataset(_cfg(tmp_path / "b"))
    write_tree(tmp_path / "c", {"train": 3, "test": 2})
    (tmp_path / "c" / "train" / "gnu").mkdir()
    with pytest.raises(BenchError, match="gnu hold no images"):
        load_dataset(_cfg(tmp_path / "c"))


def _one_class_tree(root: Path) -> None:
    for split, n in (("train", 6), ("test", 2)):
        (root / split / "cat").mkdir(parents=True)
        for i in range(n):
            (root / split / "cat" / f"{i}.png").write_bytes(_png(np.full((5, 6, 3), i, np.uint8)))


def test_one_class_is_one_error_line_and_exit_2(tmp_path, capsys):
    from bench.cli.main import main
    _one_class_tree(tmp_path / "data")
    suite = tmp_path / "one.yaml"
    suite.write_text(f"name: one\ndataset: {{name: imagefolder, root: {tmp_path / 'data'}}}\n"
                     "plugins: [NoPen]\nseeds: [0]\nrecipe: {epochs: 1}\nevaluation: {evaluators: []}\n")
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "runs"), "--no-report", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [
        f"error: image folder {(tmp_path / 'data').resolve()}: a classifier needs at least 2 classes, "
        f"found 1 (train/cat/); add a folder per class"]
    assert not list((tmp_path / "runs").rglob("result.json"))
    # the same from archives, where classes are only known once decoded
    archives = tmp_path / "archives"
    archives.mkdir()
    for split in ("train", "test"):
        with tarfile.open(archives / f"{split}.tar", "w") as tar:
            tar.add(tmp_path / "data" / split, arcname=split)
    with pytest.raises(BenchError, match=r"at least 2 classes, found 1 \('cat'\)"):
        load_dataset(_cfg(archives))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets/cifar10-jpeg is not here")
def test_shared_cifar10_jpeg(monkeypatch):
    """The real JPEG archives: the first members decode to 32×32 RGB in class folders.

    The full load (60,000 decodes, ~30 s once) is checked only when the user's decode
    cache already holds it, to keep the test suite fast.
    """
    from bench.data.imagefolder import ArchiveSplit, decode_image, find_sources

    sources = find_sources(SHARED.resolve())
    assert isinstance(sources["test"], ArchiveSplit)
    for count, (cls, where, blob) in enumerate(sources["test"].items()):
        assert cls in {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
        assert decode_image(blob, where).shape == (3, 32, 32)
        if count == 20:
            break
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lpc-bench"
    if not list(user_cache.glob("imagefolder-cifar10-jpeg-*.npz")):
        pytest.skip("full decode not cached yet (python -m bench run --suite cifar10-small fills it)")
    monkeypatch.setenv(CACHE_ENV, str(user_cache))
    data = load_dataset(_cfg(SHARED, limit_train=200, limit_test=100))
    assert data.classes[:3] == ["airplane", "automobile", "bird"] and data.input_shape == (3, 32, 32)
    assert len(data.train_x) == 180 and len(data.val_x) == 20 and (data.test_y.bincount() == 10).all()
