"""The Flower app bundle (FAB) that `flwr run .` builds from this project stays under
Flower's size limit and leaves the study results out."""

import io
import zipfile

from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import FAB_MAX_SIZE

from conftest import ROOT


def test_the_fab_builds_under_the_limit_without_the_study_results():
    fab = build_fab_from_disk(ROOT)  # raises past FAB_MAX_SIZE
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert len(fab) < FAB_MAX_SIZE / 2, len(fab)
    assert "strategies/server_app.py" in names and "fedprune/config.py" in names
    assert not [n for n in names if n.startswith("docs/")]
