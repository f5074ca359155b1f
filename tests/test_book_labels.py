"""The book's MyST labels: the cross-referenced ones exist, and no label is defined twice.

Every ``.md`` file and every markdown cell of every ``.ipynb`` under ``book/`` (build outputs, node_modules and the
vendored static folder excluded) is parsed for label definitions:

* targets ``(label)=`` on a line of their own;
* dollarmath equation labels ``$$ ... $$ (label)``;
* ``:label:`` and ``:name:`` options of directives (math, figure, table, ...).

The paper's equations ``eq-1`` ... ``eq-8`` must each be defined exactly once (the method chapters define them).
The labels of the paper's tables and figures are added by the experiment chapters: until a label exists, its test is
an expected failure.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
SKIP_DIRS = {"_build", "node_modules", "_wstatic", ".ipynb_checkpoints", ".jupyter_cache"}

EQUATIONS = [f"eq-{n}" for n in range(1, 9)]
EXPERIMENTS = [f"paper-table-{n}" for n in range(1, 7)] + ["paper-figure-1", "paper-figure-3", "paper-figure-4"]

_TARGET = re.compile(r"^[ \t]*\(([^()\s]+)\)=[ \t]*$", re.M)
_DOLLARMATH = re.compile(r"\$\$[ \t]*\(([^()\s]+)\)[ \t]*$", re.M)
_OPTION = re.compile(r"^[ \t]*:(?:label|name):[ \t]+(\S+)[ \t]*$", re.M)
_FENCE = re.compile(r"^[ \t]*(```|~~~)")


def _strip_code_blocks(text: str) -> str:
    """Drop fenced blocks that show code (```python ...), keep directives (```{math}, ```{figure}, :::)."""
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            rest = line.strip()[3:].strip()
            if not rest.startswith("{"):          # a code block, not a MyST directive
                fence = m.group(1)
                continue
        elif fence is not None and line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
            fence = None
            continue
        if fence is None:
            out.append(line)
    return "\n".join(out)


def markdown_sources(book: Path = BOOK) -> dict[str, str]:
    """``{relative path: markdown text}`` for every .md file and every .ipynb (markdown cells only)."""
    sources = {}
    for path in sorted(book.rglob("*")):
        rel = path.relative_to(book)
        if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file():
            continue
        if path.suffix == ".md":
            sources[str(rel)] = path.read_text(encoding="utf-8")
        elif path.suffix == ".ipynb":
            nb = json.loads(path.read_text(encoding="utf-8"))
            cells = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in nb.get("cells", []) if c.get("cell_type") == "markdown"]
            sources[str(rel)] = "\n\n".join(cells)
    return sources


def label_definitions(text: str) -> list[str]:
    text = _strip_code_blocks(text)
    return _TARGET.findall(text) + _DOLLARMATH.findall(text) + _OPTION.findall(text)


def all_definitions() -> list[tuple[str, str]]:
    """``[(label, file), ...]``, one entry per definition."""
    return [(label, name) for name, text in markdown_sources().items() for label in label_definitions(text)]


_DEFINED = Counter(label for label, _ in all_definitions())


def _where(label: str) -> list[str]:
    return [name for lab, name in all_definitions() if lab == label]


def test_the_book_has_sources():
    assert BOOK.is_dir() and any(name.endswith(".ipynb") for name in markdown_sources())


def test_parser_finds_each_kind_of_label():
    text = "(chap)=\n# Title\n\n$$\nx = 1\n$$ (eq-x)\n\n```{figure} a.png\n:name: fig-a\n```\n\n" \
           "```python\n(not-a-label)=\n```\n"
    assert sorted(label_definitions(text)) == ["chap", "eq-x", "fig-a"]


@pytest.mark.parametrize("label", EQUATIONS)
def test_equation_label_defined_once(label):
    assert _DEFINED[label] == 1, f"label {label!r} is defined {_DEFINED[label]} times: {_where(label)}"


@pytest.mark.parametrize("label", EXPERIMENTS)
def test_experiment_label_defined_once(label):
    assert _DEFINED[label] == 1, f"label {label!r} is defined {_DEFINED[label]} times: {_where(label)}"


def test_no_label_defined_twice():
    twice = {label: _where(label) for label, n in _DEFINED.items() if n > 1}
    assert not twice, f"labels defined more than once: {twice}"
