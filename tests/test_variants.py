"""fgcam.variants: the store of the variants beyond the paper, its verdicts, and the measured directions re-computed
on 8 grid composites of real ImageNet photos."""
import json
from pathlib import Path

import numpy as np
import pytest

from fgcam import real, stats, variants as V, zoo

from conftest import require


def _row(part, item, variant, layer, **values):
    return {"part": part, "item": item, "variant": variant, "layer": layer, "values": values}


def test_store_skips_only_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "rows.jsonl"
    V._append(path, [_row("grid", "a", "FG-Grad-CAM", "Input", cell_share=0.5)])
    with open(path, "a") as f:
        f.write('{"part": "grid", "item": "b", "vari')          # killed mid-line
    assert [r["item"] for r in V.rows(tmp_path)] == ["a"]
    V._append(path, [_row("grid", "b", "FG-Grad-CAM", "Input", cell_share=0.7)])
    assert [r["item"] for r in V.rows(tmp_path)] == ["a", "b"]   # the cut line is removed
    assert path.read_text().count("\n") == 2
    path.write_text(path.read_text().replace('"a"', '"a', 1))   # a bad line in the middle is an error
    with pytest.raises(ValueError, match="rows.jsonl:1: not a JSON line"):
        V.rows(tmp_path)


def test_manifest_refuses_other_settings(tmp_path):
    V._check_manifest(tmp_path, V._manifest("mobilenet_v1_0.75_192", 0))
    V._check_manifest(tmp_path, V._manifest("mobilenet_v1_0.75_192", 0))
    with pytest.raises(ValueError, match="model, seed differ"):
        V._check_manifest(tmp_path, V._manifest("mobilenet_v2_1.0_224", 1))


def _store(n, share, overall, reached=1.0, seed=0):
    """Synthetic rows: ``n`` composites and photos; ``share``/``overall``: variant -> mean (noise sd 0.01)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for v, m in share.items():
            layer = "CAM" if v == "Grad-CAM" else "Input"
            rows.append(_row("grid", f"g{i}", v, layer, cell_share=m + 0.01 * rng.standard_normal(),
                             reached=reached if v != "FG-Grad-CAM" else 0.01))
        for v, m in overall.items():
            rows.append(_row("photo", f"p{i}", v, "Input", overall=m + 0.01 * rng.standard_normal()))
    return rows


def _by(results, claim, variant):
    return next(r for r in results if r["claim"] == claim and r["variant"] == variant)


def test_verdicts_decide_each_claim_with_its_interval():
    rows = _store(40, {"FG-Grad-CAM": 0.55, "Grad-CAM": 0.60, "CLRP": 0.70, "FG-Grad-CAM others": 0.65,
                       "FG-Grad-CAM softmax": 0.75, "FG-Grad-CAM flat": 0.55},
                  {"FG-Grad-CAM": 0.20, "FG-Grad-CAM others": 0.10, "FG-Grad-CAM softmax": 0.21,
                   "FG-Grad-CAM flat": 0.20})
    out = V.verdicts(rows, n_resamples=500)
    assert _by(out, "class-discriminative", "FG-Grad-CAM")["verdict"] == "holds"
    assert _by(out, "as discriminative as Grad-CAM", "FG-Grad-CAM")["verdict"] == "does not hold"
    assert _by(out, "conserves relevance", "FG-Grad-CAM")["verdict"] == "does not hold"
    assert _by(out, "conserves relevance", "FG-Grad-CAM flat")["verdict"] == "holds"
    keep = "improves the grid pointing game, keeps Over-all"
    assert _by(out, keep, "FG-Grad-CAM softmax")["verdict"] == "holds"
    assert _by(out, keep, "FG-Grad-CAM others")["verdict"] == "does not hold"   # better share, Over-all lost
    assert _by(out, keep, "FG-Grad-CAM flat")["verdict"] == "inconclusive"      # same share: inside the noise
    clrp = "reaches CLRP's grid pointing game"
    assert _by(out, clrp, "FG-Grad-CAM softmax")["verdict"] == "holds"
    assert _by(out, clrp, "FG-Grad-CAM others")["verdict"] == "does not hold"
    iv = _by(out, keep, "FG-Grad-CAM softmax")["interval"]
    assert iv.n == 40 and iv.low < 0.2 < iv.high                               # paired: the item noise cancels


def test_compare_pairs_items_and_refuses_disjoint_ones():
    rows = [_row("grid", "g1", "A", "Input", cell_share=0.9), _row("grid", "g2", "A", "Input", cell_share=0.1),
            _row("grid", "g1", "B", "Input", cell_share=0.8), _row("grid", "g3", "B", "Input", cell_share=0.0)]
    iv = V.compare(rows, "grid", "cell_share", ("A", "Input"), ("B", "Input"), n_resamples=100)
    assert iv.n == 1 and iv.estimate == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no grid item has cell_share for both"):
        V.compare(rows, "grid", "cell_share", ("A", "Input"), ("C", "Input"))


def test_table_has_an_interval_per_measure():
    rows = _store(10, {"FG-Grad-CAM": 0.5}, {"FG-Grad-CAM": 0.2})
    t = V.table(rows, "grid", measures=("cell_share",), n_resamples=200)
    iv = t.loc[0, "cell_share"]
    assert isinstance(iv, stats.Interval) and iv.n == 10 and iv.low < 0.5 < iv.high


def test_committed_stores_are_readable_and_complete_per_item():
    """Every item of the committed stores has all its rows (a kill leaves at most a cut line, never half an item
    that counts as done), and every grid row has the four measures (Grad-CAM: no conservation report)."""
    root = Path(V.__file__).resolve().parents[1]
    found = 0
    for folder in sorted(Path(root, "results").glob("variants-*")):
        rs = V.rows(folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["variants"][0]["name"] == V.VARIANTS[0].name
        grid = {}
        for r in rs:
            if r["part"] == "grid":
                grid.setdefault(r["item"], []).append(r)
                want = {"cell_share", "energy_pg", "rank_corr"} | ({"reached"} if r["variant"] != "Grad-CAM" else set())
                assert want <= set(r["values"]), r
        n_grid = len(V.LAYERS) * len(V.VARIANTS) + len(V.BASELINES) + 1
        assert all(len(v) == n_grid for v in grid.values()), folder
        found += 1
    assert found == 2, "results/variants-v1 and results/variants-v2 are committed stores"


@pytest.fixture(scope="module")
def eight_composites():
    folder = zoo.imagenet_samples_folder()
    require(folder is not None and (folder / "synsets.txt").exists(),
            f"this test needs the ImageNet sample photos: set {zoo.IMAGENET_SAMPLES_ENV} to their folder")
    model, spec = real.load_model("mobilenet_v1_0.75_192")
    photos = real.scan_photos(folder, check=False)[:160]   # 160 classes: enough for 8 composites, quick to screen
    source = real.GridSource(model, photos, spec, 8, 0)
    layer_map = real.paper_layer_map(model, spec["input"]["shape"])
    chosen = (V.VARIANTS[0], V.VARIANTS[1], V.VARIANTS[2], V.VARIANTS[3])
    out = []
    for k in range(8):
        d = source.load([4 * k + c for c in range(4)])
        out.append(dict(((v, layer), values) for v, layer, values in V.measure_composite(
            model, d["images"][0], d["targets"].tolist(), source.boxes, layer_map, layers=("Input",),
            variants=chosen, baselines=(), grad_cam=False)))
    return out


def test_eight_composites_measured_directions(eight_composites):
    """The directions the committed stores measure, re-computed on 8 composites (direction only, the numbers live in
    results/variants-*): the paper's FG-Grad-CAM puts more than chance (1/4) of its positive energy in the
    explained class's cell; both contrastive variants put more there than the paper's and decorrelate the maps of
    two classes; the paper's rules drop most of the relevance on MobileNet V1 and the flat rule drops none."""
    def mean(v, m):
        return float(np.mean([c[(v, "Input")][m] for c in eight_composites]))

    paper, others, softmax, flat = (v.name for v in V.VARIANTS[:4])
    assert mean(paper, "cell_share") > 0.25
    assert mean(others, "cell_share") > mean(paper, "cell_share")
    assert mean(softmax, "cell_share") > mean(paper, "cell_share")
    assert mean(others, "rank_corr") < mean(paper, "rank_corr")
    assert mean(softmax, "rank_corr") < mean(paper, "rank_corr")
    assert mean(paper, "reached") < 0.1
    assert min(c[(flat, "Input")]["reached"] for c in eight_composites) > 1 - 1e-6


def test_too_few_items_are_inconclusive():
    rows = _store(5, {"FG-Grad-CAM": 0.55, "Grad-CAM": 0.9, "FG-Grad-CAM softmax": 0.95},
                  {"FG-Grad-CAM": 0.2, "FG-Grad-CAM softmax": 0.3})
    assert {r["verdict"] for r in V.verdicts(rows, n_resamples=200)} == {"inconclusive"}


def test_describe_counts_items_once(tmp_path):
    V._append(tmp_path / "rows.jsonl", [
        {**_row("grid", "g0", "A", "Input", cell_share=0.5), "item_seconds": 10.0},
        {**_row("grid", "g0", "B", "Input", cell_share=0.5), "item_seconds": 10.0},
        {**_row("photo", "p0", "A", "Input", overall=0.1), "item_seconds": 30.0},
        {**_row("cascade", "p0", "A", "Input", cascade_final=0.1), "item_seconds": 30.0}])
    d = V.describe(tmp_path)
    assert (d["rows"], d["photos"], d["photos with cascade"], d["composites"]) == (4, 1, 1, 1)
    assert d["grid seconds (mean over 1 timed items)"] == 10.0


def test_comparison_pairs_each_variant_with_the_paper_and_clrp():
    rows = _store(12, {"FG-Grad-CAM": 0.55, "CLRP": 0.70, "SGLRP": 0.65, "FG-Grad-CAM softmax": 0.75},
                  {"FG-Grad-CAM": 0.20, "FG-Grad-CAM softmax": 0.25})
    t = V.comparison(rows)
    assert t.loc["FG-Grad-CAM", "cell share - FG-Grad-CAM"] == ""
    est = float(t.loc["FG-Grad-CAM softmax", "cell share - CLRP"].split(" [")[0])
    assert est == pytest.approx(0.05, abs=0.01)
    assert float(t.loc["FG-Grad-CAM softmax", "Over-all - FG-Grad-CAM"].split(" [")[0]) == pytest.approx(0.05, abs=0.01)
    assert t.loc["FG-Grad-CAM flat", "cell_share"] == ""          # not in the store: left empty


def test_intervals_over_too_few_items_say_so():
    few = V.comparison(_store(3, {"FG-Grad-CAM": 0.5, "FG-Grad-CAM softmax": 0.7}, {}))
    assert few.loc["FG-Grad-CAM softmax", "cell_share"].endswith("(n = 3: too few to decide)")
    enough = V.comparison(_store(12, {"FG-Grad-CAM": 0.5, "FG-Grad-CAM softmax": 0.7}, {}))
    assert "too few" not in enough.loc["FG-Grad-CAM softmax", "cell_share"]
