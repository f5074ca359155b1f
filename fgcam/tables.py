"""Table cells with bootstrap intervals, and saturated columns, from the rows of a results store.

:func:`cells` turns the per-image rows of :func:`fgcam.experiments.read_rows` into one cell per
``(table, layer, metric, method, protocol)``: the mean over images, its 95 % percentile bootstrap interval
(:func:`fgcam.stats.bootstrap_means`, seeded, 2,000 resamples of the images by default), the number of images and
whether the cell is at the metric's bound (:func:`fgcam.stats.saturation`). :func:`columns` says, per
``(table, layer, metric)``, whether the column is *saturated*: at least half of its methods' cells at the bound,
or no two methods' intervals apart (the metric cannot separate the methods on this profile).

Cells that share the same images are resampled together (one count matrix per image set), so that the whole
store takes one matrix product per image set.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from fgcam import stats

__all__ = ["cells", "columns"]


def cells(rows: Iterable[dict], n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED,
          level: float = stats.LEVEL) -> list[dict]:
    """One dict per table cell: ``table, layer, metric, method, protocol, profile, mean, ci_low, ci_high,
    n_images, at_bound`` (share of images at the metric's bound, ``None`` for a metric without one) and
    ``saturated`` (that share >= :data:`fgcam.stats.SATURATED_SHARE`). In the order the rows came.

    ``rows``: store rows (``image_id``, ``values``: several per-image values per row) or long per-image rows
    (``image_id``, ``metric``, ``value``). A cell's images are the rows' ``image_id`` values (each once); the cells
    of a grid composite are averaged into one resampling unit (:func:`fgcam.stats.cluster_means`), so
    ``n_images`` counts composites there.
    """
    groups: dict[tuple, dict[str, float]] = {}
    profile: dict[tuple, str] = {}
    for r in rows:
        if "image_id" not in r:
            raise ValueError(f"row {r.get('key', r)} has no image_id: cells() needs per-image rows "
                             "(fgcam.experiments.read_rows)")
        items = r["values"].items() if "values" in r else [(r["metric"], r["value"])]
        for name, v in items:
            if v is None:
                continue
            k = (r["table"], r["layer"], name, r["method"], r.get("protocol"))
            d = groups.setdefault(k, {})
            if r["image_id"] in d and d[r["image_id"]] != float(v):
                raise ValueError(f"cell {k}: image {r['image_id']} has two different values")
            d[r["image_id"]] = float(v)
            profile.setdefault(k, r.get("profile"))
    groups = {k: stats.cluster_means(d) for k, d in groups.items()}  # a grid composite's cells: one unit
    # cells with the same image set share one count matrix and one matrix product
    by_images: dict[tuple, list[tuple]] = {}
    for k, d in groups.items():
        by_images.setdefault(tuple(sorted(d)), []).append(k)
    out = {}
    for ids, keys in by_images.items():
        x = np.array([[groups[k][i] for k in keys] for i in ids], dtype=np.float64)
        bad = ~np.isfinite(x)
        if bad.any():
            j, i = np.argwhere(bad.T)[0]
            raise ValueError(f"cell {keys[j]}: image {ids[i]} has a non-finite value {x[i, j]}")
        est, boot = stats.bootstrap_means(x, n_resamples, seed)
        lo, hi = stats.percentile(boot, level)
        for j, k in enumerate(keys):
            sat = stats.saturation(x[:, j], k[2])
            out[k] = {"table": k[0], "layer": k[1], "metric": k[2], "method": k[3], "protocol": k[4],
                      "profile": profile[k], "mean": float(est[j]), "ci_low": float(lo[j]), "ci_high": float(hi[j]),
                      "n_images": len(ids), "level": level, "n_resamples": n_resamples, "seed": seed,
                      "at_bound": sat.share_at_bound, "saturated": sat.saturated}
    return [out[k] for k in groups]


def columns(cell_rows: Iterable[dict]) -> dict[tuple, dict]:
    """Per ``(table, layer, metric)``: ``{"saturated": bool, "reason": str, "methods": int}``.

    Saturated when at least half of the column's methods have half of their images at the metric's bound, or
    when the methods' intervals all overlap (:func:`fgcam.stats.separable` is False): either way the column
    cannot rank the methods on this profile.
    """
    cols: dict[tuple, list[dict]] = {}
    for c in cell_rows:
        cols.setdefault((c["table"], c["layer"], c["metric"]), []).append(c)
    out = {}
    for k, cs in cols.items():
        at = [c for c in cs if c["saturated"]]
        ivs = [stats.Interval(c["mean"], c["ci_low"], c["ci_high"], c["n_images"]) for c in cs]
        rule = stats.SATURATION_RULES.get(k[2])
        if rule is not None and 2 * len(at) >= len(cs):
            out[k] = {"saturated": True, "methods": len(cs),
                      "reason": f"{len(at)}/{len(cs)} methods with >= {stats.SATURATED_SHARE:.0%} of images at "
                                f"{rule.text}"}
        elif len(cs) > 1 and not stats.separable(ivs):
            out[k] = {"saturated": True, "methods": len(cs),
                      "reason": f"the {len(cs)} methods' {cs[0]['level']:.0%} intervals all overlap"}
        else:
            out[k] = {"saturated": False, "methods": len(cs), "reason": ""}
    return out


def frame(cell_rows: Iterable[dict], table: int, fmt: str = "{:.3f}"):
    """A pandas DataFrame of one paper table for display: methods as rows, ``(layer, metric)`` as columns, each
    cell ``"mean [low, high]"`` from :func:`cells`; saturated columns get ``" (saturated)"`` in their name."""
    import pandas as pd

    cs = [c for c in cell_rows if c["table"] == table]
    cols = columns(cs)
    data: dict[str, dict[str, str]] = {}
    for c in cs:
        name = f"{c['layer']} {c['metric']}" + (" (saturated)" if cols[(table, c["layer"], c["metric"])]["saturated"]
                                                  else "")
        data.setdefault(name, {})[c["method"]] = (f"{fmt.format(c['mean'])} [{fmt.format(c['ci_low'])}, "
                                                  f"{fmt.format(c['ci_high'])}]")
    return pd.DataFrame(data)
