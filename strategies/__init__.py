"""Flower server side of fedprune: Message-API strategies and the ServerApp.

Installed as ``fedprune_flwr.strategies``: ``from fedprune_flwr.strategies import FedPrune``.
"""

from .fedavg import FedAvg
from .feddst import FedDST
from .fedprune import FedPrune
from .results import RoundRecorder

__all__ = ["FedAvg", "FedDST", "FedPrune", "RoundRecorder"]
