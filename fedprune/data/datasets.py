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
``cifar10-jpeg``    ``CIFAR10-jpeg/cifar10-jpeg.zip`` (all of CIFAR-10 as JPEG;
                    decoded once, cached: :func:`decoded_cache_dir`)
``cifar10-first4000`` ``CIFAR10-first4000/`` (PNG sprites + trainLabels.csv)
``femnist``         ``FEMNIST-leaf/{train,test}/*.json[.gz]`` (LEAF output)
``mnist-writers``   MNIST + ``QMNIST-writers/qmnist-*-labels-idx2-int[.gz]``
``shakespeare``     ``tinyshakespeare/input.txt``: next character after 80, one
                    writer per speaker (:mod:`fedprune.data.text`)
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
import hashlib
import json
import logging
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedprune.config import resolve_data_dir
from fedprune.data import text, tokens


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
    writers_test : int64 array of the test examples' writers when the test set is
        each writer's own held-out data (shakespeare): a client is then tested on
        its writers' test examples; None otherwise
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
    writers_test: np.ndarray | None = None

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


def decoded_cache_dir() -> Path:
    """Where decoded data sets are cached: ``$FEDPRUNE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/fedprune/decoded`` (``~/.cache/fedprune/decoded``)."""
    env = os.environ.get("FEDPRUNE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedprune" / "decoded"


def _cached_arrays(name: str, source: Path, build: Callable[[], dict[str, np.ndarray]]
                   ) -> dict[str, np.ndarray]:
    """``build()``'s arrays, decoded once per version of ``source`` (its size and
    modification time name the cache file) and kept as ``.npy`` files under
    :func:`decoded_cache_dir`. A cache folder that cannot be written is
    reported and the arrays are decoded again next time."""
    st = source.stat()
    key = hashlib.sha256(f"{source.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = decoded_cache_dir() / f"{name}-{key}"
    done = folder / "done"
    if done.exists():
        return {p.stem: np.load(p) for p in sorted(folder.glob("*.npy"))}
    arrays = build()
    try:
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for k, v in arrays.items():
            np.save(tmp / f"{k}.npy", v)
        (tmp / "done").write_text(str(source))
        if folder.exists():  # an incomplete earlier attempt
            shutil.rmtree(folder)
        tmp.replace(folder)
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "could not cache the decoded %s under %s (%s); it is decoded again next time",
            name, decoded_cache_dir(), exc)
    return arrays


CIFAR_JPEG_ZIP = "CIFAR10-jpeg/cifar10-jpeg.zip"


@register_dataset("cifar10-jpeg")
def _load_cifar10_jpeg(data_dir: Path, download: bool) -> ImageData:
    """All of CIFAR-10 (50,000 / 10,000) re-encoded as JPEG, ``train|test/<class>/NNNN.jpg``
    in one zip; decoded once with PIL and cached (:func:`_cached_arrays`). JPEG
    re-encoding costs some fidelity: call it "CIFAR-10 (JPEG)" in reports."""
    path = data_dir / CIFAR_JPEG_ZIP
    if not path.exists():
        raise DataNotFoundError(
            f"CIFAR-10 (JPEG) not found: {path} is missing. Put the zip of "
            "train/<class>/NNNN.jpg and test/<class>/NNNN.jpg there (see ../shared/data/README.md), "
            "or use dataset 'cifar10' with download=true on a machine with internet."
        )
    arrays = _cached_arrays("cifar10-jpeg", path, lambda: read_image_zip(path, CIFAR_CLASSES))
    return ImageData(
        "cifar10-jpeg", torch.from_numpy(arrays["x_train"]), _labels(arrays["y_train"]),
        torch.from_numpy(arrays["x_test"]), _labels(arrays["y_test"]), 10, *CIFAR_STATS,
    )


def read_image_zip(path: Path, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Decode a zip of ``<split>/<class>/<name>.jpg|png`` (splits ``train`` and ``test``)
    into uint8 ``x_<split>`` (N, C, H, W) and int64 ``y_<split>``, in name order.
    Every image must have the same size; an unknown class or split is an error."""
    from PIL import Image  # pillow comes with torchvision

    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list] = {"train": [], "test": []}
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if name.endswith("/"):
                continue
            parts = name.split("/")
            if len(parts) != 3 or parts[0] not in out or parts[1] not in index:
                raise ValueError(f"{path}: unexpected member {name!r} (want "
                                 f"train|test/<one of {', '.join(classes)}>/<file>)")
            with z.open(name) as f:
                img = np.asarray(Image.open(f).convert("RGB"))
            out[parts[0]].append((img, index[parts[1]]))
    arrays = {}
    for split, items in out.items():
        if not items:
            raise ValueError(f"{path}: no {split} images")
        shapes = {im.shape for im, _ in items}
        if len(shapes) != 1:
            raise ValueError(f"{path}: {split} images of several sizes {sorted(shapes)}")
        arrays[f"x_{split}"] = np.ascontiguousarray(
            np.stack([im for im, _ in items]).transpose(0, 3, 1, 2))
        arrays[f"y_{split}"] = np.array([c for _, c in items], dtype=np.int64)
    return arrays


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


@register_dataset("shakespeare")
def _load_shakespeare(data_dir: Path, download: bool) -> ImageData:
    """Tiny Shakespeare by speaker: the next character after 80 (:mod:`fedprune.data.text`),
    speakers with at least 2,000 characters of speech. For another threshold or window,
    register a loader of your own that calls :func:`fedprune.data.text.read_shakespeare`."""
    path = data_dir / text.FOLDER / text.FILE
    if not path.exists():
        raise DataNotFoundError(
            f"Tiny Shakespeare not found: {path} is missing. Put karpathy/char-rnn's "
            "data/tinyshakespeare/input.txt there (see ../shared/data/README.md)."
        )
    return shakespeare_data("shakespeare", text.read_shakespeare(data_dir))


def shakespeare_data(name: str, a: dict[str, np.ndarray]) -> ImageData:
    """Wrap :func:`fedprune.data.text.shakespeare_arrays` as a data set (ids kept int16)."""
    vocab = len(a["vocab"]) + 1  # ids 1..V, 0 = padding
    return ImageData(
        name, torch.from_numpy(a["x_train"]), _labels(a["y_train"]),
        torch.from_numpy(a["x_test"]), _labels(a["y_test"]), vocab, (), (),
        writers_train=a["writers_train"], vocab_size=vocab, writers_test=a["writers_test"],
    )
