"""The scanner of the verdicts the book shows (``tests/book_verdicts.py``) finds what disagrees.

The check itself runs on the executed chapters in ``tests/test_notebooks.py`` (``test_chapter_verdicts`` and
``test_verdicts_agree_across_the_book``); here it is shown on small fake notebooks that it sees glued and printed
verdicts, and that it fails on a verdict that is not ``fgcam.claims``'s, on two verdicts for one claim and source,
and on a printed verdict that is not glued.
"""
from __future__ import annotations

import nbformat
import pytest

import book_verdicts as bv
from fgcam import claims
from fgcam.experiments import published_rows

PUBLISHED = {v["id"]: v["verdict"] for v in claims.verdicts(published_rows())}


def glue_output(name: str, value) -> dict:
    """The output of ``myst_nb.glue(name, value, display=False)``, as the kernel writes it."""
    return nbformat.v4.new_output("display_data", data={bv._GLUE_MIME: repr(value)},
                                  metadata={"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}})


def notebook(*outputs) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("...")
    cell.outputs = list(outputs)
    nb.cells.append(cell)
    return nb


def printed(text: str) -> dict:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def scan_all(**chapters):
    return {name: bv.scan(name, nb) for name, nb in chapters.items()}


def test_names_parse_to_claim_and_source():
    assert bv.parse_name("verdict-T1-faithful-offline") == ("T1-faithful", "offline")
    assert bv.parse_name("verdict-F4-lrp-live") == ("F4-lrp", "live")
    assert bv.parse_name("verdict-any-cam-real-v1-measured") == ("any-cam", "real-v1-measured")
    assert bv.parse_name("verdict-T9-nothing-offline") is None
    assert bv.parse_name("verdict-T1-faithful-") is None and bv.parse_name("fig_n") is None


def test_the_published_verdicts_hold():
    """The fake notebooks below rely on it (and every rule must hold on the paper's numbers)."""
    assert set(PUBLISHED.values()) == {"holds"}


def test_a_consistent_book_has_no_problem():
    a = notebook(glue_output("verdict-T1-faithful-published", "holds"), glue_output("fig_n", 4),
                 glue_output("verdict-F1-shallow-live", "inconclusive"),
                 printed("T1-faithful      holds: FG-Grad-CAM - Grad-CAM ...\nno claim here: does not hold\n"))
    b = notebook(glue_output("verdict-T1-faithful-published", "holds"),
                 glue_output("verdict-F1-shallow-live", "inconclusive"),
                 nbformat.v4.new_output("execute_result", data={"text/plain": "            ours\nF1-shallow  inconclusive"},
                                        execution_count=1))
    scans = scan_all(a=a, b=b)
    assert [g[:3] for g in scans["a"].glued] == [("T1-faithful", "published", "holds"),
                                                 ("F1-shallow", "live", "inconclusive")]
    assert scans["a"].printed == [("T1-faithful", "holds", "T1-faithful      holds: FG-Grad-CAM - Grad-CAM ...")]
    assert scans["b"].printed == [("F1-shallow", "inconclusive", "F1-shallow  inconclusive")]
    assert bv.problems(scans, bv.Expected()) == []


def test_a_verdict_that_is_not_fgcam_claims_fails():
    """A deliberately inconsistent fake chapter: the paper's numbers do not "not hold" T4-faithful."""
    scans = scan_all(fake=notebook(glue_output("verdict-T4-faithful-published", "does not hold")))
    found = bv.problems(scans, bv.Expected())
    assert found == ["T4-faithful on published: fake shows 'does not hold', fgcam.claims computes 'holds'"]


def test_two_verdicts_for_one_claim_and_source_fail():
    """Live verdicts are not recomputed, but two chapters must agree on them."""
    scans = scan_all(one=notebook(glue_output("verdict-F4-lrp-live", "inconclusive")),
                     two=notebook(glue_output("verdict-F4-lrp-live", "holds")))
    found = bv.problems(scans, bv.Expected())
    assert len(found) == 1 and found[0].startswith("F4-lrp on live: different verdicts in the book")
    assert "'inconclusive' in one" in found[0] and "'holds' in two" in found[0]


def test_a_printed_verdict_must_be_glued():
    shown = printed("[T2-overall] DOES NOT HOLD: FG-CAM outperforms ...\n")
    found = bv.problems(scan_all(c=notebook(shown)), bv.Expected())
    assert len(found) == 1 and "prints 'does not hold' for T2-overall" in found[0] and "no verdict" in found[0]
    found = bv.problems(scan_all(c=notebook(shown, glue_output("verdict-T2-overall-published", "holds"))),
                        bv.Expected())
    assert len(found) == 1 and "glues only ['holds']" in found[0]
    # a table row: the first claim id is the row's; the rule's mention of another claim is not its verdict
    row = printed("any-cam   FG-CAM can be combined ... (Score-CAM: claim T2-overall)   inconclusive\n")
    assert bv.scan("d", notebook(row)).printed[0][:2] == ("any-cam", "inconclusive")


def test_bad_names_values_and_sources_fail():
    scans = scan_all(e=notebook(glue_output("verdict-T7-unknown-offline", "holds"),
                                glue_output("verdict-T1-faithful-published", "fine"),
                                glue_output("verdict-T1-faithful-no-such-store", "holds")))
    found = bv.problems(scans, bv.Expected())
    assert len(found) == 3
    assert "names no claim" in found[0] and "is not one of" in found[1] and "cannot recompute" in found[2]


def test_the_scanner_reads_what_myst_nb_glue_writes(tmp_path, monkeypatch):
    """A fake chapter executed by a kernel, as the book executes chapters: the inconsistent glue is found."""
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(
        "from myst_nb import glue\n"
        "glue('verdict-T5-overall-published', 'inconclusive', display=False)\n"
        "print('T5-overall  inconclusive')"))
    result = single_nb_execution(nb, cwd=str(tmp_path), timeout=120, allow_errors=False, meta_override=True)
    assert result.err is None, result.exc_string
    s = bv.scan("kernel", nb)
    assert [g[:3] for g in s.glued] == [("T5-overall", "published", "inconclusive")]
    assert s.printed == [("T5-overall", "inconclusive", "T5-overall  inconclusive")]
    assert bv.problems({"kernel": s}, bv.Expected()) == [
        "T5-overall on published: kernel shows 'inconclusive', fgcam.claims computes 'holds'"]


@pytest.mark.parametrize("source", ["offline", "real-v1", "real-v2"])
def test_expected_reads_the_committed_stores(source):
    """The sources the chapters glue are the committed stores (results/<source>)."""
    rows = bv.Expected().rows(source)
    assert rows and {str(r["table"]) for r in rows} & {str(c.table) for c in claims.CLAIMS}
