"""The claim rules: each holds on the paper's own published numbers, and verdicts react to the data."""
import csv

import pytest

from fgcam import claims
from conftest import PUBLISHED_CSV


@pytest.fixture(scope="module")
def published():
    with open(PUBLISHED_CSV) as f:
        return [{**r, "table": int(r["table"]), "value": float(r["value"])} for r in csv.DictReader(f)]


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.id)
def test_every_claim_holds_on_the_published_numbers(claim, published):
    v = claims.verdict(claim, published)
    assert v["verdict"] == "holds", v["evidence"]


def test_verdict_changes_when_a_number_changes(published):
    rows = [dict(r) for r in published]
    for r in rows:
        if (r["table"], r["layer"], r["metric"], r["method"]) == (5, "Input", "overall", "FG-Score-CAMD"):
            r["value"] = 0.1
    v = {x["id"]: x for x in claims.verdicts(rows, tables=[5])}["T5-overall"]
    assert v["verdict"] == "does not hold" and "FG-Score-CAMD 0.1" in v["evidence"]


def test_missing_rows_are_not_measurable(published):
    rows = [r for r in published if r["method"] != "Layer-CAM"]
    v = {x["id"]: x for x in claims.verdicts(rows)}
    assert v["T2-overall"]["verdict"] == "not measurable in this profile"
    assert "Layer-CAM" in v["T2-overall"]["evidence"]
    assert v["T5-overall"]["verdict"] == "holds"
