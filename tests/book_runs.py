"""The chapters' executions for ``tests/test_notebooks.py``, started as soon as pytest has collected the tests.

``make test`` spends about half its time executing the book's chapters.  Executing them one after the other, after
every other test, leaves a core idle most of the time; so :func:`start` (called by ``conftest.py`` when collection
finishes) submits every selected chapter to a pool of :data:`JOBS` spawned worker processes, longest budget first,
and the other tests run in the main process meanwhile.  The chapter tests then wait for their chapter's result.

Each worker executes a chapter exactly as ``make book`` does (``jupyter_cache``'s ``single_nb_execution``, the
book's per-cell timeout, ``book/_ext/shell_wakeup.py`` installed), with this checkout first on the kernel's
``PYTHONPATH`` and ``OMP_NUM_THREADS=1`` (unless set), since the kernels share the cores with each other and with the
tests.  A chapter's runs (the explorer's three) are in a row, in one worker.  The workers are spawned, not forked: a
forked worker would share the parent's asyncio event loop (its epoll instance) with its siblings.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
sys.path.insert(0, str(ROOT / "tools"))
import build_book  # noqa: E402  (tools/: make book's wrapper, whose FGCAM_BOOK_JOBS rule this shares)

#: Worker processes (``FGCAM_BOOK_JOBS``, default the core count, as ``make book``).
JOBS = build_book.jobs()

_pool: concurrent.futures.ProcessPoolExecutor | None = None
_futures: dict[str, concurrent.futures.Future] = {}


def kernel_pythonpath() -> str:
    """``PYTHONPATH`` for a chapter's kernel: this checkout first, so the kernel imports this checkout's fgcam."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def execute(path: Path, timeout: int, allow_errors: bool = False):
    """Execute the notebook at ``path`` as myst-nb's ``execute_notebooks: force`` does (in its folder)."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(path.parent), timeout=timeout, allow_errors=allow_errors,
                                 meta_override=True)
    return nb, result


def run_chapter(chapter: str, runs: int, timeout: int) -> tuple[list[tuple[float, str | None, object]], object]:
    """Execute ``chapter`` ``runs`` times in a row (in a worker); per run: seconds, the error's traceback or None,
    and for the first run the verdicts it shows (``book_verdicts.scan``).  Stops at the first failed run.  Also
    returns the first run's executed notebook (None if it failed)."""
    sys.path.insert(0, str(BOOK / "_ext"))
    import book_verdicts
    import shell_wakeup

    shell_wakeup.install()
    os.environ["PYTHONPATH"] = kernel_pythonpath()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out, first = [], None
    for k in range(runs):
        nb, result = execute(BOOK / f"{chapter}.ipynb", timeout)
        err = None if result.err is None else result.exc_string
        out.append((result.time, err, book_verdicts.scan(chapter, nb) if k == 0 and err is None else None))
        if err is not None:
            break
        if k == 0:
            first = nb
    return out, first


def start(chapters: list[str], runs: dict[str, int], timeout: int) -> None:
    """Submit ``chapters`` (in this order) to the pool; idempotent per chapter."""
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ProcessPoolExecutor(JOBS, mp_context=multiprocessing.get_context("spawn"))
    for chapter in chapters:
        if chapter not in _futures:
            _futures[chapter] = _pool.submit(run_chapter, chapter, runs[chapter], timeout)


def result(chapter: str) -> list[tuple[float, str | None, object]]:
    """The runs of ``chapter`` (waits for them); a ``KeyError`` if :func:`start` did not submit it."""
    return _outcome(chapter)[0]


def executed(chapter: str):
    """The notebook of ``chapter``'s first run, executed (waits for it); None if that run failed.  A ``KeyError``
    if :func:`start` did not submit it."""
    return _outcome(chapter)[1]


def _outcome(chapter: str):
    """What :func:`run_chapter` returned for ``chapter`` (waits for it)."""
    if chapter not in _futures:
        raise KeyError(f"{chapter} was not submitted: call book_runs.start first")
    return _futures[chapter].result()


def summary() -> str | None:
    """One line per finished chapter: its runs' seconds (for the terminal summary of ``make test``)."""
    done = {c: f.result()[0] for c, f in _futures.items()
            if f.done() and not f.cancelled() and f.exception() is None}
    if not done:
        return None
    lines = []
    for c, runs in sorted(done.items(), key=lambda kv: -kv[1][0][0]):
        failed = "" if all(e is None for _, e, _ in runs) else "  (failed)"
        lines.append(f"{c:16s} {', '.join(f'{t:.1f}' for t, _, _ in runs)} s{failed}")
    return "\n".join(lines)


def stop() -> None:
    """Cancel what has not started and wait for the workers (end of the session; :func:`summary` still reports
    what finished)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None
