"""Any user's images: the ``imagefolder`` dataset.

``--data-root DIR`` holds either folders or archives of them:

    DIR/train/<class>/*.png|jpg|…      DIR/test/<class>/*.png|jpg|…
    DIR/train.tar.gz  DIR/test.tar.gz  (the same trees inside; also .tar / .tgz)

Archives are read as streams and never extracted to disk: each member is decoded in
memory (CIFAR-10 as 60,000 JPEGs is two such archives). Class names are the folder
names, sorted; train and test must have the same set of classes, at least two. Images
may be grey, RGB or RGBA (alpha is dropped) but must all have one size: the harness
does not resize. Grey is kept as one channel when every image is grey; grey images
among colour ones are used as RGB (the grey level in all three channels), and a
``warning:`` line on stderr says how many, when the images are decoded.

Decoding happens once: the uint8 arrays go to the decode cache (``bench.data.cache``)
keyed by every file's path, size and modification time (for archives: the archive's).
A file that does not decode, or has another size, is one error line naming it.
"""
from __future__ import annotations

import io as _io
import os
import re
import sys
import tarfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch

from bench.config.schema import DatasetConfig
from bench.data.cache import cached_arrays, file_entry, fingerprint
from bench.data.datasets import DATASETS
from bench.data.splits import DataSplits, splits_from_arrays
from bench.core.errors import BenchError
from bench.core.progress import progress

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
SPLITS = ("train", "test")
# bump when decoding changes, so old cache entries are not read as new ones
FORMAT_VERSION = "imagefolder-1"


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and Path(base).suffix.lower() in IMAGE_SUFFIXES


# ----- sources: where the encoded bytes of one split come from ------------------------
class FolderSplit:
    """``<root>/<split>/<class>/**/<image>``; class folders sorted, files sorted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)
        self.files: dict[str, list[Path]] = {}
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                self.files[entry.name] = [Path(dirpath) / f
                                          for dirpath, dirs, names in sorted(os.walk(entry))
                                          for f in sorted(names) if _is_image(f)]
        empty = [c for c, files in self.files.items() if not files]
        if empty:
            raise BenchError(f"{folder}: class folder(s) {', '.join(empty)} hold no images")
        if not self.files:
            raise BenchError(f"{folder}: no class folders (expected {folder}/<class>/<image files>)")

    def classes(self) -> list[str]:
        return list(self.files)

    def fingerprint_entries(self, base: Path) -> list[tuple[str, int, int]]:
        return [file_entry(p, base) for files in self.files.values() for p in files]

    def __len__(self) -> int:
        return sum(len(f) for f in self.files.values())

    def items(self) -> Iterator[tuple[str, str, bytes]]:
        for cls, files in self.files.items():
            for path in files:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise BenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
                yield cls, str(path), data


class ArchiveSplit:
    """A tar archive of ``[<split>/]<class>/**/<image>``, read as one stream."""

    def __init__(self, archive: Path, split: str) -> None:
        self.archive = archive
        self.split = split
        self.where = str(archive)

    def fingerprint_entries(self, base: Path) -> list[tuple[str, int, int]]:
        return [file_entry(self.archive, base)]

    def items(self) -> Iterator[tuple[str, str, bytes]]:
        try:
            with tarfile.open(self.archive, "r:*") as tar:
                for member in tar:
                    if not member.isfile() or not _is_image(member.name):
                        continue
                    parts = [p for p in PurePosixPath(member.name).parts if p not in (".", "/")]
                    if parts and parts[0] == self.split:
                        parts = parts[1:]
                    if len(parts) < 2:
                        continue  # an image outside any class folder
                    fh = tar.extractfile(member)
                    yield parts[0], f"{self.archive}:{member.name}", fh.read() if fh else b""
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BenchError(f"{self.archive}: corrupt or truncated archive ({exc})") from None


def _find_archive(root: Path, split: str) -> Path | None:
    for suffix in ARCHIVE_SUFFIXES:
        if (root / f"{split}{suffix}").is_file():
            return root / f"{split}{suffix}"
    return None


def looks_like_image_folder(root: Path) -> bool:
    """Whether ``root`` holds a train and a test split in this module's layout (folders or archives)."""
    return all((root / split).is_dir() or _find_archive(root, split) is not None for split in SPLITS)


def find_sources(root: Path) -> dict[str, FolderSplit | ArchiveSplit]:
    """The train and test sources under ``root``: folders first, else archives."""
    if not root.is_dir():
        raise BenchError(f"image folder {root} does not exist")
    sources: dict[str, FolderSplit | ArchiveSplit] = {}
    for split in SPLITS:
        if (root / split).is_dir():
            sources[split] = FolderSplit(root / split)
        elif (archive := _find_archive(root, split)) is not None:
            sources[split] = ArchiveSplit(archive, split)
    missing = [s for s in SPLITS if s not in sources]
    if missing:
        raise BenchError(f"image folder {root} has no {' or '.join(missing)} split: expected "
                         f"{root}/train/<class>/<images> and {root}/test/<class>/<images> "
                         f"(or train.tar.gz and test.tar.gz holding them)")
    return sources


# ----- decoding -----------------------------------------------------------------------
def _torchvision_decoder():
    """torchvision's decoder (≈3× faster than PIL on small JPEGs), or None where it is gone:
    torchvision 0.29 deprecates its image I/O in favour of TorchCodec."""
    try:
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_image as tv_decode
    except ImportError:
        return None
    return lambda tensor: tv_decode(tensor, mode=ImageReadMode.UNCHANGED)


def decode_image(data: bytes, where: str, tv_decode=None) -> np.ndarray:
    """(C, H, W) uint8 with C in {1, 3}; torchvision's decoder if given, PIL otherwise
    (and for formats torchvision does not read: bmp, tiff, …)."""
    if tv_decode is not None and data:
        try:
            x = tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            if x.dtype != torch.uint8:  # 16-bit PNG
                x = (x.float() / 257).round().clamp(0, 255).to(torch.uint8)
            array = x.numpy()
            if array.shape[0] == 2:    # grey + alpha
                array = array[:1]
            elif array.shape[0] == 4:  # RGB + alpha
                array = array[:3]
            return array
        except (RuntimeError, ValueError):
            pass  # not a format torchvision reads, or damaged: PIL decides and words the error
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(_io.BytesIO(data)) as image:
            image.load()
            image = image.convert("L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise BenchError(f"{where}: cannot decode image ({exc or type(exc).__name__})") from None
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_split(source: FolderSplit | ArchiveSplit, *, quiet: bool = False
                 ) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Decode every image of one split: (sorted class names, images, class name per image)."""
    images, labels, first = [], [], None
    total = len(source) if isinstance(source, FolderSplit) else None
    tv_decode = _torchvision_decoder()
    bar = progress(source.items(), quiet=quiet, total=total, unit="img",
                   desc=f"decoding {Path(source.where).name}", leave=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*image decoding.*TorchVision")
        items = [(cls, where, decode_image(data, where, tv_decode)) for cls, where, data in bar]
    for cls, where, array in items:
        if first is None:
            first = (where, array.shape[1:])
        elif array.shape[1:] != first[1]:
            raise BenchError(f"{where}: image is {array.shape[2]}×{array.shape[1]} but {first[0]} is "
                             f"{first[1][1]}×{first[1][0]}; an image folder needs one image size "
                             f"(resize the images first)")
        images.append(array)
        labels.append(cls)
    if not images:
        raise BenchError(f"{source.where}: no images found (expected <class>/<image files>)")
    return sorted(set(labels)), images, labels


def _stack(images: list[np.ndarray], channels: int) -> np.ndarray:
    out = np.empty((len(images), channels, *images[0].shape[1:]), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = image  # a grey image broadcasts to every channel when the set is RGB
    return out


def _check_classes(train: list[str], test: list[str], root: Path) -> None:
    if train != test:
        only_train = sorted(set(train) - set(test))
        only_test = sorted(set(test) - set(train))
        parts = ([f"only in train: {', '.join(only_train)}"] if only_train else []) + \
                ([f"only in test: {', '.join(only_test)}"] if only_test else [])
        raise BenchError(f"image folder {root}: train and test classes differ ({'; '.join(parts)})")


def decode_image_folder(root: Path, *, quiet: bool = False) -> dict[str, np.ndarray]:
    """All images under ``root`` as arrays: train_x/train_y/test_x/test_y/classes."""
    sources = find_sources(root)
    if all(isinstance(s, FolderSplit) for s in sources.values()):  # fail before decoding
        _check_classes(sources["train"].classes(), sources["test"].classes(), root)
    train_classes, train_images, train_names = decode_split(sources["train"], quiet=quiet)
    test_classes, test_images, test_names = decode_split(sources["test"], quiet=quiet)
    _check_classes(train_classes, test_classes, root)
    if train_images[0].shape[1:] != test_images[0].shape[1:]:
        raise BenchError(f"image folder {root}: train images are {train_images[0].shape[1:]} "
                         f"but test images are {test_images[0].shape[1:]}")
    channels = max(a.shape[0] for a in train_images + test_images)
    grey = sum(a.shape[0] == 1 for a in train_images + test_images)
    if channels == 3 and grey:
        total = len(train_images) + len(test_images)
        print(f"warning: image folder {root}: {grey} of {total} images are greyscale among colour ones; "
              f"they are used as RGB (grey level copied to all 3 channels)", file=sys.stderr, flush=True)
    index = {c: i for i, c in enumerate(train_classes)}
    return {"train_x": _stack(train_images, channels),
            "train_y": np.array([index[c] for c in train_names], dtype=np.int64),
            "test_x": _stack(test_images, channels),
            "test_y": np.array([index[c] for c in test_names], dtype=np.int64),
            "classes": np.array(train_classes)}


@DATASETS.register("imagefolder")
def load_image_folder(cfg: DatasetConfig) -> DataSplits:
    """Images from ``--data-root`` (``train/<class>/…``, ``test/<class>/…``, or their .tar.gz)."""
    if cfg.root is None:
        raise BenchError("the imagefolder dataset needs --data-root DIR, a folder with train/<class>/<images> "
                         "and test/<class>/<images> (or train.tar.gz and test.tar.gz)")
    root = Path(cfg.root).expanduser().resolve()
    sources = find_sources(root)
    if isinstance(sources["train"], FolderSplit) and len(sources["train"].classes()) < 2:
        found = sources["train"].classes()
        raise BenchError(f"image folder {root}: a classifier needs at least 2 classes, found {len(found)} "
                         f"({', '.join(f'train/{c}/' for c in found)}); add a folder per class")
    entries = [e for s in sources.values() for e in s.fingerprint_entries(root)]
    key = fingerprint(f"{FORMAT_VERSION}\0{root}", entries)
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name) or "root"
    arrays = cached_arrays(f"imagefolder-{label}", key, lambda: decode_image_folder(root))
    classes = [str(c) for c in arrays["classes"]]
    return splits_from_arrays(f"imagefolder:{root.name}", classes, arrays["train_x"], arrays["train_y"],
                              arrays["test_x"], arrays["test_y"], cfg)
