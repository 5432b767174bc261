"""Next-character prediction on Tiny Shakespeare, one client per speaker (LEAF's task).

The text (``<data-dir>/tinyshakespeare/input.txt``) is a run of speeches, each
headed by its speaker's name on a line of its own ending in ``:``, speeches
separated by a blank line. :func:`shakespeare_arrays` turns it into a
classification data set held like the token sets (:mod:`fedprune.data.tokens`):

* **speakers**: every speaker with at least ``min_chars`` characters of speech
  (all plays together) is one writer, numbered by first appearance; the others
  are left out;
* **split**: each speaker's speeches are split, seeded, into train (80%) and
  test (20%) whole speeches, so no window of the test text overlaps the
  training text; a speaker's train speeches are joined with newlines, and so
  are its test speeches;
* **examples**: every ``stride``-th window of ``seq_len`` characters of a
  speaker's text, labelled with the character that follows it;
* **vocabulary**: the sorted distinct characters of the whole file, ids
  ``1 .. V`` (``0`` is padding, as for every token set); the label of an example is
  the id of the next character, so ``num_classes = vocab_size``.

``writers_train`` / ``writers_test`` hold each example's speaker: the
``natural`` partitioner makes one client per speaker, and a client's local
test set is its own speakers' held-out text (:func:`fedprune.data.loader.client_data`).
The centralized test set is every selected speaker's test text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FOLDER = "tinyshakespeare"
FILE = "input.txt"
SEQ_LEN = 80  # LEAF's Shakespeare window
STRIDE = 8  # every 8th window: about 110,000 training examples at the default threshold
MIN_CHARS = 2000  # speakers with at least this much speech: 99 of Tiny Shakespeare's
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def speeches(text: str) -> list[tuple[str, str]]:
    """``(speaker, speech)`` pairs in order; blocks without a ``NAME:`` head are skipped."""
    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) < 2 or not lines[0].endswith(":"):
            continue
        out.append((lines[0][:-1].strip(), "\n".join(lines[1:])))
    return out


def windows(ids: np.ndarray, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``stride``-th window of ``seq_len`` ids and the id after each."""
    n = len(ids) - seq_len
    if n <= 0:
        return np.zeros((0, seq_len), dtype=ids.dtype), np.zeros(0, dtype=ids.dtype)
    starts = np.arange(0, n, stride)
    x = np.lib.stride_tricks.sliding_window_view(ids, seq_len)[starts]
    return np.ascontiguousarray(x), ids[starts + seq_len]


def shakespeare_arrays(
    text: str, *, min_chars: int = MIN_CHARS, seq_len: int = SEQ_LEN, stride: int = STRIDE,
    test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED,
) -> dict[str, np.ndarray]:
    """The arrays of the by-speaker next-character task (module docstring).

    Returns ``x_train`` / ``x_test`` int16 ``(N, seq_len)``, ``y_train`` / ``y_test``
    int64, ``writers_train`` / ``writers_test`` int64 and ``vocab`` (the
    characters, id ``i + 1`` is ``vocab[i]``) as a uint32 array of code points.
    """
    if seq_len < 1 or stride < 1:
        raise ValueError(f"seq_len and stride must be >= 1, got {seq_len}, {stride}")
    vocab = sorted(set(text))
    lookup = {c: i + 1 for i, c in enumerate(vocab)}
    by_speaker: dict[str, list[str]] = {}
    for who, speech in speeches(text):
        by_speaker.setdefault(who, []).append(speech)
    chosen = [w for w, s in by_speaker.items() if sum(len(x) for x in s) >= min_chars]
    if not chosen:
        raise ValueError(f"no speaker has {min_chars} characters of speech")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for writer, who in enumerate(chosen):
        said = by_speaker[who]
        test = np.zeros(len(said), dtype=bool)
        n_test = int(round(len(said) * test_fraction))
        if n_test:
            test[rng.choice(len(said), size=n_test, replace=False)] = True
        for split, pick in (("train", ~test), ("test", test)):
            joined = "\n".join(s for s, keep in zip(said, pick, strict=True) if keep)
            ids = np.fromiter((lookup[c] for c in joined), dtype=np.int16, count=len(joined))
            x, y = windows(ids, seq_len, stride)
            parts[split].append((x, y.astype(np.int64), np.full(len(y), writer, dtype=np.int64)))
    out: dict[str, np.ndarray] = {"vocab": np.array([ord(c) for c in vocab], dtype=np.uint32)}
    for split, rows in parts.items():
        out[f"x_{split}"] = np.concatenate([r[0] for r in rows])
        out[f"y_{split}"] = np.concatenate([r[1] for r in rows])
        out[f"writers_{split}"] = np.concatenate([r[2] for r in rows])
    return out


def read_shakespeare(data_dir: Path, **kwargs: int | float) -> dict[str, np.ndarray]:
    """:func:`shakespeare_arrays` of ``<data_dir>/tinyshakespeare/input.txt``."""
    return shakespeare_arrays((data_dir / FOLDER / FILE).read_text(encoding="utf-8"), **kwargs)


def decode(ids: np.ndarray, vocab: np.ndarray) -> str:
    """Token ids back to text (``0``, padding, is dropped)."""
    return "".join(chr(int(vocab[i - 1])) for i in np.asarray(ids).reshape(-1) if i > 0)
