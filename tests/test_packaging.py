"""What the installed distribution puts into site-packages: namespaced import names only
(`fedprune`, `fedprune_lab`, `fedprune_flwr.*`), never a top-level `strategies` or
`clients` that would collide with a user's own modules."""

import ast
import subprocess
import sys

import tomllib

from conftest import ROOT

APP_PACKAGES = {"strategies": "fedprune_flwr.strategies", "clients": "fedprune_flwr.clients"}


def test_every_installed_package_is_under_a_fedprune_name():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tops = {p.split(".")[0] for p in setup["packages"]}
    assert tops == {"fedprune", "fedprune_lab", "fedprune_flwr"}, tops
    assert {v: k for k, v in setup["package-dir"].items()} == APP_PACKAGES
    # every sub-package of the tree is listed (a new one must not silently stay out)
    for folder in [*APP_PACKAGES, "fedprune", "fedprune_lab"]:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = ".".join(init.parent.relative_to(ROOT).parts)
            name = APP_PACKAGES.get(rel.split(".")[0], rel.split(".")[0])
            name = ".".join([name, *rel.split(".")[1:]])
            assert name in setup["packages"], f"{rel} is not installed"


def test_the_app_folders_import_each_other_only_relatively():
    """Inside strategies/ and clients/ an absolute `strategies.x` import would fail once
    installed as fedprune_flwr.strategies (or load a second copy from the source tree)."""
    for folder in APP_PACKAGES:
        for path in (ROOT / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    assert node.module.split(".")[0] not in APP_PACKAGES, \
                        f"{path.name}: from {node.module} import ..."
                if isinstance(node, ast.Import):
                    for a in node.names:
                        assert a.name.split(".")[0] not in APP_PACKAGES, f"{path.name}: {a.name}"


def test_the_installed_names_import_outside_the_source_tree(tmp_path):
    """From a folder that is not the project, the namespaced names import and the bare
    folder names do not."""
    code = ("import importlib.util as u, fedprune_flwr.strategies as s, "
            "fedprune_flwr.clients as c; "
            "assert s.FedPrune.__module__ == 'fedprune_flwr.strategies.fedprune'; "
            "assert c.FedPruneClient; "
            "print(u.find_spec('strategies'), u.find_spec('clients'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "None"]
