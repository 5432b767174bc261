"""Flower client side of fedprune: the NumPyClient and the ClientApp.

Installed as ``fedprune_flwr.clients``: ``from fedprune_flwr.clients import FedPruneClient``.
"""

from .numpy_client import FedPruneClient

__all__ = ["FedPruneClient"]
