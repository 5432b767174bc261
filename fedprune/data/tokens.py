"""Token-sequence classification data: a generated task and a reader for your own text.

Token data sets are held like images (:class:`fedprune.data.ImageData`), with
``x_train`` / ``x_test`` int64 tensors ``(N, L)`` of token ids instead of
uint8 images, ``vocab_size`` set, and no normalisation (``mean = std = ()``);
:class:`fedprune.data.loader.TensorLoader` passes integer token ids through
unchanged. Id ``0`` is padding (:data:`PAD_ID`): models ignore it in
attention and pooling. Partitioning uses the labels only, so every
partitioner works unchanged.

Two registered data sets (see :mod:`fedprune.data.datasets`):

``tokens-synthetic``
    generated in code from a seed (:func:`make_token_task`), no files: 4,000
    training and 1,000 test sequences of up to 32 ids over a vocabulary of
    200, four classes that depend on which tokens occur *and* on their order.

``tokens-npz``
    your own text, tokenised beforehand: ``<data-dir>/tokens-npz/tokens.npz``
    (:data:`NPZ_FOLDER`, :data:`NPZ_FILE`).

Plugging in your own text
-------------------------
Tokenise it with any tokenizer (offline), map every token to an id in
``1 .. vocab_size - 1`` (``0`` is reserved for padding), pad each sequence
with ``0`` on the right, or truncate it, to one length ``L``, and save::

    np.savez("<data-dir>/tokens-npz/tokens.npz",
             x_train=x_train,    # integer (N_train, L), ids in [0, vocab_size)
             y_train=y_train,    # integer (N_train,), labels in [0, num_classes)
             x_test=x_test,      # integer (N_test, L)
             y_test=y_test,      # integer (N_test,)
             vocab_size=30522,   # optional: default max id + 1
             num_classes=2)      # optional: default max label + 1

then run with ``dataset = "tokens-npz"`` and a token model (``bert-tiny``).
For several files, register a loader of your own with
:func:`fedprune.data.register_dataset` that calls :func:`read_token_npz`
(or :func:`check_token_arrays`) on your path and wraps the result as the
``tokens-npz`` loader does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PAD_ID = 0
NPZ_FOLDER = "tokens-npz"
NPZ_FILE = "tokens.npz"

# the generated task: two keyword pairs, ids 1-4; everything from NOISE_START on is noise
SYNTHETIC_CLASSES = 4
_KEYWORDS = np.array([[1, 2], [3, 4]], dtype=np.int64)  # pair p = (A_p, B_p)
_NOISE_START = 5


def make_token_task(
    n_train: int = 4000,
    n_test: int = 1000,
    seq_len: int = 32,
    vocab_size: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Generate the ``tokens-synthetic`` task, deterministically from ``seed``.

    Every sequence has a length drawn uniformly from ``[seq_len // 2, seq_len]``
    (right-padded with :data:`PAD_ID`) and is filled with noise ids from
    ``[5, vocab_size)``. Two keyword pairs exist, ``(A_0, B_0) = (1, 2)`` and
    ``(A_1, B_1) = (3, 4)``. A sequence holds both keywords of one pair ``p``
    at two random positions, and, half of the time, one keyword of the other
    pair as a decoy. Its label is ``2 * p + o`` with ``o = 1`` if ``B_p``
    comes before ``A_p``: the class depends on which keywords co-occur (a
    decoy alone does not count) and on their order, so a bag of tokens cannot
    exceed 50 % accuracy and a model needs positions and attention.

    Parameters
    ----------
    n_train, n_test : number of training / test sequences
    seq_len : padded length ``L`` (at least 6)
    vocab_size : ids are in ``[0, vocab_size)`` (at least 16)
    seed : the generator's seed; equal seeds give equal arrays

    Returns
    -------
    dict
        ``x_train`` int64 ``(n_train, L)``, ``y_train`` int64 ``(n_train,)``,
        ``x_test``, ``y_test``, and the scalars ``vocab_size`` and
        ``num_classes`` as 0-d int64 arrays (the keys of a ``tokens-npz`` file).
    """
    if seq_len < 6:
        raise ValueError(f"seq_len must be at least 6, got {seq_len}")
    if vocab_size < 16:
        raise ValueError(f"vocab_size must be at least 16, got {vocab_size}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    lengths = rng.integers(seq_len // 2, seq_len + 1, size=n)
    x = rng.integers(_NOISE_START, vocab_size, size=(n, seq_len), dtype=np.int64)
    cols = np.arange(seq_len)
    x[cols[None, :] >= lengths[:, None]] = PAD_ID
    # three distinct positions inside each sequence: a random order of its
    # valid positions (padding sorts last), first three taken
    keys = rng.random((n, seq_len)) + (cols[None, :] >= lengths[:, None])
    pos = np.argsort(keys, axis=1, kind="stable")[:, :3]
    first, second = pos[:, :2].min(axis=1), pos[:, :2].max(axis=1)
    pair = rng.integers(0, 2, size=n)
    order = rng.integers(0, 2, size=n)
    rows = np.arange(n)
    a, b = _KEYWORDS[pair, 0], _KEYWORDS[pair, 1]
    x[rows, first] = np.where(order == 0, a, b)
    x[rows, second] = np.where(order == 0, b, a)
    decoy = rng.random(n) < 0.5
    other = _KEYWORDS[1 - pair, rng.integers(0, 2, size=n)]
    x[rows[decoy], pos[decoy, 2]] = other[decoy]
    y = (2 * pair + order).astype(np.int64)
    return {
        "x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:],
        "vocab_size": np.array(vocab_size, dtype=np.int64),
        "num_classes": np.array(SYNTHETIC_CLASSES, dtype=np.int64),
    }


def check_token_arrays(
    arrays: dict[str, np.ndarray], source: str = "token arrays"
) -> tuple[dict[str, np.ndarray], int, int]:
    """Validate token arrays and return them as int64 with ``(vocab_size, num_classes)``.

    Parameters
    ----------
    arrays : ``x_train``, ``y_train``, ``x_test``, ``y_test``, and optionally
        ``vocab_size`` and ``num_classes`` (scalars)
    source : names the arrays' origin in error messages (e.g. the file path)

    Raises
    ------
    ValueError
        A key is missing, a shape or dtype is wrong, or an id / label is out
        of range.
    """
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)} (needs x_train, y_train, x_test, y_test)")
    out = {}
    for k in ("x_train", "y_train", "x_test", "y_test"):
        a = np.asarray(arrays[k])
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{source}: {k} must hold integers (token ids / labels), got {a.dtype}")
        out[k] = a.astype(np.int64)
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{source}: x_{split} must be (N, L) and y_{split} (N,), got {x.shape} and {y.shape}"
            )
    if out["x_train"].shape[1] != out["x_test"].shape[1]:
        raise ValueError(f"{source}: x_train and x_test have different sequence lengths")
    ids_max = max(int(out["x_train"].max(initial=0)), int(out["x_test"].max(initial=0)))
    ids_min = min(int(out["x_train"].min(initial=0)), int(out["x_test"].min(initial=0)))
    vocab = int(arrays["vocab_size"]) if "vocab_size" in arrays else ids_max + 1
    if ids_min < 0 or ids_max >= vocab:
        raise ValueError(
            f"{source}: token ids must be in [0, vocab_size={vocab}), found [{ids_min}, {ids_max}]"
        )
    labels_max = max(int(out["y_train"].max(initial=0)), int(out["y_test"].max(initial=0)))
    labels_min = min(int(out["y_train"].min(initial=0)), int(out["y_test"].min(initial=0)))
    classes = int(arrays["num_classes"]) if "num_classes" in arrays else labels_max + 1
    if labels_min < 0 or labels_max >= classes:
        raise ValueError(
            f"{source}: labels must be in [0, num_classes={classes}), found [{labels_min}, {labels_max}]"
        )
    return out, vocab, classes


def npz_path(data_dir: Path) -> Path:
    """Where the ``tokens-npz`` data set is read from: ``<data_dir>/tokens-npz/tokens.npz``."""
    return Path(data_dir) / NPZ_FOLDER / NPZ_FILE


def read_token_npz(path: Path) -> tuple[dict[str, np.ndarray], int, int]:
    """Read and validate a ``.npz`` of token id sequences (layout in the module docstring).

    Returns the int64 arrays and ``(vocab_size, num_classes)``; a missing
    file raises ``FileNotFoundError`` (the registered loader turns it into a
    ``DataNotFoundError`` with the expected path and how to make the file).
    """
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return check_token_arrays(arrays, str(path))
