"""``make book``: ``jupyter-book build`` with Sphinx reading the chapters in parallel processes.

Reading a chapter is executing it (``execute_notebooks: force``), and one chapter at a time leaves a core idle
while a kernel starts or imports torch.  ``jupyter-book build`` has no ``-j`` option, but its ``build_sphinx`` takes
``jobs`` (Sphinx's ``parallel``); this wraps the command with ``jobs`` set, everything else as given:

    python tools/build_book.py book -W -n --keep-going          # jobs = FGCAM_BOOK_JOBS, default the core count

Each chapter's kernel gets ``OMP_NUM_THREADS`` = cores / jobs (unless set), so that parallel kernels do not fight
for the cores.  The chapters and extensions are parallel-safe (Sphinx checks each extension's declaration and
falls back to serial reading otherwise).
"""
from __future__ import annotations

import functools
import os
import sys


def jobs() -> int:
    """Chapters executed at a time: ``FGCAM_BOOK_JOBS``, default the core count (also ``tests/book_runs.py``)."""
    n = int(os.environ.get("FGCAM_BOOK_JOBS", os.cpu_count() or 1))
    if n < 1:
        raise SystemExit(f"FGCAM_BOOK_JOBS must be >= 1, got {n}")
    return n


def main(argv: list[str]) -> None:
    from jupyter_book import sphinx as jb_sphinx
    from jupyter_book.cli.main import main as jupyter_book

    n = jobs()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    jb_sphinx.build_sphinx = functools.partial(jb_sphinx.build_sphinx, jobs=n)
    jupyter_book(["build", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
