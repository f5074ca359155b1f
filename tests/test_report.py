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
