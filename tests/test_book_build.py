"""The whole book's Markdown builds without a warning, as ``make book`` builds it (``-W -n``), in about a minute.

Every chapter's Markdown cells (no code is run: a glue reference shows its key) with the real ``_config.yml``,
``_toc.yml``, ``references.bib`` and extensions, built nitpicky with warnings as errors: a broken cross-reference,
label, citation, equation or directive fails here, before a full ``make book`` that executes every chapter.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BOOK = Path(__file__).resolve().parents[1] / "book"


def markdown_of(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
             for c in nb["cells"] if c["cell_type"] == "markdown"]
    return re.sub(r"\{glue:?\w*\}`([^`]*)`", r"\1", "\n\n".join(cells))


def test_whole_book_markdown_builds_without_warnings(tmp_path):
    if not (BOOK / "_wstatic" / "mathjax" / "tex-mml-chtml.js").exists():
        pytest.fail("book/_wstatic is missing: run `make vendor` (make test does it)")
    root = tmp_path / "book"
    root.mkdir()
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        shutil.copy(BOOK / name, root / name)
    for folder in ("_wstatic", "_ext"):
        shutil.copytree(BOOK / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    pages = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for page in pages:
        if (BOOK / f"{page}.md").exists():
            shutil.copy(BOOK / f"{page}.md", root / f"{page}.md")
        else:
            (root / f"{page}.md").write_text(markdown_of(BOOK / f"{page}.ipynb"), encoding="utf-8")
    jb = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jb), "build", str(root), "-W", "-n", "--keep-going"], capture_output=True, text=True,
                         timeout=600)
    warnings = [line for line in (run.stdout + run.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert run.returncode == 0 and not warnings, "\n".join(warnings) or run.stdout[-3000:] + run.stderr[-3000:]
