"""Sphinx extension: lets ``make book`` read (so execute) the chapters in parallel processes.

Sphinx reads in parallel only when every loaded extension declares ``parallel_read_safe``.  One does not:
``sphinx_multitoc_numbering``, which ``sphinx_external_toc`` (jupyter-book's table of contents) always loads.  It
renumbers sections across parts, from the main process after reading (``TocTreeCollector.assign_section_numbers``),
and only for toctrees marked ``numbered``; it keeps no state that a reading process would have to share.  This book
has no numbered toctree (``tests/test_notebooks.py`` checks it), so the declaration is made here for it.
"""
UNDECLARED = ("sphinx_multitoc_numbering",)


def declare(app, config):
    for name in UNDECLARED:
        ext = app.extensions.get(name)
        if ext is not None and getattr(ext, "parallel_read_safe", None) is None:
            ext.parallel_read_safe = True
            ext.parallel_write_safe = True


def setup(app):
    app.connect("config-inited", declare)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
