"""The built book renders offline in headless Chromium: MathJax typesets the math and a figure is shown.

A two-page copy of the book (``quickstart.ipynb`` with math and a figure, and the references page that its
citations need) is built with the real ``_config.yml`` and the vendored JavaScript (``make vendor``), then each page
is loaded from disk in Chromium with all network access disabled, and the rendered DOM is inspected.  The chapter is
not executed a second time: the copy is the one ``make test`` executed in the background as ``make book`` does
(``tests/book_runs.py``), built with the configuration's ``execute_notebooks`` set to ``off`` (myst-nb then renders
the stored outputs and glued values, as it does after executing).  These tests run after the others
(``conftest.py``: ``AFTER_CHAPTERS``), when the execution is done.  Without a ``chromium`` on PATH the rendering tests
skip with the reason (install the Debian package ``chromium``); under ``FGCAM_REQUIRE_ALL=1`` (.ci/run) they fail.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import book_runs
from conftest import require

BOOK = Path(__file__).resolve().parents[1] / "book"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AFTER_CHAPTERS = True  # conftest.py: run these tests last, when the background executions are done


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (BOOK / "_wstatic" / "mathjax" / "tex-mml-chtml.js").exists():
        pytest.fail("book/_wstatic is missing: run `make vendor` (make test does it)")
    root = tmp_path_factory.mktemp("book")
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    try:
        executed = book_runs.executed("quickstart")
    except KeyError:  # this file run on its own: execute the chapter now, as make book does
        book_runs.start(["quickstart"], {"quickstart": 1}, config["execute"]["timeout"])
        executed = book_runs.executed("quickstart")
    assert executed is not None, f"quickstart failed to execute:\n{book_runs.result('quickstart')[0][1]}"
    nbformat.write(executed, root / "quickstart.ipynb")
    config["execute"]["execute_notebooks"] = "off"
    (root / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name in ("references.bib", "references.md"):
        shutil.copy(BOOK / name, root / name)
    for folder in ("_wstatic", "_ext"):
        shutil.copytree(BOOK / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "_toc.yml").write_text("format: jb-book\nroot: quickstart\nchapters:\n  - file: references\n")
    jb = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jb), "build", str(root), "-W", "-n", "--keep-going"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root / "_build" / "html"


def _dom(page: Path, tmp_path) -> str:
    require(CHROMIUM, "no headless browser: install the Debian package chromium (apt-get install chromium) to "
                      "render the built pages; .ci/run installs it")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=15000",
           "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def test_no_cdn_scripts(built):
    for page in ("quickstart.html", "references.html"):
        html = (built / page).read_text()
        remote = re.findall(r'<script[^>]+src="(https?://[^"]+)"', html)
        assert not remote, f"{page} loads scripts from the network: {remote}"


def test_math_is_typeset(built, tmp_path):
    dom = _dom(built / "quickstart.html", tmp_path)
    assert "<mjx-container" in dom, "MathJax did not typeset the math offline"


def test_figure_is_shown(built, tmp_path):
    dom = _dom(built / "quickstart.html", tmp_path)
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', dom)
    assert images, "no figure in the rendered quickstart page"
    assert all((built / src).exists() for src in images), images
    assert "<mjx-container" in dom
