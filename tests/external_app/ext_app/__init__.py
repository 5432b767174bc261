"""An external Flower app that uses fedprune's public API only."""
