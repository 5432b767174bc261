"""Test set-up: keep Ray and Flower on loopback and local; locate the shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports Ray or Flower.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("FLWR_HOME", tempfile.mkdtemp(prefix="fedprune-flwr-home-"))

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _data_dir() -> Path | None:
    env = os.environ.get("FEDPRUNE_DATA_DIR")
    if env and Path(env).is_dir():
        return Path(env).resolve()
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data sets (../shared/data or $FEDPRUNE_DATA_DIR).

    Skips when absent, except under CI ($FEDPRUNE_REQUIRE_DATA=1), where a
    missing data folder is an error rather than a silent skip.
    """
    d = _data_dir()
    if d is None:
        if os.environ.get("FEDPRUNE_REQUIRE_DATA") == "1":
            pytest.fail("FEDPRUNE_REQUIRE_DATA=1 but no data dir ($FEDPRUNE_DATA_DIR, ../shared/data)")
        pytest.skip("no offline data dir; set FEDPRUNE_DATA_DIR")
    return d


@pytest.fixture(scope="session", autouse=True)
def _one_ray_for_the_session():
    """Keep one Ray instance for every in-process simulation of the session.

    Flower's Ray backend calls ``ray.init`` only when Ray is not running yet, and
    ``ray.shutdown`` at the end of every simulation; starting Ray again costs
    several seconds per simulation. Here ``ray.shutdown`` is a no-op until the
    session ends (each simulation still starts and stops its own actors).
    """
    try:
        import ray
    except ImportError:  # pragma: no cover - flwr[simulation] brings Ray
        yield
        return
    real = ray.shutdown
    ray.shutdown = lambda *a, **k: None
    try:
        yield
    finally:
        ray.shutdown = real
        if ray.is_initialized():
            real()
