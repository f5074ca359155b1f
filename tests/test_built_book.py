"""The whole built book (``make book``, ``book/_build/html``): every chapter is there, no page shows a Python
warning or traceback, and every citation links to an entry of the references page.

These tests read the pages ``make book`` wrote; without a built book they skip with that reason (the two-page and
equation builds of tests/test_book_render.py and tests/test_book_equations.py always run).  The static explorer's
controls are tested on the same built page by tests/test_book_static_explorer.py.
"""
import html
import re
from pathlib import Path

import pytest
import yaml

BOOK = Path(__file__).resolve().parents[1] / "book"
HTML = BOOK / "_build" / "html"
TOC = yaml.safe_load((BOOK / "_toc.yml").read_text())
PAGES = [TOC["root"]] + [c["file"] for part in TOC["parts"] for c in part["chapters"]]

# What a Python warning or error looks like in an executed cell's output
_BAD_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b\w*(?:Warning|Error): |^\s*warnings\.warn\(", re.M)
# myst-nb wraps each cell's outputs in one container; stderr streams and errors get their own classes
_OUTPUT_START = '<div class="cell_output docutils container">'
_OUTPUT_END = ('<div class="cell docutils container', "</section>", '<div class="toctree-wrapper')
_STDERR = re.compile(r'class="[^"]*\boutput (?:stderr|traceback)\b')


def _built() -> Path:
    if not (HTML / f"{TOC['root']}.html").exists():
        pytest.skip(f"{HTML} has no built book: run `make book` first")
    return HTML


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def bad_outputs(page_html: str) -> list[str]:
    """The cell outputs of a built page that show a warning, an error or a traceback (first line of each)."""
    found = []
    for block in page_html.split(_OUTPUT_START)[1:]:
        block = block[:min([i for i in (block.find(e) for e in _OUTPUT_END) if i >= 0] or [len(block)])]
        text = _text(block)
        if _STDERR.search(block) or _BAD_OUTPUT.search(text):
            m = _BAD_OUTPUT.search(text)
            found.append((text[m.start():m.start() + 160] if m else text[:160]).strip())
    return found


def test_scanner_finds_a_warning_and_a_traceback():
    warned = ('<div class="cell_output docutils container"><div class="output stderr highlight-myst-ansi notranslate">'
              '<div class="highlight"><pre>/x.py:3: UserWarning: careful</pre></div></div></div>')
    failed = ('<div class="cell_output docutils container"><div class="output traceback highlight-ipythontb notranslate">'
              '<div class="highlight"><pre>Traceback (most recent call last):</pre></div></div></div>')
    clean = ('<div class="cell_output docutils container"><div class="output text_plain highlight-myst-ansi notranslate">'
             '<div class="highlight"><pre>0.42</pre></div></div></div>')
    assert bad_outputs(warned) and bad_outputs(failed)
    assert bad_outputs(clean) == []


def test_every_chapter_was_built():
    built = _built()
    missing = [p for p in PAGES if not (built / f"{p}.html").exists()]
    assert not missing, f"chapters missing from the built book: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_no_page_shows_a_python_warning_or_traceback(page):
    built = _built()
    found = bad_outputs((built / f"{page}.html").read_text(encoding="utf-8"))
    assert not found, f"{page}.html shows:\n  " + "\n  ".join(found)


def test_every_citation_links_to_a_references_entry():
    built = _built()
    refs = (built / "references.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'\bid="([^"]+)"', refs))
    cited = 0
    for page in PAGES:
        text = (built / f"{page}.html").read_text(encoding="utf-8")
        for target in re.findall(r'href="references\.html#([^"]+)"', text):
            cited += 1
            assert target in anchors, f"{page}.html cites #{target}, which references.html does not have"
    assert cited, "no page cites the references page"
