"""Every chapter of the book executes the way ``make book`` executes it, within its time budget, without stalls.

``make book`` runs ``jupyter-book build``, whose myst-nb executes each notebook with
``jupyter_cache.executors.utils.single_nb_execution`` (nbclient), per-cell timeout ``execute.timeout`` of
``book/_config.yml``, in the notebook's folder, after ``book/_ext/shell_wakeup.py`` (a Sphinx extension listed in
``_config.yml``) has fixed the client's lost-reply stall.  These tests make the same call, with the same timeout and
the same fix, so what passes here passes in ``make book``:

* the chapters run in the background from the start of the session, ``FGCAM_BOOK_JOBS`` (default: the core count)
  at a time in separate processes, while the other tests run (``tests/book_runs.py``); ``explorer`` (the widget
  chapter that stalled) runs 3 times in a row in every ``make test``;
* every other chapter runs once (``FGCAM_NOTEBOOK_RUNS=3`` runs each 3 times, about 3x longer);
* each run must finish without error within its budget (:data:`BUDGET_S`), and a cell over the per-cell timeout
  fails the run (``CellTimeoutError``) instead of waiting;
* every verdict a chapter shows (glued or printed) is the one ``fgcam.claims`` computes for that claim and source,
  and no claim and source shows two verdicts across the book (``tests/book_verdicts.py``; the executions above are
  read, not repeated);
* a notebook of 100 cells printing into an ``ipywidgets.Output`` (nbclient answers each with a message on the shell
  channel) must run without one slow cell: without the fix about one cell in ten took the full timeout.

The kernel imports this checkout's ``fgcam`` (its root is put first on the kernel's ``PYTHONPATH``).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from fgcam import claims

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
sys.path.insert(0, str(BOOK / "_ext"))
import shell_wakeup  # noqa: E402  (book/_ext: the fix make book loads as a Sphinx extension)
import book_verdicts  # noqa: E402  (tests/: the scanner of the verdicts the chapters show)
import book_runs  # noqa: E402  (tests/: the chapters' executions, started when collection finishes)

CONFIG = yaml.safe_load((BOOK / "_config.yml").read_text())
TOC = yaml.safe_load((BOOK / "_toc.yml").read_text())
CHAPTERS = [f for f in [TOC["root"]] + [c["file"] for part in TOC["parts"] for c in part["chapters"]]
            if (BOOK / f"{f}.ipynb").exists()]  # the front page is a notebook too

#: Wall-clock budget of one execution of each chapter, in seconds: about 4x its time in a fresh-clone ``make test``
#: (2 vCPUs, two chapters at a time beside the other tests, OMP_NUM_THREADS=1; the terminal summary of ``make test``
#: prints these times), at least 120 s, so that a stall or a large regression fails and a slower or busier machine
#: does not.  Set at 41d4e8d from that day's times (real_imagenet then took 168 s; its Score-CAM batches are smaller
#: since).  Measured in three fresh-clone runs at 085cd70 (s): metric_settings 93-107, real_imagenet 86-97,
#: audit 85-96, explorer_static 53-60, exp_figures 50-53, exp_input 40-42, sanity 34-40, cam_family 31-32,
#: beyond_paper 29-30, exp_hidden 26-30, localisation 16-29, fgcam_method 19-25, quickstart 18-22, denoising 15-22,
#: real_benchmark 16-19, explorer 12-18, lrp_rules 17-18, intro 16-18.  With the ImageNet sample photos (CI)
#: beyond_paper and real_benchmark also run a live check on them (about +40 s each, idle).
BUDGET_S = {
    "quickstart": 120,
    "cam_family": 150,
    "lrp_rules": 120,
    "fgcam_method": 120,
    "denoising": 120,
    "exp_figures": 210,
    "exp_hidden": 150,
    "exp_input": 180,
    "localisation": 120,
    "sanity": 150,
    "metric_settings": 450,
    "real_imagenet": 660,
    "explorer": 120,
    "audit": 360,
    "intro": 120,
    "real_benchmark": 300,
    "explorer_static": 190,
    "beyond_paper": 300,
}
#: How many times in a row each chapter runs in ``make test``.
RUNS = {"explorer": 3}
DEFAULT_RUNS = int(os.environ.get("FGCAM_NOTEBOOK_RUNS", "1"))


@pytest.fixture()
def kernel_env(monkeypatch):
    """The kernel (a child of this process) imports this checkout's fgcam, whatever the venv's editable install."""
    monkeypatch.setenv("PYTHONPATH", book_runs.kernel_pythonpath())
    shell_wakeup.install()


def execute(path: Path, timeout: int | None = None):
    """Execute the notebook at ``path`` exactly as myst-nb's ``execute_notebooks: force`` does (in its folder)."""
    return book_runs.execute(path, CONFIG["execute"]["timeout"] if timeout is None else timeout,
                             CONFIG["execute"]["allow_errors"])


def test_book_config_fails_fast():
    """A failing or stalled cell stops ``make book`` with an error within minutes, and the fix is loaded."""
    execute_cfg = CONFIG["execute"]
    assert execute_cfg["execute_notebooks"] == "force" and execute_cfg["allow_errors"] is False
    assert execute_cfg["raise_on_error"] is True
    assert 60 <= execute_cfg["timeout"] <= 300, "per-cell timeout: the slowest cell with margin, minutes not hours"
    assert CONFIG["sphinx"]["local_extensions"] == {"shell_wakeup": "_ext", "parallel_safe": "_ext"}


def test_book_reads_chapters_in_parallel(tmp_path):
    """``make book`` executes the chapters in parallel processes: Sphinx does so only when every extension declares
    itself parallel-safe.  ``book/_ext/parallel_safe.py`` declares sphinx_multitoc_numbering, which is right only
    while no toctree is numbered; this builds the real configuration up to the choice and records it."""
    import subprocess

    assert "numbered" not in (BOOK / "_toc.yml").read_text()
    probe = (
        "import sys, sphinx.builders as B\n"
        "B.Builder._read_serial = lambda self, d: (print('SERIAL', flush=True), sys.exit(3))\n"
        "B.Builder._read_parallel = lambda self, d, nproc: (print('PARALLEL', nproc, flush=True), sys.exit(4))\n"
        f"sys.path.insert(0, {str(ROOT / 'tools')!r})\n"
        "import build_book\n"
        f"build_book.main([{str(BOOK)!r}, '--path-output', {str(tmp_path)!r}])\n"
    )
    env = {**os.environ, "FGCAM_BOOK_JOBS": "2"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert "PARALLEL 2" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


def test_every_chapter_has_a_budget():
    assert sorted(BUDGET_S) == sorted(CHAPTERS)
    assert all(BUDGET_S[c] >= 0 for c in CHAPTERS)


def test_kernel_is_this_environments_python(tmp_path, kernel_env):
    """The notebooks' kernel ``python3`` runs in the environment of the tests (the project's .venv under make)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell("import sys, fgcam; print(sys.prefix); print(fgcam.__file__)"))
    path = tmp_path / "which.ipynb"
    nbformat.write(nb, path)
    nb, result = execute(path, timeout=120)
    assert result.err is None, result.exc_string
    prefix, package = nb.cells[0].outputs[0]["text"].split()
    assert prefix == sys.prefix
    assert Path(package).resolve() == (ROOT / "fgcam" / "__init__.py").resolve()


def test_output_widget_cells_do_not_stall(tmp_path, kernel_env):
    """The stall's minimal case: cells that print into an ``Output`` widget make nbclient send a ``comm_msg`` on the
    shell channel while it waits there for the ``execute_reply``.  With the fix no cell waits for the timeout."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell("import ipywidgets as w\nout = w.Output()\nout"))
    nb.cells += [nbformat.v4.new_code_cell(f"with out:\n    print({i})") for i in range(100)]
    path = tmp_path / "capture.ipynb"
    nbformat.write(nb, path)
    start = time.monotonic()
    nb, result = execute(path, timeout=10)
    assert result.err is None, result.exc_string
    # a lost reply costs the full 10 s timeout (the cell then "succeeds"); 100 cells run in ~10 s on a loaded machine
    assert time.monotonic() - start < 60, f"{time.monotonic() - start:.0f} s: some cell waited for the timeout"


def test_a_slow_cell_is_an_error(tmp_path, kernel_env):
    """A cell over the per-cell timeout fails the run (it is not waited out and passed)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell("import time\ntime.sleep(30)"))
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    start = time.monotonic()
    _, result = execute(path, timeout=3)
    assert type(result.err).__name__ == "CellTimeoutError", result.err
    assert time.monotonic() - start < 25


BOOK_CHAPTER_TESTS = True  # conftest.py: submit this module's selected chapters when collection finishes
AFTER_CHAPTERS = True  # conftest.py: run this module's tests last (most wait for the chapters' executions)


def submit_selected(items) -> None:
    """Start executing the chapters that the selected tests of this module need (all of them for the cross-book
    check), longest budget first, in the background (``tests/book_runs.py``)."""
    mine = [item for item in items if item.module.__name__ == __name__]
    wanted = {item.callspec.params["chapter"] for item in mine
              if hasattr(item, "callspec") and "chapter" in item.callspec.params}
    if any(item.originalname == "test_verdicts_agree_across_the_book" for item in mine):
        wanted = set(CHAPTERS)
    book_runs.start(sorted(wanted, key=lambda c: -BUDGET_S[c]), {c: RUNS.get(c, DEFAULT_RUNS) for c in wanted},
                    CONFIG["execute"]["timeout"])


@pytest.fixture()
def chapter_runs():
    """Chapter -> its runs (``book_runs.result``): seconds, error or None, and the first run's verdicts."""
    return book_runs.result


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_within_budget(chapter, chapter_runs):
    runs = RUNS.get(chapter, DEFAULT_RUNS)
    done = chapter_runs(chapter)
    for k, (seconds, err, _) in enumerate(done):
        assert err is None, f"{chapter}, run {k + 1} of {runs}:\n{err}"
        assert seconds <= BUDGET_S[chapter], (f"{chapter}, run {k + 1} of {runs}: {seconds:.0f} s > budget "
                                              f"{BUDGET_S[chapter]} s")
    assert len(done) == runs
    print(f"{chapter}: {', '.join(f'{t:.1f}' for t, _, _ in done)} s")


def _shown(chapter, chapter_runs) -> book_verdicts.Scan:
    """The chapter's verdicts, as its first execution shows them."""
    seconds, err, scan = chapter_runs(chapter)[0]
    assert err is None, f"{chapter}:\n{err}"
    return scan


@pytest.fixture(scope="module")
def expected_verdicts():
    """``fgcam.claims`` on the committed stores and the published numbers (computed once per source)."""
    return book_verdicts.Expected()


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_verdicts(chapter, chapter_runs, expected_verdicts):
    """Each verdict the chapter glues is ``fgcam.claims``'s for that claim and source, and each verdict it prints
    next to a claim id is one it glues for that claim."""
    shown = _shown(chapter, chapter_runs)
    print(f"{chapter}: {len(shown.glued)} glued verdicts, {len(shown.printed)} printed next to a claim id: "
          + ", ".join(f"{name[len(book_verdicts.PREFIX):]}={v}" for _, _, v, name in shown.glued))
    found = book_verdicts.problems({chapter: shown}, expected_verdicts)
    assert not found, f"{chapter}: verdicts that disagree with fgcam.claims:\n  " + "\n  ".join(found)


@pytest.mark.slow
def test_verdicts_agree_across_the_book(chapter_runs, expected_verdicts):
    """One claim on one source shows one verdict in the whole book (live figure claims included: every chapter
    measures them with the same functions on the same images)."""
    shown = {chapter: _shown(chapter, chapter_runs) for chapter in CHAPTERS}
    found = book_verdicts.problems(shown, expected_verdicts)
    assert not found, "verdicts that disagree across the book or with fgcam.claims:\n  " + "\n  ".join(found)
    glued = {(cid, source) for s in shown.values() for cid, source, _, _ in s.glued}
    # every claim of the paper is shown with a verdict somewhere (the audit glues them all)
    assert {c.id for c in claims.ALL_CLAIMS} <= {cid for cid, _ in glued}
