"""Flower client side of fedprune: the NumPyClient and the ClientApp.

Installed as ``fedprune_flwr.clients``: ``from fedprune_flwr.clients import
fedprune_train`` (one call in your own ``@app.train()`` handler) or ``FedPruneClient`` (Flower's NumPyClient).
"""

from .client_app import fedprune_evaluate, fedprune_train
from .numpy_client import FedPruneClient

__all__ = ["FedPruneClient", "fedprune_evaluate", "fedprune_train"]
