"""Data set loaders: a registry name -> loader, each returning an :class:`ImageData`.

Every loader reads files in the layout of the official distribution under
one data directory (torchvision's layout where torchvision has the set):

==================  ==========================================================
name                files under ``<data-dir>``
==================  ==========================================================
``mnist-mini``      none: ships inside the package (see ``embedded.py``)
``mnist``           ``MNIST/raw/*-ubyte[.gz]`` (torchvision.datasets.MNIST)
``fashion-mnist``   ``FashionMNIST/raw/*-ubyte[.gz]`` (torchvision)
``cifar10``         ``cifar-10-batches-py/`` (torchvision.datasets.CIFAR10)
``cifar10-first4000`` ``CIFAR10-first4000/`` (PNG sprites + trainLabels.csv)
``femnist``         ``FEMNIST-leaf/{train,test}/*.json[.gz]`` (LEAF output)
``mnist-writers``   MNIST + ``QMNIST-writers/qmnist-*-labels-idx2-int[.gz]``
``tokens-synthetic`` none: token sequences generated from a seed (``tokens.py``)
``tokens-npz``      ``tokens-npz/tokens.npz``: your own pre-tokenised text
                    (layout in :mod:`fedprune.data.tokens`)
==================  ==========================================================

With ``download=True`` the torchvision sets are fetched by torchvision's own
download code into ``<data-dir>``; everything else must be put there by hand,
and a missing file raises :class:`DataNotFoundError` naming the folder and
how to get it.

Images are held as uint8 tensors ``(N, C, H, W)`` and labels as int64 ``(N,)``;
normalisation happens per batch (:mod:`fedprune.data.loader`), which keeps a
whole client partition in a few MB and avoids per-sample Python work.

Token data sets use the same container: ``x`` is an int64 tensor ``(N, L)``
of token ids (0 = padding), ``vocab_size`` is set, ``mean = std = ()``, and
the loader passes the ids through without normalisation.
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedprune.config import resolve_data_dir
from fedprune.data import tokens


class DataNotFoundError(FileNotFoundError):
    """A data set's files are missing; the message names the folder and the fix."""


@dataclass(frozen=True, eq=False)
class ImageData:
    """An image (or token-sequence) classification data set held in memory.

    Attributes
    ----------
    x_train, x_test : uint8 tensors (N, C, H, W), or int64 token ids (N, L)
    y_train, y_test : int64 tensors (N,)
    num_classes : number of classes
    mean, std : per-channel normalisation constants (of pixel / 255); ``()`` for tokens
    writers_train : int64 array (N,) of natural client ids (writer), or None
    vocab_size : number of token ids (ids are in ``[0, vocab_size)``, 0 = padding)
        for a token data set; None for images
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    writers_train: np.ndarray | None = None
    vocab_size: int | None = None

    @property
    def is_tokens(self) -> bool:
        """Whether the examples are token id sequences rather than images."""
        return self.vocab_size is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image, or (L,) of one token sequence."""
        return tuple(int(d) for d in self.x_train.shape[1:])


Loader = Callable[[Path, bool], ImageData]
_REGISTRY: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader ``(data_dir, download) -> ImageData`` to the registry."""

    def deco(fn: Loader) -> Loader:
        _REGISTRY[name] = fn
        return fn

    return deco


def dataset_names() -> list[str]:
    """All registered data set names."""
    return sorted(_REGISTRY)


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str = "", download: bool = False) -> ImageData:
    """Load a registered data set (cached per process: clients reuse it every round).

    Parameters
    ----------
    name : a name from :func:`dataset_names`
    data_dir : data directory; empty = $FEDPRUNE_DATA_DIR, else ~/.cache/fedprune/data
    download : let torchvision download MNIST / Fashion-MNIST / CIFAR-10 if missing
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")
    return _REGISTRY[name](resolve_data_dir(data_dir), download)


# --------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the MNIST / QMNIST format.

    Header: two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension; data follow in big-endian order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    dtype = np.dtype(dtypes[raw[2]])
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.exists():
            return cand
    return None


_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_mnist_like(data_dir: Path, folder: str, download: bool) -> dict[str, np.ndarray]:
    """Read the four IDX files of MNIST or Fashion-MNIST from ``<data_dir>/<folder>/raw``."""
    raw = data_dir / folder / "raw"
    paths = {k: _find(raw, stem) for k, stem in _MNIST_FILES.items()}
    if any(p is None for p in paths.values()) and download:
        import torchvision  # deferred: only the download path needs it

        cls = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST}
        cls[folder](str(data_dir), train=True, download=True)
        paths = {k: _find(raw, stem) for k, stem in _MNIST_FILES.items()}
    missing = [stem for k, stem in _MNIST_FILES.items() if paths[k] is None]
    if missing:
        raise DataNotFoundError(
            f"{folder} not found: {raw} lacks {', '.join(missing)} (.gz or extracted). "
            f"Copy the official files there, point run-config 'data-dir' or $FEDPRUNE_DATA_DIR "
            f"at a folder holding {folder}/raw/, or set run-config 'download=true' to let "
            f"torchvision download them."
        )
    return {k: read_idx(p) for k, p in paths.items()}  # type: ignore[arg-type]


def _to_nchw(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> uint8 tensor (N, C, H, W)."""
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8))


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64).copy())


MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
FEMNIST_STATS = ((0.9637,), (0.1597,))  # LEAF FEMNIST: white background


@register_dataset("mnist")
def _load_mnist(data_dir: Path, download: bool) -> ImageData:
    a = read_mnist_like(data_dir, "MNIST", download)
    return ImageData(
        "mnist", _to_nchw(a["x_train"]), _labels(a["y_train"]), _to_nchw(a["x_test"]),
        _labels(a["y_test"]), 10, *MNIST_STATS,
    )


@register_dataset("fashion-mnist")
def _load_fashion(data_dir: Path, download: bool) -> ImageData:
    a = read_mnist_like(data_dir, "FashionMNIST", download)
    return ImageData(
        "fashion-mnist", _to_nchw(a["x_train"]), _labels(a["y_train"]), _to_nchw(a["x_test"]),
        _labels(a["y_test"]), 10, *FASHION_STATS,
    )


@register_dataset("mnist-writers")
def _load_mnist_writers(data_dir: Path, download: bool) -> ImageData:
    """MNIST with each training image's NIST writer id from QMNIST's extended labels.

    QMNIST's ``qmnist-train-labels-idx2-int`` has one row per MNIST training
    image, in MNIST order; column 0 is the class and column 2 the writer id.
    """
    a = read_mnist_like(data_dir, "MNIST", download)
    folder = data_dir / "QMNIST-writers"
    path = _find(folder, "qmnist-train-labels-idx2-int")
    if path is None:
        raise DataNotFoundError(
            f"QMNIST writer labels not found in {folder}: put qmnist-train-labels-idx2-int.gz "
            "there (https://github.com/facebookresearch/qmnist, file "
            "qmnist-train-labels-idx2-int.gz)."
        )
    ext = read_idx(path)
    if ext.shape[0] != a["y_train"].shape[0] or not np.array_equal(ext[:, 0], a["y_train"]):
        raise ValueError(f"{path} does not match the MNIST training labels row by row")
    return ImageData(
        "mnist-writers", _to_nchw(a["x_train"]), _labels(a["y_train"]), _to_nchw(a["x_test"]),
        _labels(a["y_test"]), 10, *MNIST_STATS, writers_train=ext[:, 2].astype(np.int64),
    )


@register_dataset("cifar10")
def _load_cifar10(data_dir: Path, download: bool) -> ImageData:
    folder = data_dir / "cifar-10-batches-py"
    if not folder.exists() and download:
        import torchvision

        torchvision.datasets.CIFAR10(str(data_dir), train=True, download=True)
    if not folder.exists():
        raise DataNotFoundError(
            f"CIFAR-10 not found: {folder} is missing. Extract the official "
            "cifar-10-python.tar.gz into the data dir, or set run-config 'download=true'."
        )

    def batches(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            with open(folder / n, "rb") as f:
                d = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d["labels"]))
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = batches([f"data_batch_{i}" for i in range(1, 6)])
    xte, yte = batches(["test_batch"])
    return ImageData(
        "cifar10", torch.from_numpy(xtr), _labels(ytr), torch.from_numpy(xte), _labels(yte), 10,
        *CIFAR_STATS,
    )


CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


@register_dataset("cifar10-first4000")
def _load_cifar_slice(data_dir: Path, download: bool) -> ImageData:
    """The first 4,000 CIFAR-10 training images (4 PNG sprites, 1,000 images each).

    There is no test set in this slice: the last 800 images (20%) are held out
    as the centralized test set, the first 3,200 are the training pool.
    """
    from PIL import Image  # pillow comes with torchvision

    folder = data_dir / "CIFAR10-first4000"
    sprites = [folder / f"cifar10_batch_{i}.png" for i in range(4)]
    labels_csv = folder / "trainLabels.csv"
    if not all(p.exists() for p in sprites) or not labels_csv.exists():
        raise DataNotFoundError(
            f"CIFAR-10 slice not found in {folder}: it needs cifar10_batch_0..3.png "
            "and trainLabels.csv (see ../shared/data/README.md)."
        )
    # Each sprite row is one image: 1024 pixels (32x32, row-major) x RGB.
    x = np.concatenate([np.asarray(Image.open(p).convert("RGB")) for p in sprites])
    x = x.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2)
    with open(labels_csv) as f:
        rows = list(csv.reader(f))[1:]
    index = {c: i for i, c in enumerate(CIFAR_CLASSES)}
    y = np.array([index[r[1]] for r in rows[: len(x)]], dtype=np.int64)
    cut = int(len(x) * 0.8)
    return ImageData(
        "cifar10-first4000", torch.from_numpy(np.ascontiguousarray(x[:cut])), _labels(y[:cut]),
        torch.from_numpy(np.ascontiguousarray(x[cut:])), _labels(y[cut:]), 10, *CIFAR_STATS,
    )


@register_dataset("femnist")
def _load_femnist(data_dir: Path, download: bool) -> ImageData:
    """LEAF FEMNIST: 28x28 greyscale, 62 classes, one natural client per writer.

    Reads every ``*.json`` / ``*.json.gz`` under ``FEMNIST-leaf/train`` and
    ``/test``; pixels are LEAF's floats k/255 and are stored back as uint8.
    The training images carry their writer's index as the natural id; the
    test files of all writers form the centralized test set.
    """
    folder = data_dir / "FEMNIST-leaf"

    def read(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        files = sorted((folder / split).glob("*.json*"))
        if not files:
            raise DataNotFoundError(
                f"FEMNIST not found: no LEAF *.json or *.json.gz files in {folder / split}. "
                "Generate them with LEAF (https://github.com/TalwalkarLab/leaf, "
                "data/femnist/preprocess.sh) and copy data/train and data/test there."
            )
        xs, ys, ws = [], [], []
        for p in files:
            opener = gzip.open if p.suffix == ".gz" else open
            with opener(p, "rt") as f:
                blob = json.load(f)
            for user in blob["users"]:
                d = blob["user_data"][user]
                xs.append(np.rint(np.asarray(d["x"], dtype=np.float32) * 255).astype(np.uint8))
                ys.append(np.asarray(d["y"], dtype=np.int64))
                ws.append(user)
        writer_ids = {w: i for i, w in enumerate(sorted(set(ws)))}
        w_arr = np.concatenate(
            [np.full(len(y), writer_ids[w], dtype=np.int64) for y, w in zip(ys, ws, strict=True)]
        )
        return np.concatenate(xs).reshape(-1, 28, 28), np.concatenate(ys), w_arr

    xtr, ytr, wtr = read("train")
    xte, yte, _ = read("test")
    return ImageData(
        "femnist", _to_nchw(xtr), _labels(ytr), _to_nchw(xte), _labels(yte), 62, *FEMNIST_STATS,
        writers_train=wtr,
    )


# --------------------------------------------------------------------------- tokens


def token_data(
    name: str, arrays: dict[str, np.ndarray], vocab_size: int, num_classes: int
) -> ImageData:
    """Wrap token arrays (``x_train``, ``y_train``, ``x_test``, ``y_test``) as a data set.

    The ids become int64 tensors ``(N, L)``, with no normalisation constants.
    """
    return ImageData(
        name, torch.from_numpy(np.ascontiguousarray(arrays["x_train"], dtype=np.int64)),
        _labels(arrays["y_train"]), torch.from_numpy(np.ascontiguousarray(arrays["x_test"], dtype=np.int64)),
        _labels(arrays["y_test"]), int(num_classes), (), (), vocab_size=int(vocab_size),
    )


@register_dataset("tokens-synthetic")
def _load_tokens_synthetic(data_dir: Path, download: bool) -> ImageData:
    """The generated keyword-order task of :func:`fedprune.data.tokens.make_token_task` (seed 0)."""
    a = tokens.make_token_task(seed=0)
    return token_data("tokens-synthetic", a, int(a["vocab_size"]), int(a["num_classes"]))


@register_dataset("tokens-npz")
def _load_tokens_npz(data_dir: Path, download: bool) -> ImageData:
    """Pre-tokenised text from ``<data_dir>/tokens-npz/tokens.npz`` (see :mod:`fedprune.data.tokens`)."""
    path = tokens.npz_path(data_dir)
    if not path.exists():
        raise DataNotFoundError(
            f"token data not found: {path} is missing. Save your pre-tokenised text there with "
            "np.savez(path, x_train=(N, L) int ids, y_train=(N,) labels, x_test=..., y_test=..., "
            "vocab_size=V [optional]), id 0 = padding; see fedprune/data/tokens.py. "
            "Point run-config 'data-dir' or $FEDPRUNE_DATA_DIR at the folder holding tokens-npz/."
        )
    arrays, vocab, classes = tokens.read_token_npz(path)
    return token_data("tokens-npz", arrays, vocab, classes)
