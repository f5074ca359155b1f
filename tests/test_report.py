"""fgcam.report: the book's tables and figures helpers."""
import base64
import io
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")

from fgcam import report  # noqa: E402


def _decode(uri):
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_heat_relu_and_max():
    m = torch.tensor([[-1.0, 0.0], [1.0, 4.0]])
    assert torch.equal(report.heat(m), torch.tensor([[0.0, 0.0], [0.25, 1.0]]))
    assert torch.equal(report.heat(-m.abs()), torch.zeros(2, 2))


def test_to_image_checks_shape_and_range():
    img = report.to_image(torch.randn(3, 8, 8))
    assert img.shape == (8, 8, 3) and img.min() >= 0 and img.max() <= 1
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        report.to_image(torch.randn(1, 3, 8, 8))


def test_table_is_html_with_caption_and_rounding():
    html = report.table(pd.DataFrame({"a": [0.123456, 2.0]}, index=["x", "y"]), caption="cap", precision=2).to_html()
    assert "<table" in html and "cap" in html and "0.12" in html and "0.123" not in html


def test_map_grid_shape_and_error():
    images, maps = torch.randn(2, 3, 8, 8), {"A": torch.rand(2, 4, 4), "B": torch.rand(2, 8, 8)}
    fig = report.map_grid(images, maps, titles=["p", "q"], overlay=True)
    assert len(fig.axes) == 2 * 3
    with pytest.raises(ValueError, match="'A' has 1 images"):
        report.map_grid(images, {"A": torch.rand(1, 4, 4)})


def test_pipeline_figure_has_every_stage():
    fig = report.pipeline_figure()
    texts = [t.get_text() for t in fig.axes[0].texts]
    for name, _ in report.STAGES:
        assert name in texts
    dashed = [p for p in fig.axes[0].patches if p.get_linestyle() == "--"]
    assert len(dashed) == 1  # the optional denoising stage


def test_spread_and_bootstrap():
    s = report.spread([1.0, 2.0, 3.0])
    assert s == {"n": 3, "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}
    lo, hi = report.bootstrap_ci(np.arange(100.0), seed=1)
    assert lo < 49.5 < hi and hi - lo < 20
    assert report.bootstrap_ci([5.0] * 10) == (5.0, 5.0)
    with pytest.raises(ValueError, match="empty"):
        report.bootstrap_ci([])


def test_compare_means_inconclusive_inside_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 50)
    assert report.compare_means(a, a + 1e-9 * rng.normal(size=50))["verdict"] == "inconclusive"
    assert report.compare_means(a + 1, a)["verdict"] == "a better"
    assert report.compare_means(a + 1, a, lower_is_better=True)["verdict"] == "b better"
    with pytest.raises(ValueError, match="same length"):
        report.compare_means([1.0], [1.0, 2.0])


def test_png_data_uri_round_trip():
    m = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    px = _decode(report.png_data_uri(m, size=4))
    assert px.shape == (4, 4, 3)
    assert (px[0, 2] != px[0, 0]).any()  # the maximum and a zero pixel get different colours
    assert (px[2, 0] == px[0, 0]).all()  # negative values are shown as zero
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        report.png_data_uri(torch.rand(2, 2, 2))
    assert _decode(report.image_data_uri(torch.randn(3, 6, 6))).shape == (6, 6, 3)
    levels = report.decode_png_levels(report.png_data_uri(m))
    assert levels.tolist() == [[0, 255], [0, 128]]


def test_static_explorer_html():
    controls = {"image": ["a", "b"], "method": ["m"]}
    images = {"a|m": "data:image/png;base64,AA==", "b|m": "data:image/png;base64,BB=="}
    html = report.static_explorer_html(controls, images, ["image", "method"], element_id="x")
    assert html.count("<select") == 2 and 'id="x"' in html and '"a|m"' in html
    assert re.search(r'<option value="b">b</option>', html)
    with pytest.raises(ValueError, match="does not name one option"):
        report.static_explorer_html(controls, {"c|m": "x"}, ["image", "method"])
    with pytest.raises(ValueError, match="key_order"):
        report.static_explorer_html(controls, images, ["method", "image"])
    html = report.static_explorer_html(controls, images, ["image", "method"], messages={"a|m": "why"},
                                       captions={"a": "two shapes"})
    assert '"why"' in html and '"two shapes"' in html and "fgcam-caption" in html


# ---- Tables 1-6 helpers: a small synthetic store ----------------------------------------------------------------
METHODS, LAYERS = ["A", "FG-A", "B"], ["L2", "L1"]


def _long(values, table=1, metric="m"):
    """values: {(method, layer): value} as long rows."""
    return pd.DataFrame([{"table": table, "metric": metric, "method": me, "layer": la, "value": v}
                         for (me, la), v in values.items()])


OURS = _long({("FG-A", "L1"): 1.0, ("A", "L1"): 2.0, ("A", "L2"): 3.0, ("FG-A", "L2"): 4.0})
PUB = _long({("A", "L1"): 1.5, ("A", "L2"): 2.0, ("FG-A", "L1"): 0.5, ("FG-A", "L2"): 5.0, ("B", "L1"): 9.0})


def test_layer_table_orders_rows_and_columns_and_leaves_holes():
    t = report.layer_table(OURS, 1, "m", METHODS, LAYERS)
    assert list(t.index) == ["A", "FG-A"] and list(t.columns) == LAYERS  # B absent from ours: no row
    assert t.loc["A", "L2"] == 3.0 and t.loc["FG-A", "L1"] == 1.0
    with pytest.raises(ValueError, match="table 2"):
        report.layer_table(OURS, 2, "m", METHODS, LAYERS)
    with pytest.raises(ValueError, match="metric"):
        report.layer_table(OURS.drop(columns="metric"), 1, "m", METHODS, LAYERS)


def test_side_by_side_layout_and_difference():
    t = report.side_by_side(OURS, PUB, 1, "m", METHODS, LAYERS)
    assert list(t.columns) == [(la, k) for la in LAYERS for k in ("ours", "published", "ours − published")]
    assert list(t.index) == ["A", "FG-A"]
    assert t.loc["A", ("L2", "ours − published")] == pytest.approx(1.0)
    assert t.loc["FG-A", ("L1", "ours − published")] == pytest.approx(0.5)
    html = report.table(t, caption="T").to_html()
    assert "ours − published" in html and "T" in html


def test_published_layout_columns():
    pub = pd.concat([PUB, PUB.assign(metric="n", value=PUB["value"] * 10)])
    t = report.published_layout(pub, 1, ["m", "n"], METHODS, LAYERS)
    assert list(t.columns) == ["L2 m", "L2 n", "L1 m", "L1 n"] and list(t.index) == METHODS
    assert t.loc["B", "L1 n"] == 90.0 and np.isnan(t.loc["B", "L2 m"])


def test_plot_layers_one_legend_per_panel():
    import matplotlib.pyplot as plt

    fig = report.plot_layers({"ours": OURS, "published": PUB}, 1, "m", METHODS, LAYERS)
    axes = fig.axes
    assert len(axes) == 2
    for ax, n_methods in zip(axes, (2, 3)):
        legend = ax.get_legend()
        assert legend is not None, f"panel {ax.get_title()!r} has no legend"
        assert [t.get_text() for t in legend.get_texts()] == METHODS[:n_methods]
    assert list(axes[0].lines[1].get_ydata()) == [4.0, 1.0]  # FG-A over L2, L1
    plt.close(fig)


def test_plot_methods_values_intervals_published_and_legends():
    import matplotlib.pyplot as plt

    rows = [{"table": 4, "metric": "m", "method": "FG-A", "value": 2.0, "ci_low": 1.5, "ci_high": 3.0, "paper": 4.0},
            {"table": 4, "metric": "m", "method": "A", "value": 1.0, "ci_low": 0.5, "ci_high": 1.25, "paper": 0.0},
            {"table": 4, "metric": "n", "method": "A", "value": 5.0, "ci_low": 4.0, "ci_high": 6.0,
             "paper": float("nan")}]
    fig = report.plot_methods(rows, 4, ["m", "n"], METHODS, ours_label="ours (offline)")
    ax_m, ax_n = fig.axes
    assert [t.get_text() for t in ax_m.get_legend().get_texts()] == ["ours (offline) (95 % interval)", "published"]
    assert [t.get_text() for t in ax_n.get_legend().get_texts()] == ["ours (offline) (95 % interval)"]
    assert [t.get_text() for t in ax_m.get_xticklabels()] == ["A", "FG-A"]       # the order of METHODS
    ours, pub = ax_m.lines[0], ax_m.lines[-1]
    assert list(ours.get_ydata()) == [1.0, 2.0] and list(pub.get_ydata()) == [0.0, 4.0]
    segments = ax_m.collections[0].get_segments()                               # the error bars
    assert [(s[0][1], s[1][1]) for s in segments] == [(0.5, 1.25), (1.5, 3.0)]
    with pytest.raises(ValueError, match="metric 'x'"):
        report.plot_methods(rows, 4, ["x"], METHODS)
    with pytest.raises(ValueError, match="ci_low"):
        report.plot_methods([{"table": 4, "metric": "m", "method": "A", "value": 1.0, "paper": 1.0}], 4, ["m"],
                            METHODS)
    plt.close("all")


def test_protocol_of_one_protocol_per_table():
    rows = [{"table": 1, "protocol": "p", "protocol_settings": {"k": 1}},
            {"table": 1, "protocol": "p", "protocol_settings": {"k": 1}},
            {"table": 2, "protocol": "q", "protocol_settings": {"k": 2}}]
    assert report.protocol_of(rows, 1) == ("p", {"k": 1})
    with pytest.raises(ValueError, match="table 3"):
        report.protocol_of(rows, 3)
    rows.append({"table": 1, "protocol": "p", "protocol_settings": {"k": 9}})
    with pytest.raises(ValueError, match="2 setting"):
        report.protocol_of(rows, 1)


def test_verdict_details_table():
    v = [{"id": "c1", "verdict": "holds", "paper": "P", "rule": "R", "outcome": "O", "evidence": "E",
          "saturated": ["x", "y"]}]
    t = report.verdict_details(v, [{"id": "c1", "verdict": "does not hold"}])
    assert list(t.index) == ["c1"] and t.loc["c1", "saturated"] == "x; y"
    assert t.loc["c1", "on the published numbers"] == "does not hold"
    assert "on the published numbers" not in report.verdict_details(v).columns
