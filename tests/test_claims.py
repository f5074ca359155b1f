"""The claim rules: each holds on the paper's own published numbers, verdicts react to the data, and on per-image
rows every verdict comes with a paired bootstrap interval."""
import csv
from pathlib import Path

import numpy as np
import pytest

from fgcam import claims
from fgcam.experiments import published_rows, read_rows
from conftest import PUBLISHED_CSV

STORE = Path(__file__).resolve().parents[1] / "results" / "offline"


@pytest.fixture(scope="module")
def published():
    with open(PUBLISHED_CSV) as f:
        return [{**r, "table": int(r["table"]), "value": float(r["value"])} for r in csv.DictReader(f)]


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.id)
def test_every_claim_holds_on_the_published_numbers(claim, published):
    v = claims.verdict(claim, published)
    assert v["verdict"] == "holds", v["evidence"]
    assert v["mode"] == "point" and v["interval"].low == v["interval"].high == v["interval"].estimate


def test_published_csv_and_the_runner_agree(published):
    """The CSV and fgcam.experiments.published_rows give the same verdicts (and the same numbers)."""
    key = lambda r: (r["table"], r["layer"], r["metric"], r["method"])  # noqa: E731
    assert {key(r): r["value"] for r in published} == {key(r): r["value"] for r in published_rows()}


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
    assert "Layer-CAM" in v["T2-overall"]["evidence"] and v["T2-overall"]["interval"] is None
    assert v["T5-overall"]["verdict"] == "holds"


def _per_image(published, n, noise, seed=0, shift=None, own=0.2):
    """Per-image rows whose means are the published numbers plus noise: an image effect shared by all methods
    (sd ``noise`` x 10 points or 0.1) and each value's own noise (``own`` x that sd)."""
    rng = np.random.default_rng(seed)
    rows = []
    image_effect = rng.normal(size=n)
    for r in published:
        sd = noise * (10.0 if r["metric"].endswith("_pct") else 0.1)
        vals = r["value"] + sd * image_effect + rng.normal(0.0, sd * own, size=n)
        if shift and shift[0] == (r["table"], r["layer"], r["metric"], r["method"]):
            vals = vals + shift[1]
        rows += [{"table": r["table"], "layer": r["layer"], "metric": r["metric"], "method": r["method"],
                  "image_id": f"img{i}", "value": float(v)} for i, v in enumerate(vals)]
    return rows


def test_per_image_rows_give_intervals_and_the_three_outcomes(published):
    """Per-image data centred on the published numbers: with little noise every claim holds (tight paired
    intervals); with a lot of noise the close calls become inconclusive; with one method moved far the way the
    claim forbids, the claim does not hold."""
    quiet = {v["id"]: v for v in claims.verdicts(_per_image(published, 300, 0.01))}
    assert all(v["verdict"] == "holds" and v["mode"] == "per-image" and v["n_images"] == 300
               for v in quiet.values()), {k: v["outcome"] for k, v in quiet.items() if v["verdict"] != "holds"}
    iv = quiet["T5-overall"]["interval"]
    assert iv.n == 300 and iv.n_resamples == 2000 and iv.low < iv.estimate < iv.high and iv.low > 0
    noisy = {v["id"]: v for v in claims.verdicts(_per_image(published, 30, 3.0, own=1.0))}
    assert noisy["T5-overall"]["verdict"] == "inconclusive", noisy["T5-overall"]["outcome"]
    moved = _per_image(published, 300, 0.01, shift=((5, "Input", "overall", "LRP"), 0.3))
    v = claims.verdict(claims.get("T5-overall"), moved)
    assert v["verdict"] == "does not hold" and "LRP" in v["evidence"], v["outcome"]


def test_paired_rows_pair_by_image_id(published):
    """Shuffling the row order changes nothing; renaming one method's images (no common image) makes the claim
    not measurable."""
    rows = _per_image(published, 50, 0.5)
    a = claims.verdict(claims.get("T6-localisation"), rows)
    b = claims.verdict(claims.get("T6-localisation"), list(reversed(rows)))
    assert a["interval"] == b["interval"] and a["verdict"] == b["verdict"]
    renamed = [{**r, "image_id": "x" + r["image_id"]} if r["method"] == "LRP" else r for r in rows]
    assert claims.verdict(claims.get("T6-localisation"), renamed)["verdict"] == "not measurable in this profile"


def test_offline_store_verdicts_have_intervals():
    rows = read_rows(STORE)
    vs = claims.verdicts(rows)
    assert [v["id"] for v in vs] == [c.id for c in claims.CLAIMS]
    for v in vs:
        assert v["verdict"] in claims.VERDICTS and v["mode"] == "per-image" and v["n_images"] == 32
        assert v["interval"].low <= v["interval"].high and v["interval"].n == 32
        assert all(c["low"] <= c["high"] and c["sim_low"] <= c["low"] + 1e-9 for c in v["comparisons"]
                   if c["high"] > c["low"]), v["id"]
    t1 = {v["id"]: v for v in vs}["T1-faithful"]
    assert any(s.startswith("average_drop_pct") for s in t1["saturated"])  # AD ~ 0 on the shapes model
    assert claims.verdicts(rows) == vs  # seeded: the same verdicts and intervals again


def test_multi_comparison_rule():
    """'holds' needs every part; 'does not hold' needs a part whose simultaneous interval is on the wrong side."""
    rng = np.random.default_rng(0)
    n = 200
    def rows(deltas):  # noqa: E306
        out = []
        for j, d in enumerate(deltas):
            base = rng.normal(size=n)
            for m, shift in (("FG-Grad-CAM", d), ("Grad-CAM", 0.0)):
                out += [{"table": "X", "image_id": str(i), "layer": f"L{j}", "metric": "overall", "method": m,
                         "value": float(base[i] + shift + rng.normal(0, 0.1))} for i in range(n)]
        return out
    claim = claims.Claim("x", "X", "", "", tuple(claims._diff(f"L{j}", "overall", "FG-Grad-CAM", "Grad-CAM")
                                                  for j in range(3)))
    assert claims.verdict(claim, rows([0.5, 0.5, 0.5]))["verdict"] == "holds"
    assert claims.verdict(claim, rows([0.5, 0.5, 0.0]))["verdict"] == "inconclusive"
    v = claims.verdict(claim, rows([0.5, 0.5, -0.5]))
    assert v["verdict"] == "does not hold" and v["critical"].endswith("L2")


def test_images_that_all_tie_do_not_decide_does_not_hold():
    """Average Increase is 0 or 100 per image: two methods can tie on every image of a small sample, and the
    bootstrap interval of their difference is then [0, 0]. That is no evidence against "FG > X" (real-v2's 16
    photos gave T4-faithful "does not hold" this way, with a critical comparison whose interval straddled 0): the
    claim is inconclusive, and when a claim does not hold its critical comparison is one that fails."""
    n = 40
    rng = np.random.default_rng(1)
    def rows(a_values, b_values, layer):  # noqa: E306
        return [{"table": "X", "image_id": str(i), "layer": layer, "metric": "average_increase_pct", "method": m,
                 "value": float(v)} for m, vals in (("FG-Grad-CAM", a_values), ("LRP", b_values))
                for i, v in enumerate(vals)]
    zeros = np.zeros(n)
    noisy = 100.0 * (rng.random(n) < 0.5)
    claim = claims.Claim("x", "X", "", "", (claims._diff("L0", "average_increase_pct", "FG-Grad-CAM", "LRP"),
                                            claims._diff("L1", "average_increase_pct", "FG-Grad-CAM", "LRP")))
    tie = claims.verdict(claim, rows(zeros, zeros, "L0") + rows(noisy, noisy * 0, "L1"))
    assert tie["verdict"] == "inconclusive", tie["outcome"]
    assert [c["simultaneous_verdict"] for c in tie["comparisons"]] == ["inconclusive", "holds"]
    worse = 100.0 * (np.arange(n) < 30)  # LRP increases on 30 of 40 images, FG-Grad-CAM on none
    fail = claims.verdict(claim, rows(zeros, zeros, "L0") + rows(zeros, worse, "L1"))
    assert fail["verdict"] == "does not hold", fail["outcome"]
    crit = {c["label"]: c for c in fail["comparisons"]}[fail["critical"]]
    assert crit["simultaneous_verdict"] == "does not hold" and crit["sim_high"] < 0, fail["outcome"]


def test_figure_claims_on_rows():
    """The figure claims take long per-image rows (as figure1_rows etc. return them); published numbers have no
    figure cells, so there they are not measurable."""
    rng = np.random.default_rng(0)
    n = 40
    energy = {("Grad-CAM", "Layer33"): 0.5, ("Grad-CAM", "Layer13"): 0.2, ("Score-CAM", "Layer33"): 0.5,
              ("Score-CAM", "Layer13"): 0.25, ("Layer-CAM", "Layer33"): 0.5, ("Layer-CAM", "Layer13"): 0.4,
              ("FG-Grad-CAM", "Layer13"): 0.6, ("FG-Score-CAM", "Layer13"): 0.65}
    rows = [{"table": "F1", "image_id": str(i), "layer": la, "metric": "mask_energy", "method": m,
             "value": float(v + rng.normal(0, 0.02))} for (m, la), v in energy.items() for i in range(n)]
    v = claims.verdict(claims.get("F1-shallow"), rows)
    assert v["verdict"] == "holds" and v["n_images"] == n, v["outcome"]
    assert claims.verdict(claims.get("F1-shallow"), published_rows())["verdict"] == "not measurable in this profile"
    assert {c.id for c in claims.ALL_CLAIMS} >= {"F1-shallow", "F3-discriminative", "F4-lrp", "F4-denoise",
                                                  "any-cam"}


def test_figure_measurements_on_the_shapes_model():
    """figure1_rows / figure3_rows / figure4_rows turn maps into the rows the claims read (two images)."""
    import torch

    from fgcam.profiles import get_profile

    profile = get_profile("offline")
    model = profile.load_model()
    data = claims.figure_images(profile, 2)
    target = model(data["images"]).argmax(1)
    maps = claims.figure1_maps(model, data["images"], target)
    rows = claims.figure1_rows(maps, data["masks"])
    assert len(rows) == 2 * len(maps) and all(0 <= r["value"] <= 1 for r in rows)
    assert claims.verdict(claims.get("F1-shallow"), rows)["verdict"] in claims.VERDICTS
    two = claims.two_object_images(profile, 2)
    m3 = claims.figure3_maps(model, two["images"], two["labels"], two["labels2"])
    r3 = claims.figure3_rows(m3, two["masks"], two["masks2"])
    assert {r["method"] for r in r3} == set(claims.FIGURE3_METHODS)
    assert all(-1 <= r["value"] <= 1 for r in r3)
    f4 = claims.figure4_images(model, profile, 2)
    maps4 = claims.figure4_maps(model, f4["images"], f4["target"])
    r4 = claims.figure4_rows(claims.figure4_measures(maps4, f4["target_mask"], f4["other_mask"]))
    v = claims.verdict(claims.get("F4-lrp"), r4)
    assert v["n_images"] == 2 and v["verdict"] in claims.VERDICTS
    assert torch.is_tensor(maps4["LRP"])


def test_too_few_images_are_inconclusive():
    """Five images that all favour FG by a wide margin: the interval lies above 0, but five images cannot decide."""
    rows = [{"table": "X", "image_id": str(i), "layer": "L", "metric": "overall", "method": m, "value": v + 0.01 * i}
            for i in range(claims.MIN_IMAGES - 5) for m, v in (("FG-Grad-CAM", 0.8), ("Grad-CAM", 0.2))]
    claim = claims.Claim("x", "X", "", "", (claims._diff("L", "overall", "FG-Grad-CAM", "Grad-CAM"),))
    v = claims.verdict(claim, rows)
    assert v["interval"].low > 0 and v["comparisons"][0]["verdict"] == "holds"
    assert v["verdict"] == "inconclusive" and "too few" in v["outcome"]


def _claims_table_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "claims_table", Path(__file__).resolve().parents[1] / "tools" / "claims_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_claims_table_tool_has_one_row_per_claim():
    """``tools/claims_table.py`` (the closing notes' verdict table): one row per claim, a verdict in every cell."""
    from fgcam import experiments as E

    text = _claims_table_tool().markdown({"published": E.published_rows()})
    rows = text.splitlines()[2:]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [c.id for c in claims.CLAIMS]
    assert all(r.rstrip(" |").endswith("holds") for r in rows)  # the rule holds on the published numbers


def test_claims_table_tool_gives_the_simultaneous_interval_of_a_claim_of_several_comparisons():
    """A cell names the claim's verdict and critical comparison; where the claim makes several comparisons it also
    gives that comparison's simultaneous interval (the one that decides "does not hold"), and only there."""
    from fgcam import experiments as E

    rows = E.read_rows(Path(__file__).resolve().parents[1] / "results" / "offline")
    cells = _claims_table_tool().column(rows, published=False)
    several = 0
    for v in claims.verdicts(rows):
        if v["verdict"].startswith("not measurable"):
            continue
        c = next(c for c in v["comparisons"] if c["label"] == v["critical"])
        band = f"simultaneous [{c['sim_low']:.4g}, {c['sim_high']:.4g}]"
        assert cells[v["id"]].startswith(f"{v['verdict']}: {v['critical']} = "), cells[v["id"]]
        assert (band in cells[v["id"]]) == (len(v["comparisons"]) > 1), cells[v["id"]]
        several += len(v["comparisons"]) > 1
    assert several  # the case is exercised on the committed store
