"""The README is a user guide whose commands and example are the ones the project
tests: its test command is CI's, its plug-in example is tests/plugin_app.py (which
test_fedprune_simulation runs), and every file it points to exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def test_the_readme_test_command_is_what_ci_runs():
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines()
          if "pytest" in line and not line.startswith("#")]
    assert len(ci) == 1
    assert any(ci[0] in block.splitlines() for block in _blocks("bash"))


def test_the_plug_in_example_is_the_tested_app():
    app = (ROOT / "tests/plugin_app.py").read_text()
    body = app.split('"""', 2)[2].replace("from __future__ import annotations\n", "", 1).strip()
    examples = [b.strip() for b in _blocks("python")]
    assert body in examples, "README's plug-in example differs from tests/plugin_app.py"


def test_every_file_the_readme_names_exists():
    links = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", README)
    paths = re.findall(r"`((?:conf|docs|scripts|tests|docker)/[\w./-]+)`", README)
    assert links and paths
    missing = sorted({p for p in links + paths if "<" not in p and not (ROOT / p).exists()})
    assert not missing, f"README names files that do not exist: {missing}"


def test_the_readme_is_a_guide_not_a_notebook():
    assert len(README.splitlines()) <= 300
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", README), "dated remarks belong in git"
