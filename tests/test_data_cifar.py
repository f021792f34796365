"""CIFAR-10/100 from small files written here in torchvision's own pickle layout.

The files are written by hand (not with bench's writer) so the test pins the format:
a dict per batch with ``data`` (N, 3072) uint8 in channel-major order and ``labels``
(CIFAR-10) or ``fine_labels`` (CIFAR-100), a meta dict with the class names.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config.schema import DatasetConfig
from bench.data import load_dataset
from bench.data.cifar import write_cifar_pickles
from bench.data.splits import stratified_subset
from bench.core.errors import BenchError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _labels(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _images(per_batch, i), _labels(per_batch, 10, 100 + i)
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y.tolist(),
                                           "data": x.reshape(per_batch, -1), "filenames": ["a.png"] * per_batch})
        xs.append(x)
        ys.append(y)
    tx, ty = _images(n_test, 9), _labels(n_test, 10, 99)
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": ty.tolist(),
                                  "data": tx.reshape(n_test, -1), "filenames": ["b.png"] * n_test})
    _dump(folder / "batches.meta", {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch,
                                    "num_vis": 3072})
    return {"train_x": np.concatenate(xs), "train_y": np.concatenate(ys), "test_x": tx, "test_y": ty}


def write_cifar100(root: Path, n_train: int = 400, n_test: int = 200) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    x, y = _images(n_train, 1), _labels(n_train, 100, 2)
    tx, ty = _images(n_test, 3), _labels(n_test, 100, 4)
    for name, (a, b) in {"train": (x, y), "test": (tx, ty)}.items():
        _dump(folder / name, {"batch_label": name, "fine_labels": b.tolist(), "coarse_labels": (b // 5).tolist(),
                              "data": a.reshape(len(a), -1), "filenames": ["c.png"] * len(a)})
    _dump(folder / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                            "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    return {"train_x": x, "train_y": y, "test_x": tx, "test_y": ty}


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in x.reshape(len(x), -1).numpy()}


def test_cifar10_loads_every_image_once(tmp_path):
    truth = write_cifar10(tmp_path)
    data = load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert data.classes == CIFAR10_CLASSES
    assert data.train_x.dtype == torch.uint8 and data.input_shape == (3, 32, 32) and data.pixel_scale == 255
    assert len(data.train_x) + len(data.val_x) == 100 and len(data.val_x) == 20
    assert (data.val_y.bincount(minlength=10) == 2).all()  # stratified hold-out
    # train ∪ val is the training set, with every image's label intact (NCHW order kept)
    lookup = {bytes(r): int(label) for r, label in zip(truth["train_x"].reshape(100, -1), truth["train_y"])}
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y)):
        assert all(lookup[bytes(r)] == int(label) for r, label in zip(x.reshape(len(x), -1).numpy(), y))
    assert _rows(data.train_x).isdisjoint(_rows(data.val_x))
    assert torch.equal(data.test_x, torch.from_numpy(truth["test_x"]))
    assert torch.equal(data.test_y, torch.from_numpy(truth["test_y"]))


def test_cifar100_loads_fine_labels(tmp_path):
    truth = write_cifar100(tmp_path)
    data = load_dataset(DatasetConfig(name="cifar100", root=str(tmp_path / "cifar-100-python"), val_fraction=0.25))
    assert data.num_classes == 100 and data.classes[7] == "class07"
    assert len(data.train_x) == 300 and len(data.val_x) == 100 and len(data.test_x) == 200
    assert torch.equal(data.test_y, torch.from_numpy(truth["test_y"]))


def test_limits_keep_stratified_subsets(tmp_path):
    write_cifar10(tmp_path)
    data = load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path), val_fraction=0.25,
                                      limit_train=40, limit_test=20))
    assert len(data.train_x) == 30 and len(data.val_x) == 10
    assert (data.val_y.bincount(minlength=10) == 1).all()
    assert (data.test_y.bincount(minlength=10) == 2).all()
    with pytest.raises(BenchError, match="too small"):
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path), limit_train=12))


def test_stratified_subset_is_exact_and_nested():
    labels = np.repeat(np.arange(7), [3, 50, 50, 10, 20, 40, 27])
    small, large = stratified_subset(labels, 37, 0), stratified_subset(labels, 90, 0)
    assert len(small) == 37 and len(large) == 90 and set(small) <= set(large)
    assert abs(np.bincount(labels[large], minlength=7) - np.bincount(labels, minlength=7) * 90 / 200).max() < 1


def test_writer_round_trip(tmp_path):
    x, y = _images(60, 0), _labels(60, 10, 0)
    write_cifar_pickles(tmp_path, "cifar10", (x, y), (x[:20], y[:20]), CIFAR10_CLASSES)
    data = load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path), val_fraction=0.5))
    assert _rows(data.train_x) | _rows(data.val_x) == {bytes(r) for r in x.reshape(60, -1)}


# ----- bad input: one BenchError line ---------------------------------------------------
def test_missing_root_says_where_to_put_files(tmp_path):
    with pytest.raises(BenchError, match=r"cifar-10-batches-py.*data_batch_1.*download"):
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path / "nowhere")))
    with pytest.raises(BenchError, match="--data-root"):
        load_dataset(DatasetConfig(name="cifar100"))


def test_incomplete_root_names_missing_files(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(BenchError, match="incomplete: missing data_batch_3, batches.meta"):
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path)))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "no_labels", "bad_meta"])
def test_corrupt_pickle_names_the_file(tmp_path, damage):
    write_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    target = folder / ("meta" if damage == "bad_meta" else "train")
    if damage == "truncate":
        blob = target.read_bytes()
        target.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        target.write_bytes(b"this is not a pickle")
    elif damage == "wrong_shape":
        _dump(target, {"data": np.zeros((4, 100), np.uint8), "fine_labels": [0, 1, 2, 3]})
    elif damage == "no_labels":
        _dump(target, {"data": np.zeros((4, 3072), np.uint8)})
    else:
        _dump(target, {"coarse_label_names": ["x"]})
    with pytest.raises(BenchError) as info:
        load_dataset(DatasetConfig(name="cifar100", root=str(tmp_path)))
    message = str(info.value)
    assert str(target) in message and "\n" not in message
