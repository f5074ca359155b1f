"""Bootstrap intervals, verdicts and saturation (fgcam.stats) and the table cells built from them (fgcam.tables)."""
import time
from pathlib import Path

import numpy as np
import pytest

from fgcam import stats, tables
from fgcam.experiments import read_rows

STORE = Path(__file__).resolve().parents[1] / "results" / "offline"


def test_constant_values_give_a_zero_width_interval():
    iv = stats.bootstrap_ci(np.full(37, 0.1), seed=3)
    assert iv.estimate == iv.low == iv.high == 0.1 and iv.n == 37 and iv.n_resamples == 2000
    d = stats.paired_bootstrap(np.full(20, 2.5), np.full(20, 2.5))
    assert d.low == d.high == d.estimate == 0.0
    rows = [{"table": 1, "layer": "L", "metric": "average_drop_pct", "method": "m", "image_id": str(i),
             "value": 7.25} for i in range(15)]
    (cell,) = tables.cells(rows)
    assert cell["mean"] == cell["ci_low"] == cell["ci_high"] == 7.25 and cell["n_images"] == 15


def test_interval_is_seeded_and_depends_on_the_seed():
    x = np.random.default_rng(0).normal(size=40)
    assert stats.bootstrap_ci(x, seed=1) == stats.bootstrap_ci(x, seed=1)
    assert stats.bootstrap_ci(x, seed=1) != stats.bootstrap_ci(x, seed=2)


def test_normal_sample_interval_covers_the_mean_at_about_the_nominal_rate():
    """200 samples of 50 N(3, 2) values: the 95 % percentile interval should cover 3 about 95 % of the time."""
    rng = np.random.default_rng(12345)
    hits = [(iv.low <= 3.0 <= iv.high) for iv in
            (stats.bootstrap_ci(rng.normal(3.0, 2.0, size=50), seed=s) for s in range(200))]
    coverage = float(np.mean(hits))
    assert 0.90 <= coverage <= 0.98, coverage


def test_interval_matches_the_normal_theory_width():
    """For 400 N(0, 1) values the interval is about mean +- 1.96 / sqrt(400) = +- 0.098."""
    x = np.random.default_rng(7).normal(size=400)
    iv = stats.bootstrap_ci(x)
    assert iv.low < x.mean() < iv.high
    assert 0.17 < iv.high - iv.low < 0.22


def test_verdict_three_ways_and_on_points():
    assert stats.verdict((0.1, 0.3), 0.0, ">") == "holds"
    assert stats.verdict((-0.3, -0.1), 0.0, ">") == "does not hold"
    assert stats.verdict((-0.1, 0.3), 0.0, ">") == "inconclusive"
    assert stats.verdict((-0.1, 0.3), 0.0, "<") == "inconclusive"
    assert stats.verdict((-0.3, -0.1), 0.0, "less") == "holds"
    assert stats.verdict((1.0, 4.0), 3.0, "<=") == "inconclusive"       # straddles the threshold 3
    assert stats.verdict(stats.Interval.point(3.0), 3.0, "<=") == "holds"
    assert stats.verdict(stats.Interval.point(3.0), 3.0, "<") == "does not hold"
    assert stats.verdict(stats.Interval.point(-1.0), 0.0, ">") == "does not hold"
    # a zero-width interval from images (every image tied) is not a published point: touching is inconclusive
    tied = stats.Interval(0.0, 0.0, 0.0, 16, stats.LEVEL, 2000)
    assert stats.verdict(tied, 0.0, ">") == "inconclusive"
    assert stats.verdict(tied, 0.0, ">=") == "inconclusive"
    assert stats.verdict(tied, 0.0, "<") == "inconclusive"
    assert stats.verdict(tied._replace(estimate=5.0, low=5.0, high=5.0), 0.0, ">") == "holds"
    assert stats.verdict(tied._replace(estimate=-5.0, low=-5.0, high=-5.0), 0.0, ">") == "does not hold"
    with pytest.raises(ValueError, match="direction"):
        stats.verdict((0, 1), 0.0, "bigger")
    with pytest.raises(ValueError, match="low > high"):
        stats.verdict((1, 0), 0.0)


def test_straddling_interval_from_data_is_inconclusive():
    x = np.random.default_rng(1).normal(0.0, 1.0, size=30)
    iv = stats.bootstrap_ci(x - x.mean())  # mean exactly 0: the interval straddles 0
    assert iv.low < 0 < iv.high
    assert stats.verdict(iv, 0.0, ">") == "inconclusive"


def test_paired_bootstrap_is_narrower_than_unpaired_on_correlated_pairs():
    """Two methods whose per-image values share a large image effect: the paired interval of the difference
    excludes 0, the unpaired one (which ignores the pairing) straddles it."""
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, size=60)
    a = image + 0.1 + rng.normal(0.0, 0.05, size=60)
    b = image + rng.normal(0.0, 0.05, size=60)
    paired = stats.paired_bootstrap(a, b)
    unpaired = stats.paired_bootstrap(a, b, paired=False)
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert stats.verdict(paired, 0.0, ">") == "holds"
    assert stats.verdict(unpaired, 0.0, ">") == "inconclusive"
    assert (paired.high - paired.low) * 5 < unpaired.high - unpaired.low


def test_paired_bootstrap_with_a_statistic():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 1.0, size=40), rng.normal(0.0, 1.0, size=40)
    iv = stats.paired_bootstrap(a, b, statistic=lambda x, y: np.median(x) - np.median(y), n_resamples=500)
    assert iv.estimate == pytest.approx(np.median(a) - np.median(b)) and iv.low < iv.estimate < iv.high
    with pytest.raises(ValueError, match="same length"):
        stats.paired_bootstrap(a, b[:-1])


def test_sup_t_band_is_wider_than_the_marginal_intervals():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 10))
    est, boot = stats.bootstrap_means(x)
    lo, hi = stats.percentile(boot)
    slo, shi = stats.sup_t_band(boot, est)
    assert (shi - slo > hi - lo).all()
    assert (slo < est).all() and (est < shi).all()


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="non-finite value at image 2"):
        stats.bootstrap_ci([1.0, 2.0, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([1.0, 2.0], level=95)


def test_saturation_on_the_offline_store_ad_and_not_on_a_spread_sample():
    rows = read_rows(STORE)
    ad = [r["values"]["average_drop_pct"] for r in rows if r["table"] == 1]
    s = stats.saturation(ad, "average_drop_pct")
    assert s.saturated and s.share_at_bound > 0.5, s
    spread = np.random.default_rng(0).uniform(0.0, 100.0, size=len(ad))
    s = stats.saturation(spread, "average_drop_pct")
    assert not s.saturated and s.share_at_bound < 0.05, s
    assert not stats.saturation(np.random.default_rng(0).uniform(0, 1, 200), "insertion").saturated
    assert stats.saturation(np.full(10, 0.99), "insertion").saturated
    assert stats.saturation([0.0, 100.0], "average_increase_pct").share_at_bound is None


def test_separable():
    a = stats.Interval(0.5, 0.4, 0.6, 30)
    b = stats.Interval(0.55, 0.45, 0.65, 30)
    c = stats.Interval(0.9, 0.8, 1.0, 30)
    assert not stats.separable([a, b]) and stats.separable([a, b, c])


def test_store_cells_and_saturated_columns():
    """The offline store: 32 images per cell, each mean inside its interval; Table 1's AD columns saturated,
    Table 3's Layer13 energy column (Grad-CAM far below the FG methods) not."""
    cs = tables.cells(read_rows(STORE))
    assert len(cs) == len({(c["table"], c["layer"], c["metric"], c["method"]) for c in cs})
    assert all(c["n_images"] == 32 and c["ci_low"] <= c["mean"] <= c["ci_high"] for c in cs)
    cols = tables.columns(cs)
    assert all(cols[(1, la, "average_drop_pct")]["saturated"] for la in ("Layer33", "Layer23", "Layer13"))
    assert not cols[(3, "Layer13", "energy_proportion")]["saturated"]
    fg = next(c for c in cs if (c["table"], c["layer"], c["metric"], c["method"]) ==
              (1, "Layer13", "average_drop_pct", "FG-Grad-CAM"))
    assert fg["saturated"] and fg["at_bound"] > 0.9


def test_cells_are_fast():
    """2,000 resamples over 1,000 images x 100 cells in a few seconds."""
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(1000, 100))
    rows = [{"table": 1, "layer": f"L{j % 10}", "metric": "overall", "method": f"m{j // 10}", "image_id": str(i),
             "value": float(vals[i, j])} for i in range(1000) for j in range(100)]
    t = time.perf_counter()
    cs = tables.cells(rows)
    seconds = time.perf_counter() - t
    assert len(cs) == 100 and all(c["n_images"] == 1000 for c in cs)
    assert seconds < 10, seconds
    assert cs[0]["mean"] == pytest.approx(vals[:, 0].mean())


def test_cells_reject_rows_without_images():
    with pytest.raises(ValueError, match="no image_id"):
        tables.cells([{"table": 1, "layer": "L", "metric": "overall", "method": "m", "value": 0.1}])


def test_grid_cells_of_one_composite_are_one_resampling_unit():
    from fgcam import tables

    assert stats.cluster_id("grid-s0-00012-c3") == "grid-s0-00012"
    assert stats.cluster_id("n01440764_tench") == "n01440764_tench"
    assert stats.cluster_id("grid-s0-00012") == "grid-s0-00012"
    values = {f"grid-s0-{k:05d}-c{c}": float(k) for k in range(3) for c in range(4)}
    assert stats.cluster_means(values) == {"grid-s0-00000": 0.0, "grid-s0-00001": 1.0, "grid-s0-00002": 2.0}
    # four identical cells per composite: the interval is that of 3 composites, not of 12 independent cells
    rows = [{"image_id": i, "table": 6, "layer": "Input", "metric": "pointing", "method": "X", "value": v}
            for i, v in values.items()]
    cell = tables.cells(rows, n_resamples=2000)[0]
    assert cell["n_images"] == 3
    three = stats.bootstrap_ci([0.0, 1.0, 2.0], n_resamples=2000)
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx((three.low, three.high))
