"""``docs/configuration.md``: every run-config key, generated from ``pyproject.toml``.

    python -m fedprune_lab.configdoc            # write docs/configuration.md
    python -m fedprune_lab.configdoc --check    # exit 1 if it is out of date

The values come from the ``[tool.flwr.app.config]`` table (read with
:mod:`tomllib`); the documentation of a key is the ``#`` comment lines directly
above it plus its trailing comment, read from the raw text. A comment block
followed by a blank line documents no key: it opens a section, titled by its
first line (its other lines introduce the section); the keys before the first
such block form the "General" section. The rendering adds what the code knows:
the valid values of keys checked against a tuple or a registry
(:func:`choices`), the strategies that read a key where
:mod:`fedprune_lab.study` knows that others skip it (:func:`readers`), and the
keys that do not change what a run computes
(:data:`fedprune.config.NOT_COMPUTED`). ``tests/test_configuration_doc.py``
fails when the committed file and the rendering differ.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from fedprune.config import BEFORE_KEY, NOT_COMPUTED, STRATEGY_NAMES, RunConfig

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
DOC = ROOT / "docs" / "configuration.md"
COMMAND = "python -m fedprune_lab.configdoc"

_TABLE = re.compile(r"^\s*\[\s*tool\s*\.\s*flwr\s*\.\s*app\s*\.\s*config\s*\]\s*(#.*)?$")
_ANY_TABLE = re.compile(r"^\s*\[")
# a bare or a quoted key (dotted keys are not matched: they get no documentation)
_KEY = re.compile(r'^\s*([A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')\s*=(.*)$')


@dataclass(frozen=True)
class Key:
    """One run-config key: its name, its pyproject default and its comments."""

    name: str
    default: Any
    doc: str = ""


@dataclass
class Section:
    """Consecutive keys under one heading comment ("" before the first heading)."""

    title: str
    intro: str = ""
    keys: list[Key] = field(default_factory=list)


def config_table(text: str) -> dict[str, Any]:
    """The ``[tool.flwr.app.config]`` table of pyproject text, nested tables flattened
    with dots as Flower does."""
    return _flatten(tomllib.loads(text)["tool"]["flwr"]["app"]["config"])


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _trailing_comment(rest: str) -> str:
    """The comment after a one-line value (``rest``: the text after ``=``); a ``#``
    inside a string is not one, so the value before it must parse."""
    for i, ch in enumerate(rest):
        if ch != "#":
            continue
        try:
            tomllib.loads(f"v = {rest[:i]}")
        except tomllib.TOMLDecodeError:
            continue
        return rest[i + 1:].strip()
    return ""


def _comments(text: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Scan the table's raw lines: key -> its documentation, and key -> (title,
    intro) of the section heading just before it."""
    docs: dict[str, str] = {}
    heads: dict[str, tuple[str, str]] = {}
    pending: list[str] = []  # comment lines since the last key or blank line
    heading: tuple[str, str] | None = None
    inside = False
    for line in text.splitlines():
        if not inside:
            inside = bool(_TABLE.match(line))
            continue
        if _ANY_TABLE.match(line):
            break
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped[1:].strip())
        elif not stripped:
            if pending:  # a comment block not attached to a key: a section heading
                heading, pending = (pending[0], " ".join(pending[1:])), []
        elif m := _KEY.match(line):
            name = next(iter(tomllib.loads(f"{m.group(1)} = 0")))  # unquote
            docs[name] = " ".join([*pending, _trailing_comment(m.group(2))]).strip()
            if heading is not None:
                heads[name], heading = heading, None
            pending = []
        else:  # a continuation line of a multi-line value
            pending = []
    return docs, heads


def read_sections(pyproject: Path = PYPROJECT) -> list[Section]:
    """The run-config keys of ``pyproject`` in file order, grouped by section."""
    text = pyproject.read_text()
    docs, heads = _comments(text)
    sections = [Section("")]
    for name, default in config_table(text).items():
        if name in heads:
            sections.append(Section(*heads[name]))
        sections[-1].keys.append(Key(name, default, docs.get(name, "")))
    return [s for s in sections if s.keys]


def choices() -> dict[str, tuple[str, ...]]:
    """Key -> its valid values, for the keys checked against a tuple or a registry."""
    import fedprune.data  # noqa: F401  (registers every data set)
    from fedprune.attacks import ATTACKS
    from fedprune.config import (
        ADAPTIVE_DENSITY,
        CODEC_DTYPES,
        DEVICES,
        FEDBT_MODES,
        NOISE_TYPES,
        OPTIMIZER_CHOICES,
    )
    from fedprune.contribution import REFERENCES, SCHEDULES
    from fedprune.data.datasets import dataset_names
    from fedprune.data.partition import PARTITIONERS
    from fedprune.dst import GROWTH
    from fedprune.masks import DISTRIBUTIONS
    from fedprune.models import model_names

    return {
        "strategy": STRATEGY_NAMES, "dataset": tuple(dataset_names()), "model": tuple(model_names()),
        "partitioner": PARTITIONERS, "noise-type": NOISE_TYPES, "attack": ATTACKS,
        "device": DEVICES, "codec-dtype": CODEC_DTYPES, "adaptive-density": ADAPTIVE_DENSITY,
        "fedbt-mode": FEDBT_MODES, "cgsv-reference": REFERENCES, "lambda-schedule": SCHEDULES,
        "growth": GROWTH, "density-distribution": DISTRIBUTIONS, "optimizer": OPTIMIZER_CHOICES,
    }


def readers(config: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Key -> the strategies that read it, for the keys that
    :mod:`fedprune_lab.study` knows some strategies skip, with the other keys at
    ``config`` (a switch turned off there, e.g. ``dynamic-topology``, removes readers)."""
    from fedprune_lab.study import _unused  # the map of keys each strategy skips

    skipped = {s: _unused({**config, "strategy": s}) - NOT_COMPUTED for s in STRATEGY_NAMES}
    known = set().union(*skipped.values())
    return {k: tuple(s for s in STRATEGY_NAMES if k not in skipped[s]) for k in known}


def _toml(value: Any) -> str:
    """A default as TOML writes it."""
    return tomli_w.dumps({"v": value}).removeprefix("v = ").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _strategies(names: tuple[str, ...]) -> str:
    if not names:
        return "none at these defaults"
    rest = [s for s in STRATEGY_NAMES if s not in names]
    return "all but " + ", ".join(rest) if len(rest) < len(names) else ", ".join(names)


def _description(key: Key, valid: tuple[str, ...] | None) -> str:
    parts = [key.doc if key.doc.endswith((".", "!", "?")) else key.doc + "."] if key.doc else []
    if valid is not None:
        parts.append("Choices: " + ", ".join(f"`{v}`" for v in valid) + ".")
    if key.name in BEFORE_KEY:
        parts.append(f"Runs stored before this key existed ran with `{_toml(BEFORE_KEY[key.name])}`.")
    if key.name in NOT_COMPUTED:
        parts.append("Does not change what a run computes (a resumed run may set it differently).")
    return _cell(" ".join(parts))


HEADER = f"""\
# Run configuration

This file is generated from the `[tool.flwr.app.config]` table of `pyproject.toml`
by `{COMMAND}`: edit the table and its comments there and run the
command again (`tests/test_configuration_doc.py` fails while the two differ).
`fedprune.config.RunConfig` parses and checks every key; a key not set takes the
default below.

## Setting keys

```sh
flwr run . --run-config 'strategy="fedprox" proximal-mu=0.1'  # key=value, TOML values
flwr run . --run-config conf/<file>.toml                       # a TOML file of keys
fedprune-run conf/<file>.yaml --set key=value                  # an experiment file, plus keys
```

*Strategies* lists the strategies that read a key where the map of skipped keys in
`fedprune_lab/study.py` restricts it, evaluated at the defaults below (turning a
feature off, e.g. `dynamic-topology = false`, can make them skip it too); it is
blank where that map restricts nothing.
"""


def render(pyproject: Path = PYPROJECT) -> str:
    """The markdown of ``docs/configuration.md`` for ``pyproject``."""
    sections = read_sections(pyproject)
    defaults = {k.name: k.default for s in sections for k in s.keys}
    valid = choices()
    read_by = readers({**RunConfig.defaults(), **defaults})
    lines = [HEADER]
    for section in sections:
        lines.append(f"## {section.title or ('General' if len(sections) > 1 else 'Keys')}\n")
        if section.intro:
            lines.append(section.intro + "\n")
        lines += ["| key | default | description | strategies |", "|---|---|---|---|"]
        for key in section.keys:
            who = _strategies(read_by[key.name]) if key.name in read_by else ""
            lines.append(f"| `{key.name}` | `{_cell(_toml(key.default))}` | "
                         f"{_description(key, valid.get(key.name))} | {who} |")
        lines.append("")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the file differs from the rendering")
    p.add_argument("--pyproject", type=Path, default=PYPROJECT)
    p.add_argument("--out", type=Path, default=DOC)
    args = p.parse_args(argv)
    text = render(args.pyproject)
    if args.check:
        if not args.out.is_file() or args.out.read_text() != text:
            raise SystemExit(f"{_shown(args.out)} is out of date: run {COMMAND}")
        return
    args.out.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
