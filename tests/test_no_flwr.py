"""fedprune/ is the pure library: it must never import the Flower framework (nor
matplotlib: plots belong to the lab, fedprune_lab/)."""

import re
import subprocess
import sys

from conftest import ROOT

FLWR_IMPORT = re.compile(r"^\s*(from|import)\s+flwr(\.|\s|$)", re.M)
PLOT_IMPORT = re.compile(r"^\s*(from|import)\s+matplotlib(\.|\s|$)", re.M)


def test_no_flwr_import_statement_in_fedprune():
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "fedprune").rglob("*.py")
        if FLWR_IMPORT.search(p.read_text())
    ]
    assert offenders == []


def test_no_plotting_in_the_library():
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "fedprune").rglob("*.py")
        if PLOT_IMPORT.search(p.read_text())
    ]
    assert offenders == []
    assert PLOT_IMPORT.search((ROOT / "fedprune_lab" / "report.py").read_text())  # the lab plots


def test_importing_every_fedprune_module_does_not_load_flwr():
    code = (
        "import pkgutil, importlib, sys, fedprune\n"
        "for m in pkgutil.walk_packages(fedprune.__path__, 'fedprune.'):\n"
        "    importlib.import_module(m.name)\n"
        "from fedprune.data.partition import partition_indices, PartitionSpec\n"
        "import numpy as np\n"
        "partition_indices(np.arange(40) % 4, PartitionSpec('dirichlet', 2, 0))\n"
        "bad = sorted(m for m in sys.modules if m == 'flwr' or m.startswith('flwr.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
