"""CIFAR-10 and CIFAR-100 from a data root, through torchvision's own readers.

``--data-root DIR`` must hold the extracted python versions of the data sets, exactly as
``torchvision.datasets.CIFAR10/CIFAR100(root=DIR, download=True)`` leaves them:

    DIR/cifar-10-batches-py/{data_batch_1 … data_batch_5, test_batch, batches.meta}
    DIR/cifar-100-python/{train, test, meta}

(``DIR`` may also be the ``cifar-…`` folder itself.) With ``dataset.download: true``
torchvision fetches and checks the official archive; without it nothing is fetched and a
missing or incomplete folder is one error line saying what to put where.

torchvision verifies the MD5 of every batch file before reading it. We check presence
instead and let the unpickling find damage, so that a re-packed copy, a subset written
in the same format (the tests do this) or a mirror with different bytes loads too; a
truncated or corrupt file still ends in one error line naming it.

The validation split is a stratified ``val_fraction`` of the training set (seeded by
``split_seed``); the test set is the official one, never used for model selection.
"""
from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import numpy as np

from bench.config.schema import DatasetConfig
from bench.data.datasets import DATASETS
from bench.data.splits import DataSplits, splits_from_arrays
from bench.core.errors import BenchError

# exceptions unpickling or reshaping a damaged batch file can raise
_DAMAGE = (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
           AttributeError, ImportError, MemoryError, UnicodeDecodeError)
_HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


# ----- torchvision readers that check presence, not MD5 ---------------------------------
@functools.cache
def _reader(name: str) -> tuple[type, str]:
    """(reader class, title); torchvision is imported here, not at start-up (seconds)."""
    from torchvision import datasets as tv_datasets
    base, title = {"cifar10": (tv_datasets.CIFAR10, "CIFAR-10"),
                   "cifar100": (tv_datasets.CIFAR100, "CIFAR-100")}[name]

    class PresenceChecked(base):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / fname).is_file() for fname, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            path = Path(self.root) / self.base_folder / self.meta["filename"]
            with open(path, "rb") as fh:
                meta = pickle.load(fh, encoding="latin1")
            self.classes = list(meta[self.meta["key"]])
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    PresenceChecked.__name__ = f"PresenceChecked{base.__name__}"
    return PresenceChecked, title


def expected_files(name: str) -> tuple[str, list[str]]:
    """(folder name, file names) a data root must hold for ``name``."""
    reader, _ = _reader(name)
    files = [f for f, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]
    return reader.base_folder, files


def _resolve_root(name: str, cfg: DatasetConfig) -> Path:
    reader, title = _reader(name)
    folder, files = expected_files(name)
    if cfg.root is None:
        if cfg.download:
            from bench.data.cache import cache_dir
            return cache_dir() / "torchvision"
        raise BenchError(f"{title} needs --data-root DIR, a folder holding {folder}/ "
                         f"(extracted from {reader.filename}, {_HOMEPAGE})")
    root = Path(cfg.root).expanduser()
    if root.name == folder and not (root / folder).is_dir():
        root = root.parent  # the user pointed at the cifar-… folder itself
    if cfg.download:
        return root
    where = root / folder
    if not where.is_dir():
        hint = "" if root.is_dir() else " (that folder does not exist)"
        from bench.data.imagefolder import looks_like_image_folder
        folder_hint = (f"{root} looks like an image folder (train/ and test/ or their archives): add --set "
                       f"dataset.name=imagefolder to train this suite on it" if looks_like_image_folder(root) else
                       f"for an image folder (train/<class>/<images>, test/<class>/<images>, or train.tar.gz and "
                       f"test.tar.gz) add --set dataset.name=imagefolder")
        raise BenchError(f"{title} not found: expected {where}/ with {', '.join(files)}{hint}; extract "
                         f"{reader.filename} ({_HOMEPAGE}) into {root}, or add --set dataset.download=true "
                         f"on a machine with network; {folder_hint}")
    missing = [f for f in files if not (where / f).is_file()]
    if missing:
        raise BenchError(f"{title} folder {where} is incomplete: missing {', '.join(missing)}")
    return root


def _find_damaged(name: str, folder: Path) -> str:
    """Name the first batch file that does not unpickle into a CIFAR batch or meta dict."""
    reader, _ = _reader(name)
    meta_file, meta_key = reader.meta["filename"], reader.meta["key"]
    _, files = expected_files(name)
    for fname in files:
        try:
            with open(folder / fname, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            if not isinstance(entry, dict):
                return f"{folder / fname} is not a CIFAR batch (a {type(entry).__name__}, not a dict)"
            if fname == meta_file:
                if meta_key not in entry:
                    return f"{folder / fname} has no {meta_key!r} (the class names)"
            elif "data" not in entry:
                return f"{folder / fname} has no 'data'"
            else:
                data = np.asarray(entry["data"])
                labels = entry.get("labels", entry.get("fine_labels"))
                if labels is None:
                    return f"{folder / fname} has no 'labels' or 'fine_labels'"
                if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                    return (f"{folder / fname}: 'data' must be uint8 of shape (N, 3072), "
                            f"got {data.dtype} {data.shape}")
                if len(labels) != data.shape[0]:
                    return f"{folder / fname} has {data.shape[0]} images but {len(labels)} labels"
        except _DAMAGE + (OSError,) as exc:
            return f"{folder / fname} is corrupt or truncated ({type(exc).__name__}: {exc})"
    return ""


def load_cifar_arrays(name: str, cfg: DatasetConfig) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                 np.ndarray, np.ndarray]:
    """(classes, train_x, train_y, test_x, test_y); images (N, 3, 32, 32) uint8."""
    reader, title = _reader(name)
    root = _resolve_root(name, cfg)
    folder, _ = expected_files(name)
    parts = {}
    for train in (True, False):
        try:
            ds = reader(str(root), train=train, download=cfg.download)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
            raise BenchError(f"{title}: {exc} (root {root})") from None
        except _DAMAGE as exc:
            problem = _find_damaged(name, root / folder) or f"{root / folder}: unreadable ({exc})"
            raise BenchError(f"{title}: {problem}") from None
        except OSError as exc:  # the download failed, or a file vanished mid-read
            raise BenchError(f"{title}: cannot read or download into {root} ({exc})") from None
        # a batch whose labels and images disagree, or whose pixels are not uint8, unpickles
        # fine and only shows here
        if len(ds.data) != len(ds.targets) or ds.data.dtype != np.uint8:
            problem = _find_damaged(name, root / folder) or (
                f"{root / folder}: {len(ds.data)} {ds.data.dtype} images but {len(ds.targets)} labels")
            raise BenchError(f"{title}: {problem}")
        x = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # NHWC -> NCHW
        y = np.asarray(ds.targets, dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() >= len(ds.classes)):
            raise BenchError(f"{title}: labels outside 0..{len(ds.classes) - 1} in {root / folder}")
        parts[train] = (ds.classes, x, y)
    classes, train_x, train_y = parts[True]
    _, test_x, test_y = parts[False]
    return list(classes), train_x, train_y, test_x, test_y


def _load(name: str, cfg: DatasetConfig) -> DataSplits:
    classes, train_x, train_y, test_x, test_y = load_cifar_arrays(name, cfg)
    return splits_from_arrays(name, classes, train_x, train_y, test_x, test_y, cfg)


@DATASETS.register("cifar10")
def load_cifar10(cfg: DatasetConfig) -> DataSplits:
    """CIFAR-10 (50,000 train / 10,000 test, 32×32 RGB, 10 classes) from ``--data-root``."""
    return _load("cifar10", cfg)


@DATASETS.register("cifar100")
def load_cifar100(cfg: DatasetConfig) -> DataSplits:
    """CIFAR-100 (50,000 train / 10,000 test, 32×32 RGB, 100 fine classes) from ``--data-root``."""
    return _load("cifar100", cfg)


def write_cifar_pickles(root: str | os.PathLike, name: str, train: tuple[np.ndarray, np.ndarray],
                        test: tuple[np.ndarray, np.ndarray], classes: list[str]) -> Path:
    """Write (N, 3, 32, 32) uint8 arrays in the official pickle layout; returns the folder.

    For smoke tests and small private subsets: the result loads with ``cifar10``/``cifar100``
    (and with torchvision's own readers, except for their MD5 check).
    """
    reader, _ = _reader(name)
    folder = Path(root) / reader.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    train_files = [f for f, _ in reader.train_list]

    def dump(fname: str, obj: dict) -> None:
        with open(folder / fname, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)

    def batch(x: np.ndarray, y: np.ndarray, label: str) -> dict:
        entry = {"batch_label": label, "data": np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.uint8),
                 label_key: [int(v) for v in y], "filenames": [f"{i:06d}.png" for i in range(len(x))]}
        if name == "cifar100":
            entry["coarse_labels"] = [0] * len(x)
        return entry

    chunks = np.array_split(np.arange(len(train[1])), len(train_files))
    for fname, idx in zip(train_files, chunks):
        dump(fname, batch(train[0][idx], train[1][idx], f"training batch {fname}"))
    dump(reader.test_list[0][0], batch(test[0], test[1], "testing batch 1 of 1"))
    dump(reader.meta["filename"], {reader.meta["key"]: list(classes), "num_vis": 3072})
    return folder
