"""The app's own model and data: a small MLP on a synthetic 3-class task."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FEATURES, CLASSES = 20, 3


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(FEATURES, 96)
        self.out = nn.Linear(96, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def make_net() -> Net:
    torch.manual_seed(7)
    return Net()


def loader(seed: int, n: int, shuffle: bool) -> DataLoader:
    """n examples whose class is the sign pattern of two fixed projections."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    w = torch.Generator().manual_seed(1234)
    proj = torch.randn(FEATURES, 2, generator=w)
    s = (x @ proj > 0).long()
    y = torch.clamp(s[:, 0] + s[:, 1], max=CLASSES - 1)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed))
