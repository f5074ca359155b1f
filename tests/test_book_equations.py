"""The paper's equation numbers survive the build: equation (n) renders as (n), and "Eq. (n)" links to it.

The Markdown of the chapters that define the paper's equations (``cam_family``, ``lrp_rules``, ``fgcam_method``)
is built as a small book (Markdown only: the notebooks' code is not run, glue references become their key) with
the real ``_config.yml``, ``references.bib`` and the vendored MathJax. Then:

* the display math with the target ``id="eq-n"`` holds ``\\tag{n}`` (and Sphinx numbers no equation itself);
* every link whose text is "Eq. (n)" or "(n)" and that points to an equation points to ``#eq-n``;
* in headless Chromium (offline), MathJax typesets each tagged equation with the label "(n)".
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHAPTERS = ["cam_family", "lrp_rules", "fgcam_method"]
EQUATIONS = list(range(1, 9))
# labels of other chapters that these chapters reference: stub pages so that the references resolve
OTHER_LABELS = {"denoising": "Denoising", "intro": "Introduction"}


def _markdown(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
             for c in nb["cells"] if c["cell_type"] == "markdown"]
    text = "\n\n".join(cells)
    return re.sub(r"\{glue:?\w*\}`([^`]*)`", r"\1", text)       # no kernel here: a glue reference shows its key


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (BOOK / "_wstatic" / "mathjax" / "tex-mml-chtml.js").exists():
        pytest.skip("book/_wstatic is missing: run `make vendor`")
    root = tmp_path_factory.mktemp("eqbook")
    for name in ("_config.yml", "references.bib"):
        shutil.copy(BOOK / name, root / name)
    for folder in ("_wstatic", "_ext"):                           # _ext: the local extension _config.yml loads
        shutil.copytree(BOOK / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "index.md").write_text("# Equations\n\n```{bibliography}\n```\n")
    for chapter in CHAPTERS:
        (root / f"{chapter}.md").write_text(_markdown(BOOK / f"{chapter}.ipynb"), encoding="utf-8")
    for label, title in OTHER_LABELS.items():
        (root / f"stub_{label}.md").write_text(f"({label})=\n# {title}\n")
    files = CHAPTERS + [f"stub_{label}" for label in OTHER_LABELS]
    (root / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n"
                                   + "".join(f"  - file: {f}\n" for f in files))
    jb = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jb), "build", str(root)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root / "_build" / "html"


def _pages(built):
    return {c: (built / f"{c}.html").read_text(encoding="utf-8") for c in CHAPTERS}


def test_each_equation_has_its_paper_number(built):
    html = "\n".join(_pages(built).values())
    for n in EQUATIONS:
        m = re.search(rf'<div class="math[^"]*"[^>]*\bid="eq-{n}"[^>]*>(.*?)</div>', html, re.S)
        assert m, f"no display math with the target eq-{n}"
        assert rf"\tag{{{n}}}" in m.group(1), f"equation eq-{n} does not carry \\tag{{{n}}}: {m.group(1)[:200]}"
    assert 'class="eqno"' not in html, "Sphinx numbered an equation itself (its numbers are not the paper's)"


def test_references_point_to_the_equation(built):
    links = []
    for page, html in _pages(built).items():
        for href, text in re.findall(r'<a class="reference internal" href="([^"]*)"[^>]*>(.*?)</a>', html, re.S):
            plain = re.sub(r"<[^>]+>", "", text).strip()
            m = re.fullmatch(r"Eqs?\. \((\d)\)|\((\d)\)", plain)
            if m:
                n = m.group(1) or m.group(2)
                links.append((page, plain, href))
                assert href.endswith(f"#eq-{n}"), f"{page}: link {plain!r} points to {href}"
    assert len({h.split("#")[1] for _, _, h in links}) >= 6, links


def test_mathjax_renders_the_tags(built, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    for page in CHAPTERS:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9",
               "--virtual-time-budget=20000", "--dump-dom", (built / f"{page}.html").as_uri()]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
        assert "<mjx-container" in dom, f"{page}: MathJax did not typeset"
        html = _pages(built)[page]
        for n in EQUATIONS:
            if f'id="eq-{n}"' in html:
                # MathJax 3 renders \tag{n} as a labelled row; its assistive MathML holds the label text "(n)"
                assert re.search(rf"<mtext>\({n}\)</mtext>", dom), f"{page}: equation ({n}) has no rendered label"
