"""docs/configuration.md is generated from pyproject.toml's run-config table and kept equal to it."""

from pathlib import Path

import pytest

from fedprune.config import RunConfig
from fedprune_lab.configdoc import (
    COMMAND,
    DOC,
    PYPROJECT,
    choices,
    config_table,
    main,
    render,
)

HEADER = "[tool.flwr.app.config]\n"


def _copy_with(tmp_path: Path, lines: str) -> Path:
    """A copy of the real pyproject with ``lines`` inserted at the top of the run-config table."""
    text = PYPROJECT.read_text()
    assert HEADER in text
    copy = tmp_path / "pyproject.toml"
    copy.write_text(text.replace(HEADER, HEADER + lines, 1))
    return copy


def test_committed_doc_equals_the_rendering():
    assert DOC.is_file(), f"{DOC.name} missing: run {COMMAND}"
    assert DOC.read_text() == render(PYPROJECT), f"docs/configuration.md is out of date: run {COMMAND}"


def test_every_pyproject_key_is_in_the_doc():
    doc = DOC.read_text()
    missing = [k for k in config_table(PYPROJECT.read_text()) if f"| `{k}` |" not in doc]
    assert not missing, f"not in docs/configuration.md: {missing}; run {COMMAND}"


def test_an_added_key_shows_up_with_its_default_and_comments(tmp_path):
    # Prepare: a '#' inside the string value is not a comment
    copy = _copy_with(tmp_path, '# the probe key\nzz-probe = "a#b"  # trailing note\n')

    # Execute
    text = render(copy)

    # Assert
    assert '| `zz-probe` | `"a#b"` | the probe key trailing note. |' in text
    for key in config_table(PYPROJECT.read_text()):
        assert f"| `{key}` |" in text


def test_a_comment_block_before_a_blank_line_opens_a_section(tmp_path):
    copy = _copy_with(tmp_path, "zz-first = 1\n\n# Probe section\n# its intro\n\n# probe doc\nzz-probe = 2\n")

    text = render(copy)

    marks = ["## General", "| `zz-first` | `1` |  |", "## Probe section", "its intro",
             "| `zz-probe` | `2` | probe doc. |"]
    positions = [text.index(m) for m in marks]
    assert positions == sorted(positions)


def test_check_fails_on_a_stale_doc_with_one_line_and_passes_once_written(tmp_path):
    copy, out = _copy_with(tmp_path, "zz-probe = 2\n"), tmp_path / "configuration.md"
    out.write_text(DOC.read_text())

    with pytest.raises(SystemExit) as exc:
        main(["--check", "--pyproject", str(copy), "--out", str(out)])
    message = str(exc.value.code)
    assert "out of date" in message and COMMAND in message and "\n" not in message

    main(["--pyproject", str(copy), "--out", str(out)])
    main(["--check", "--pyproject", str(copy), "--out", str(out)])  # no SystemExit
    assert out.read_text() == render(copy)


def test_every_listed_choice_is_a_valid_value():
    for key, values in choices().items():
        assert key in RunConfig.keys()
        for value in values:
            RunConfig.from_mapping({key: value})
