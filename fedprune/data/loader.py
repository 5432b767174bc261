"""Batches from in-memory tensors, and one client's view of a federated data set."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fedprune.data.datasets import ImageData
from fedprune.data.noise import NoisePlan, corrupt_labels
from fedprune.data.partition import PartitionSpec, cached_partition_indices, train_test_split
from fedprune.seeds import derive_seed


def is_token_tensor(x: torch.Tensor) -> bool:
    """Whether ``x`` holds token ids: a 2-D ``(N, L)`` tensor of an integer dtype other
    than uint8 (images are uint8 ``(N, C, H, W)`` and keep their normalisation)."""
    integer = not x.dtype.is_floating_point and not x.dtype.is_complex
    return integer and x.dtype not in (torch.uint8, torch.bool) and x.ndim == 2


class TensorLoader:
    """An iterable of ``(x, y)`` batches over uint8 images, normalised per batch.

    It behaves like a ``torch.utils.data.DataLoader`` for the training loop
    (iterable, ``len``, ``dataset``-free) but indexes whole batches at once,
    which on a CPU is several times faster than per-sample ``__getitem__``.
    Shuffling uses its own ``torch.Generator`` seeded at construction, so the
    batch order is reproducible.

    Token ids (a 2-D integer ``x`` other than uint8, e.g. int64 ``(N, L)``) are
    not normalised: batches hold them as int64, and ``mean`` / ``std`` are
    ignored (token data sets carry ``()``).

    Parameters
    ----------
    x : uint8 tensor (N, C, H, W), or integer token ids (N, L)
    y : int64 tensor (N,)
    mean, std : per-channel constants applied to ``x / 255`` (images only)
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows, y has {len(y)}")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self._tokens = is_token_tensor(x)
        if not self._tokens:
            c = x.shape[1]
            self._mean = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
            self._scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))
        self._seed = seed
        self._gen = torch.Generator().manual_seed(seed)

    def restart(self) -> None:
        """Start the batch orders over, as a loader just built with the same seed."""
        self._gen.manual_seed(self._seed)

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    @property
    def num_examples(self) -> int:
        """Number of examples (not batches)."""
        return len(self.y)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self._gen) if self.shuffle else torch.arange(n)
        for s in range(0, n, self.batch_size):
            b = order[s : s + self.batch_size]
            if self._tokens:
                yield self.x[b].to(torch.int64), self.y[b]
                continue
            xb = self.x[b].to(torch.float32)
            # (x/255 - mean) / std, computed as (x - 255*mean) * 1/(255*std)
            yield (xb - 255.0 * self._mean) * self._scale, self.y[b]


@dataclass(frozen=True)
class ClientData:
    """One client's local data: loaders plus what the record needs."""

    train: TensorLoader
    test: TensorLoader
    num_train: int
    noise_rate: float  # realised fraction of flipped training labels


def client_split(
    data: ImageData, spec: PartitionSpec, client: int, *, test_fraction: float,
    local_test: str = "split", seed: int, max_train: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Client ``client``'s (training indices, local-test indices or None for
    ``local_test="classes"``) into the training set: see :func:`client_data`."""
    if not 0 <= client < spec.num_partitions:
        raise ValueError(f"partition-id {client} out of range [0, {spec.num_partitions})")
    parts = cached_partition_indices(data.y_train.numpy(), spec, data.writers_train)
    if local_test not in ("split", "classes"):
        raise ValueError(f"local-test must be 'split' or 'classes', got {local_test!r}")
    te = None
    if local_test == "classes" or data.writers_test is not None:
        # (writers_test: client_data tests on the client's writers' own test examples)
        tr = parts[client]
    else:
        tr, te = train_test_split(parts[client], test_fraction, seed=derive_seed(seed, client, 1))
    if max_train and len(tr) > max_train:
        rng = np.random.default_rng(derive_seed(seed, client, 4))
        tr = np.sort(rng.choice(tr, size=max_train, replace=False))
    return tr, te


def largest_train_size(
    data: ImageData, spec: PartitionSpec, *, test_fraction: float, local_test: str = "split",
    seed: int, max_train: int = 0,
) -> int:
    """The most training examples any client of this partition has: the most
    ``num-examples`` an honest client can report."""
    return max(len(client_split(data, spec, c, test_fraction=test_fraction, local_test=local_test,
                                seed=seed, max_train=max_train)[0])
               for c in range(spec.num_partitions))


def client_data(
    data: ImageData,
    spec: PartitionSpec,
    client: int,
    *,
    test_fraction: float,
    noise: NoisePlan,
    local_test: str = "split",
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    max_train: int = 0,
) -> ClientData:
    """Client ``client``'s train / local-test loaders, with its label noise applied.

    Everything is derived from (seed, client): the partition, the local split,
    which labels are flipped, and the shuffling order.

    ``local_test``: ``split`` holds out ``test_fraction`` of the client's own
    data (for a data set with ``writers_test``, such as ``shakespeare``, it tests
    on the test examples of the client's own writers instead); ``classes``
    trains on all of it and tests on every centralized test image of the
    classes the client holds (LotteryFL / FedDST's protocol).

    ``max_train`` > 0 keeps a seeded random subset of at most that many
    training examples (the local test split is taken first, from all of them).
    """
    tr, te = client_split(data, spec, client, test_fraction=test_fraction, local_test=local_test,
                          seed=seed, max_train=max_train)
    y_tr = data.y_train[tr].numpy()
    y_noisy, realised = corrupt_labels(
        y_tr, data.num_classes, noise.kind, noise.rate(client), seed=derive_seed(seed, client, 2)
    )
    train = TensorLoader(
        data.x_train[tr], torch.from_numpy(y_noisy), data.mean, data.std, batch_size,
        shuffle=True, seed=derive_seed(seed, client, 3),
    )
    if local_test == "split" and data.writers_test is not None:  # its writers' held-out data
        held = torch.from_numpy(np.isin(data.writers_test, np.unique(data.writers_train[tr])))
        test = TensorLoader(data.x_test[held], data.y_test[held], data.mean, data.std,
                            eval_batch_size)
    elif local_test == "classes":
        held = torch.isin(data.y_test, torch.unique(data.y_train[tr]))
        test = TensorLoader(data.x_test[held], data.y_test[held], data.mean, data.std,
                            eval_batch_size)
    else:
        test = TensorLoader(data.x_train[te], data.y_train[te], data.mean, data.std,
                            eval_batch_size)
    return ClientData(train=train, test=test, num_train=len(tr), noise_rate=realised)


def seeded_subset(n: int, samples: int, seed: int) -> np.ndarray:
    """Sorted positions of ``min(samples, n)`` of ``range(n)``, drawn by ``seed``."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(samples, n), replace=False))


def test_loader(data: ImageData, batch_size: int, samples: int = 0, seed: int = 0) -> TensorLoader:
    """The centralized test set, or a fixed seeded subset of ``samples`` examples (0 = all)."""
    x, y = data.x_test, data.y_test
    if samples and samples < len(y):
        keep = seeded_subset(len(y), samples, derive_seed(seed, 0x7E57))
        x, y = x[keep], y[keep]
    return TensorLoader(x, y, data.mean, data.std, batch_size)
