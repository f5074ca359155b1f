"""The paper's claims, each as one rule over per-image results, with a verdict and its bootstrap interval.

A claim is the paper's sentence plus a list of *comparisons*: quantities computed from the means of a few
table cells ``(layer, metric, method)`` (usually the difference of two methods' means) that the claim says are
above (``>``) or below (``<``) a threshold. Every chapter that states a claim calls :func:`verdict` with the
same :class:`Claim`, so a claim has one rule and one verdict in the whole book.

Two kinds of input (:func:`verdict` tells them apart by the rows):

* **per-image rows** (the results store, :func:`fgcam.experiments.read_rows`, rows with ``image_id`` and
  ``values``; or the figure claims' rows, with ``image_id`` and ``value``): each comparison gets a *paired*
  percentile bootstrap interval over images (:mod:`fgcam.stats`: ``n_resamples`` resamples of the images that
  have every cell of the claim, the same resamples for all its comparisons, seeded). The claim

  - **holds** when every comparison's 95 % interval lies on the claim's side of its threshold (an
    intersection-union test: all parts must be shown, so no multiplicity correction is needed; Berger 1982);
  - **does not hold** when some comparison's *simultaneous* 95 % interval (:func:`fgcam.stats.sup_t_band`, over
    all the claim's comparisons; for one comparison the percentile interval) lies wholly on the wrong side:
    the chance of a false "does not hold" stays at 5 % however many comparisons the claim makes;
  - is **inconclusive** otherwise (some interval straddles its threshold), and always with fewer than
    :data:`MIN_IMAGES` images;
  - is **not measurable in this profile** when a cell the rule needs is missing.

  The claim's ``interval`` is the one of its *critical* comparison: the one furthest on the wrong side of its
  threshold in units of its bootstrap standard error (for a claim that holds, the closest call).
* **point values** (the paper's published tables, ``published_tables.csv`` / :func:`fgcam.experiments.published_rows`,
  or a summary without per-image data): the same comparisons on the point values; the verdict is "holds" or
  "does not hold" (no interval). Every table claim must hold on the paper's own numbers (tested), so a rule
  cannot be stricter than the paper.

Each verdict also lists the metrics that are *saturated* among the claim's cells (:mod:`fgcam.stats`: half of a
cell's images at the metric's bound, or no two methods' intervals apart): a claim that is not shown on a
saturated metric says more about the metric than about the methods.

The thresholds that turn the paper's words into numbers ("almost unaffected", "almost no change",
"significantly better") are stated in each claim's ``rule`` text. The figure claims (Figures 1, 3, 4 and the
denoising and "any CAM method" statements of the text) are measured live; the functions that compute their
per-image rows (:func:`figure1_rows` ...) are here too, so that every chapter measures them the same way, on the
same images (:func:`figure_images`, :func:`two_object_images`, :func:`figure4_images`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fgcam import stats

HIDDEN = ("Layer33", "Layer23", "Layer13")
CAM = ("Grad-CAM", "Score-CAM", "Layer-CAM")
FG = ("FG-Grad-CAM", "FG-Grad-CAMD", "FG-Score-CAM", "FG-Score-CAMD")
FG_PLAIN = ("FG-Grad-CAM", "FG-Score-CAM")
LRPS = ("LRP", "CLRP", "SGLRP")
VERDICTS = ("holds", "does not hold", "inconclusive", "not measurable in this profile")
#: Fewer images than this: the verdict is "inconclusive" whatever the intervals say. The percentile bootstrap
#: undercovers on tiny samples (with 4 images, 4 positive differences give an interval above 0 one time in 16
#: even when the methods are equal), so a handful of live images cannot decide a claim.
MIN_IMAGES = 10
_OPS = {">": ">", ">=": ">", "<": "<", "<=": "<"}


class Missing(KeyError):
    """A value the rule needs is not in the results."""


@dataclass(frozen=True)
class Comparison:
    """One compared quantity: ``weights . means(cells)`` (or ``fn(means)``) ``op`` ``threshold``.

    ``cells`` are ``(layer, metric, method)``; ``fn`` receives the cells' means with shape ``(..., len(cells))``
    (a bootstrap passes all resamples at once) and returns ``(...)``.
    """

    label: str
    cells: tuple[tuple[str, str, str], ...]
    weights: tuple[float, ...] | None = None
    op: str = ">"
    threshold: float = 0.0
    fn: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self):
        if self.op not in _OPS:
            raise ValueError(f"comparison {self.label!r}: op must be one of {sorted(_OPS)}, got {self.op!r}")
        if self.fn is None and (self.weights is None or len(self.weights) != len(self.cells)):
            raise ValueError(f"comparison {self.label!r}: needs fn or one weight per cell")

    def value(self, means: np.ndarray) -> np.ndarray:
        means = np.asarray(means, dtype=np.float64)
        return self.fn(means) if self.fn is not None else means @ np.asarray(self.weights, dtype=np.float64)

    @property
    def need(self) -> str:
        return f"{self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Claim:
    """One claim: an id, the table (1-6) or figure (``"F1"`` ...) it rests on, the paper's words, our rule in
    words, and the rule as comparisons."""

    id: str
    table: int | str
    paper: str
    rule: str
    comparisons: tuple[Comparison, ...]

    @property
    def cells(self) -> list[tuple[str, str, str]]:
        return list(dict.fromkeys(c for comp in self.comparisons for c in comp.cells))

    @property
    def is_figure(self) -> bool:
        return isinstance(self.table, str)


# ----------------------------------------------------------------------------------------------------------------
# Building blocks of the rules
# ----------------------------------------------------------------------------------------------------------------

def _diff(layer, metric, a, b, op=">", threshold=0.0, label=None) -> Comparison:
    """``mean(a) - mean(b)`` at ``(layer, metric)``, paired over images."""
    return Comparison(label or f"{a} - {b}, {metric}, {layer}", ((layer, metric, a), (layer, metric, b)), (1.0, -1.0),
                      op, threshold)


def _better(layer, metric, a, b, lower) -> Comparison:
    """``a`` beats ``b``: a lower value when ``lower``, else a higher one."""
    return _diff(layer, metric, a, b, "<" if lower else ">")


def _fg_beats(bases, layers, metrics, fgs=FG) -> tuple[Comparison, ...]:
    return tuple(_better(la, m, fg, b, lower) for la in layers for m, lower in metrics for fg in fgs for b in bases)


def _range_ratio(m: np.ndarray) -> np.ndarray:
    """cells = base at Layer33/23/13, then FG at Layer33/23/13: FG range - 1/4 of the base's range."""
    return np.ptp(m[..., 3:6], axis=-1) - 0.25 * np.ptp(m[..., 0:3], axis=-1)


def _flat_vs_growing() -> tuple[Comparison, ...]:
    out = []
    for base in ("Grad-CAM", "Score-CAM"):
        for shallow, deep in (("Layer23", "Layer33"), ("Layer13", "Layer23")):
            out.append(Comparison(f"{base} AD {shallow} - {deep}",
                                  ((shallow, "average_drop_pct", base), (deep, "average_drop_pct", base)),
                                  (1.0, -1.0), ">", 0.0))
        cells = tuple((la, "average_drop_pct", m) for m in (base, "FG-" + base) for la in HIDDEN)
        out.append(Comparison(f"AD range of FG-{base} over the layers - 1/4 of {base}'s", cells, None, "<", 0.0,
                              _range_ratio))
    return tuple(out)


def _denoise_no_worse(limit, layers) -> tuple[Comparison, ...]:
    """AD may rise and AI may fall by at most ``limit`` points when denoising (improvements are fine)."""
    out = []
    for la in layers:
        for b in ("FG-Grad-CAM", "FG-Score-CAM"):
            out.append(_diff(la, "average_drop_pct", b + "D", b, "<=", limit))
            out.append(_diff(la, "average_increase_pct", b, b + "D", "<=", limit))
    return tuple(out)


def _denoise_helps(layers, metric, margin, bases=("FG-Grad-CAM", "FG-Score-CAM")) -> tuple[Comparison, ...]:
    return tuple(_diff(la, metric, b + "D", b, ">=" if margin else ">", margin) for la in layers for b in bases)


def _input_localisation() -> tuple[Comparison, ...]:
    out = [_better("Input", "energy_proportion", fg, b, False) for fg in ("FG-Grad-CAMD", "FG-Score-CAMD")
           for b in LRPS]
    out += [_better("Input", "energy_proportion", fg, "LRP", False) for fg in ("FG-Grad-CAM", "FG-Score-CAM")]
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------------
# The claims
# ----------------------------------------------------------------------------------------------------------------

#: The claims about Tables 1-6 (checked on the results store and on the published numbers).
CLAIMS: list[Claim] = [
    Claim("T1-faithful", 1, "FG-CAM outperforms CAM-based methods in shallow and intermediate layers (AD/AI).",
          "at Layer33/23/13 every FG method (with and without D) has a lower AD and a higher AI than Grad-CAM, "
          "Score-CAM and Layer-CAM",
          _fg_beats(CAM, HIDDEN, [("average_drop_pct", True), ("average_increase_pct", False)])),
    Claim("T1-resolution", 1, "The performance of FG-CAM is almost unaffected by the explanation resolution.",
          "Grad-CAM's and Score-CAM's AD grow from Layer33 to Layer23 to Layer13, and the FG version's AD varies "
          "over the three layers by less than a quarter of the base method's variation", _flat_vs_growing()),
    Claim("T1-denoise", 1, "FG-CAM with denoising ... with almost no change in explanation faithfulness.",
          "at every hidden layer, denoising raises the AD and lowers the AI of FG-Grad-CAM and FG-Score-CAM by at "
          "most 3 percentage points (improvements are allowed)", _denoise_no_worse(3.0, HIDDEN)),
    Claim("T2-overall", 2, "FG-CAM outperforms CAM-based methods in the deletion and insertion tests.",
          "at Layer33/23/13 every FG method has a higher Over-all (insertion - deletion) than Grad-CAM, "
          "Score-CAM and Layer-CAM", _fg_beats(CAM, HIDDEN, [("overall", False)])),
    Claim("T3-localisation", 3, "FG-CAM performs better than other methods in the energy-based pointing game.",
          "at Layer33/23/13 every FG method has a higher energy proportion than Grad-CAM, Score-CAM, Layer-CAM",
          _fg_beats(CAM, HIDDEN, [("energy_proportion", False)])),
    Claim("T3-denoise", 3, "FG-CAM with denoising performs significantly better than the original FG-CAM.",
          "at Layer33/23/13 denoising raises the energy proportion by at least 0.05",
          _denoise_helps(HIDDEN, "energy_proportion", 0.05)),
    Claim("T4-faithful", 4, "FG-CAM is significantly better than LRP, CLRP and SGLRP in every metric (AD/AI).",
          "at the input every FG method has a lower AD and a higher AI than LRP, CLRP and SGLRP",
          _fg_beats(LRPS, ("Input",), [("average_drop_pct", True), ("average_increase_pct", False)])),
    Claim("T5-overall", 5, "In the deletion and insertion tests FG-CAM still outperforms other methods.",
          "at the input every FG method has a higher Over-all than LRP, CLRP and SGLRP",
          _fg_beats(LRPS, ("Input",), [("overall", False)])),
    Claim("T6-localisation", 6, "The value of FG-CAM with denoising is significantly higher than that of others. "
          "FG-CAM is also better than LRP.",
          "at the input FG-Grad-CAMD and FG-Score-CAMD have a higher energy proportion than LRP, CLRP and SGLRP, "
          "and FG-Grad-CAM and FG-Score-CAM a higher one than LRP", _input_localisation()),
]

#: The claims about the figures and the text, measured live (per-image rows from the functions below).
FIGURE_CLAIMS: list[Claim] = [
    Claim("F1-shallow", "F1",
          "Figure 1: as the target layer becomes shallower, Grad-CAM and Score-CAM diminish the explanation "
          "accuracy significantly; Layer-CAM becomes more noisy and less accurate, while FG-Grad-CAM and "
          "FG-Score-CAM still show good performance.",
          "share of the map's energy inside the object's mask (mask_energy; the box on the paper profile), on "
          "figure_images: Grad-CAM, Score-CAM and Layer-CAM have less of it at Layer13 than at Layer33, and at "
          "Layer13 FG-Grad-CAM and FG-Score-CAM have more of it than each of Grad-CAM, Score-CAM and Layer-CAM",
          tuple(Comparison(f"{b} mask energy Layer13 - Layer33",
                           (("Layer13", "mask_energy", b), ("Layer33", "mask_energy", b)), (1.0, -1.0), "<", 0.0)
                for b in CAM)
          + _fg_beats(CAM, ("Layer13",), [("mask_energy", False)], FG_PLAIN)),
    Claim("F3-discriminative", "F3",
          "Figure 3: as the target layer becomes shallower, other methods diminish the explanation accuracy "
          "significantly, while FG-CAM still performs very well; at the same resolution FG-CAM performs "
          "significantly better than other methods.",
          "on two_object_images, each explained for the class of either object: the class gap (energy of the map "
          "for A in A's mask minus in B's mask, and the same for B, averaged) is positive for FG-Grad-CAM and "
          "FG-Score-CAM at Layer33/23/13 and the input, and at each hidden layer larger than the gap of "
          "Grad-CAM, Score-CAM and Layer-CAM",
          tuple(Comparison(f"{fg} class gap, {la}", ((la, "class_gap", fg),), (1.0,), ">", 0.0)
                for fg in FG_PLAIN for la in HIDDEN + ("Input",))
          + _fg_beats(CAM, HIDDEN, [("class_gap", False)], FG_PLAIN)),
    Claim("F4-lrp", "F4",
          "Figure 4: LRP is not class-discriminative; CLRP and SGLRP remove important regions of the target and "
          "even regard them as negatively contributing; FG-CAM removes the non-target class without removing "
          "important parts.",
          "on figure4_images (two objects, explained for the predicted one), at the input: CLRP and SGLRP have a "
          "larger share of negative relevance inside the target's mask (neg_share_target) than FG-Grad-CAM and "
          "FG-Score-CAM, and LRP puts a larger share of its positive relevance on the other object (pos_other) "
          "than FG-Grad-CAM and FG-Score-CAM",
          tuple(_better("Input", "neg_share_target", b, fg, False) for b in ("CLRP", "SGLRP") for fg in FG_PLAIN)
          + tuple(_better("Input", "pos_other", "LRP", fg, False) for fg in FG_PLAIN)),
    Claim("F4-denoise", "F1",
          "FG-CAM with denoising focuses more attention on the target class and removes a lot of noise.",
          "on figure_images, at the input, FG-Grad-CAMD and FG-Score-CAMD have more of their energy inside the "
          "object's mask (the box on the paper profile) than FG-Grad-CAM and FG-Score-CAM",
          _denoise_helps(("Input",), "mask_energy", 0.0)),
    Claim("any-cam", "ANY",
          "FG-CAM can be combined with any CAM-based method (generality).",
          "on figure_images, for Grad-CAM, Grad-CAM++, XGrad-CAM and Layer-CAM, the FG version at features.13 has a "
          "higher Over-all (insertion - deletion) than the base method there (Score-CAM: claim T2-overall)",
          tuple(_better("features.13", "overall", "fg-" + b, b, False)
                for b in ("grad-cam", "grad-cam++", "xgrad-cam", "layer-cam"))),
]

ALL_CLAIMS: list[Claim] = CLAIMS + FIGURE_CLAIMS


def get(claim_id: str) -> Claim:
    """The claim with this id (``"T1-faithful"``, ``"F1-shallow"`` ...)."""
    for c in ALL_CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}; claims: {', '.join(c.id for c in ALL_CLAIMS)}")


def measured_part(claim: Claim, rows) -> Claim | None:
    """The part of ``claim`` that ``rows`` can decide: its comparisons whose cells all have values in ``rows``, as
    a claim with id ``"<id> (measured part)"`` and a rule that says how many comparisons it keeps; ``None`` when
    none is measurable, ``claim`` itself when all are.  For a store that ran only some of the paper's methods (the
    real profile on CPU: no Score-CAM family): the claim's verdict stays "not measurable", this part's verdict says
    what the measured methods show, never more."""
    point, per = _gather(rows, claim.table)
    have = set(per or point)
    kept = tuple(c for c in claim.comparisons if all(cell in have for cell in c.cells))
    if len(kept) == len(claim.comparisons):
        return claim
    if not kept:
        return None
    methods = sorted({m for c in kept for _, _, m in c.cells})
    return Claim(f"{claim.id} (measured part)", claim.table, claim.paper,
                 f"{len(kept)} of the rule's {len(claim.comparisons)} comparisons, those between "
                 f"{', '.join(methods)}: " + claim.rule, kept)


# ----------------------------------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------------------------------

def _gather(rows, table):
    """-> ({cell: point value}, {cell: {image_id: value}}) for ``table``'s rows."""
    return _gather_all(rows, {str(table)}).get(str(table), ({}, {}))


def _gather_all(rows, tables: set[str]) -> dict[str, tuple[dict, dict]]:
    """:func:`_gather` for several tables in one pass over the rows."""
    out: dict[str, tuple[dict, dict]] = {}
    for r in rows:
        t = str(r["table"])
        if t not in tables:
            continue
        point, per = out.setdefault(t, ({}, {}))
        if "values" in r:  # a row of the results store: several values per (image, method, layer, metric)
            items = r["values"].items()
        else:
            items = [(r["metric"], r.get("value"))]
        for name, v in items:
            if v is None:
                continue
            cell = (r["layer"], name, r["method"])
            if "image_id" in r:
                d = per.setdefault(cell, {})
                if r["image_id"] in d and d[r["image_id"]] != float(v):
                    raise ValueError(f"table {t}: two values for image {r['image_id']} in cell {cell}")
                d[r["image_id"]] = float(v)
            else:
                point[cell] = float(v)
    for _, per in out.values():  # a grid composite's four cells are one resampling unit
        for cell in per:
            per[cell] = stats.cluster_means(per[cell])
    return out


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _cells_text(cells, means) -> str:
    return ", ".join(f"{m} {_fmt(v)}" + (f" ({metric}, {layer})" if len({c[:2] for c in cells}) > 1 else "")
                     for (layer, metric, m), v in zip(cells, means))


def _where(cells) -> str:
    lm = list(dict.fromkeys((c[1], c[0]) for c in cells))
    return f" ({lm[0][0]}, {lm[0][1]})" if len(lm) == 1 else ""


def verdict(claim: Claim, rows, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED,
            level: float = stats.LEVEL, _gathered=None) -> dict:
    """The claim's verdict on ``rows`` (per-image rows: bootstrap; point values: the published-numbers check).

    Returns ``{"id", "table", "paper", "rule", "verdict", "critical", "interval", "outcome", "evidence",
    "comparisons", "n_images", "mode", "saturated"}``: ``critical`` is the label of the deciding comparison and
    ``interval`` its :class:`fgcam.stats.Interval` (``None`` when not measurable; zero width on point values),
    ``outcome`` one line (verdict, critical comparison, its interval),
    ``comparisons`` one dict per comparison (label, estimate, low, high, simultaneous low/high, verdict),
    ``saturated`` the saturated metrics among the claim's cells (texts), ``mode`` ``"per-image"`` or ``"point"``.
    """
    base = {"id": claim.id, "table": claim.table, "paper": claim.paper, "rule": claim.rule}
    point, per = _gathered if _gathered is not None else _gather(rows, claim.table)
    cells = claim.cells
    mode = "per-image" if per else "point"
    have = per if per else point
    missing = [c for c in cells if c not in have]
    if missing:
        la, metric, method = missing[0]
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return {**base, "verdict": VERDICTS[3], "interval": None, "mode": mode, "n_images": None, "critical": None,
                "evidence": f"missing: table {claim.table}: {method} {metric} at {la}{more}",
                "outcome": f"{VERDICTS[3]} (missing: {method} {metric} at {la}{more})", "comparisons": [],
                "saturated": []}
    col = {c: i for i, c in enumerate(cells)}
    idx = [[col[c] for c in comp.cells] for comp in claim.comparisons]
    if mode == "point":
        means = np.array([point[c] for c in cells])
        comps = []
        for comp, ix in zip(claim.comparisons, idx):
            q = float(comp.value(means[ix]))
            v = stats.verdict(stats.Interval.point(q), comp.threshold, comp.op)
            comps.append({"label": comp.label, "estimate": q, "low": q, "high": q, "sim_low": q, "sim_high": q,
                          "threshold": comp.threshold, "op": comp.op, "verdict": v,
                          "text": f"{_cells_text(comp.cells, means[ix])}{_where(comp.cells)}"
                                  + ("" if comp.weights == (1.0, -1.0) else f": {_fmt(q)}, needs {comp.need}")})
        bad = [c for c in comps if c["verdict"] != "holds"]
        v = VERDICTS[1] if bad else VERDICTS[0]
        crit = bad[0] if bad else min(comps, key=lambda c: _margin(c, 1.0))
        evidence = "; ".join(c["text"] for c in bad) if bad else f"all {len(comps)} comparisons hold"
        return {**base, "verdict": v, "interval": stats.Interval.point(crit["estimate"]), "mode": mode,
                "critical": crit["label"],
                "n_images": None, "evidence": evidence, "comparisons": comps, "saturated": [],
                "outcome": f"{v}: {crit['label']} = {_fmt(crit['estimate'])} (needs {crit['op']} "
                           f"{crit['threshold']:g})"}
    # per-image
    ids = set.intersection(*(set(per[c]) for c in cells))
    x = np.array([[per[c][i] for c in cells] for i in sorted(ids)], dtype=np.float64).reshape(len(ids), len(cells))
    finite = np.isfinite(x).all(1)
    dropped = int((~finite).sum())
    x = x[finite]
    n = x.shape[0]
    if n == 0:
        return {**base, "verdict": VERDICTS[3], "interval": None, "mode": mode, "n_images": 0, "critical": None,
                "evidence": "no image has every cell of the claim", "outcome": f"{VERDICTS[3]} (no image has "
                "every cell of the claim)", "comparisons": [], "saturated": []}
    est, boot = stats.bootstrap_means(x, n_resamples, seed)
    q = np.array([float(comp.value(est[ix])) for comp, ix in zip(claim.comparisons, idx)])
    qb = np.stack([comp.value(boot[:, ix]) for comp, ix in zip(claim.comparisons, idx)], axis=1)
    lo, hi = stats.percentile(qb, level)
    if len(q) > 1:
        slo, shi = stats.sup_t_band(qb, q, level)
    else:
        slo, shi = lo, hi
    se = qb.std(axis=0, ddof=1) if n_resamples > 1 else np.zeros_like(q)
    comps = []
    for j, comp in enumerate(claim.comparisons):
        iv = stats.Interval(float(q[j]), float(lo[j]), float(hi[j]), n, level, n_resamples)
        marginal = stats.verdict(iv, comp.threshold, comp.op)
        simultaneous = stats.verdict(stats.Interval(float(q[j]), float(slo[j]), float(shi[j]), n, level,
                                                    n_resamples), comp.threshold, comp.op)
        comps.append({"label": comp.label, "estimate": float(q[j]), "low": float(lo[j]), "high": float(hi[j]),
                      "sim_low": float(slo[j]), "sim_high": float(shi[j]), "se": float(se[j]),
                      "threshold": comp.threshold, "op": comp.op, "verdict": marginal,
                      "simultaneous_verdict": simultaneous,
                      "text": f"{comp.label}: {_fmt(q[j])} [{_fmt(lo[j])}, {_fmt(hi[j])}] (needs {comp.need}; "
                              f"{_cells_text(comp.cells, est[idx[j]])})"})
    failed = [c for c in comps if c["simultaneous_verdict"] == "does not hold"]
    held = [c for c in comps if c["verdict"] == "holds"]
    if n < MIN_IMAGES:
        v = VERDICTS[2]
    elif failed:
        v = VERDICTS[1]
    elif len(held) == len(comps):
        v = VERDICTS[0]
    else:
        v = VERDICTS[2]
    crit = min(comps, key=lambda c: _margin(c, c["se"]))
    interval = stats.Interval(crit["estimate"], crit["low"], crit["high"], n, level, n_resamples)
    summary = (f"{len(held)}/{len(comps)} comparisons hold (95 % intervals), {len(failed)} fail "
               f"(simultaneous 95 %); n = {n} images{f', {dropped} dropped (non-finite)' if dropped else ''}"
               + (f" (fewer than {MIN_IMAGES}: too few to decide)" if n < MIN_IMAGES else ""))
    shown = failed if failed else [c for c in comps if c["verdict"] != "holds"]
    evidence = summary + ("; " + "; ".join(c["text"] for c in shown[:6]) + (" ..." if len(shown) > 6 else "")
                          if shown else "; closest: " + crit["text"])
    return {**base, "verdict": v, "interval": interval, "mode": mode, "n_images": n, "evidence": evidence,
            "critical": crit["label"],
            "comparisons": comps, "saturated": _saturated(cells, per, level),
            "outcome": f"{v}: {crit['label']} = {interval} (needs {crit['op']} {crit['threshold']:g}); {summary}"}


def _margin(c: dict, se: float) -> float:
    """How far a comparison is on the claim's side of its threshold (negative: the wrong side), in units of se."""
    d = c["estimate"] - c["threshold"]
    d = d if _OPS[c["op"]] == ">" else -d
    return d / se if se > 0 else (math.inf if d > 0 else -math.inf if d < 0 else 0.0)


def _saturated(cells, per, level) -> list[str]:
    """Texts for the (layer, metric) columns of the claim's cells that are saturated, judged on *all* the methods
    of the column in the rows (as :func:`fgcam.tables.columns` does): at least half of the methods with half of
    their images at the metric's bound, or no two methods' 95 % intervals disjoint."""
    out = []
    for layer, metric in dict.fromkeys((c[0], c[1]) for c in cells):
        groups: dict[tuple, list[np.ndarray]] = {}  # methods measured on the same images: one bootstrap
        for c in per:
            if c[:2] == (layer, metric):
                ids = tuple(sorted(i for i, v in per[c].items() if math.isfinite(v)))
                if ids:
                    groups.setdefault(ids, []).append(np.array([per[c][i] for i in ids]))
        vals = [v for vs in groups.values() for v in vs]
        if not vals:
            continue
        sats = [stats.saturation(v, metric) for v in vals]
        at = [s for s in sats if s.saturated]
        if sats[0].share_at_bound is not None and len(at) * 2 >= len(vals):
            out.append(f"{metric} at {layer}: {len(at)}/{len(vals)} methods with >= {stats.SATURATED_SHARE:.0%} of "
                       f"images at the bound ({sats[0].rule})")
            continue
        ivs = [iv for vs in groups.values() for iv in stats.bootstrap_ci(np.stack(vs, axis=1), level=level)]
        if len(ivs) > 1 and not stats.separable(ivs):
            out.append(f"{metric} at {layer}: the {len(vals)} methods' 95 % intervals all overlap")
    return out


def verdicts(rows, tables=None, claims: Sequence[Claim] | None = None, **kw) -> list[dict]:
    """Verdicts of every table claim (of the given tables), or of ``claims``, on ``rows``."""
    pool = [c for c in (CLAIMS if claims is None else claims) if tables is None or c.table in tables]
    rows = list(rows)
    gathered = _gather_all(rows, {str(c.table) for c in pool})  # one pass over the rows for all tables
    return [verdict(c, rows, _gathered=gathered.get(str(c.table), ({}, {})), **kw) for c in pool]


def verdict_table(results: Sequence[dict]):
    """A pandas DataFrame of verdicts for display: claim, verdict, estimate and interval of the critical
    comparison, n, saturated metrics."""
    import pandas as pd

    return pd.DataFrame([{
        "claim": r["id"], "verdict": r["verdict"],
        "critical comparison": r["critical"] or "–",
        "estimate": None if r["interval"] is None else r["interval"].estimate,
        "95 % interval": "–" if r["interval"] is None or r["interval"].n is None else
        f"[{_fmt(r['interval'].low)}, {_fmt(r['interval'].high)}]",
        "n": r["n_images"], "saturated": "; ".join(r["saturated"]) or "–"} for r in results]).set_index("claim")


# ----------------------------------------------------------------------------------------------------------------
# Live measurements for the figure claims (same images, same metric in every chapter)
# ----------------------------------------------------------------------------------------------------------------

#: Seed of the images of every figure claim.
FIGURE_SEED = 0
#: Methods and layers the figure claims need.
FIGURE1_METHODS = CAM + FG_PLAIN
FIGURE3_METHODS = CAM + FG_PLAIN
FIGURE4_METHODS = LRPS + FG_PLAIN
PAPER_LAYER_MODULES = {"Layer33": "features.33", "Layer23": "features.23", "Layer13": "features.13", "Input": "input"}


def figure_images(profile, n: int) -> dict:
    """The images of claims F1-shallow, F4-denoise and any-cam: ``n`` localisation images of the profile, seed
    :data:`FIGURE_SEED` (``profile.load_data("localisation", n, seed)``: images, labels, masks, boxes)."""
    return profile.load_data("localisation", n=n, seed=FIGURE_SEED)


def two_object_images(profile, n: int) -> dict | None:
    """The images of claim F3-discriminative: ``fgcam.data.make_shapes(n, FIGURE_SEED, objects=2)`` (two
    objects of different classes, a mask and a label for each); ``None`` on a profile without them (ImageNet)."""
    if profile.name != "offline":
        return None
    import fgcam.data

    return fgcam.data.make_shapes(n, FIGURE_SEED, objects=2)


def figure4_images(model, profile, n: int) -> dict:
    """The images of claim F4-lrp: two-object images (``make_shapes(4 n, seed=7, objects=2)``) whose predicted
    class is one of the two objects, the first ``n`` of them; that object is the target, the other the
    distractor. On the paper profile: ``n`` localisation images, no distractor (``other_mask`` None).

    Returns ``{"images", "target", "target_mask", "other_mask", "names"}`` (CPU tensors).
    """
    import torch

    if profile.name == "offline":
        import fgcam.data

        pool = fgcam.data.make_shapes(4 * n, seed=7, objects=2)
        with torch.no_grad():
            pred = model(pool["images"].to(profile.device)).argmax(1).cpu()
        first, second = pred == pool["labels"], pred == pool["labels2"]
        keep = torch.nonzero(first | second).flatten()[:n]
        if len(keep) == 0:
            raise ValueError("figure4_images: no two-object image is predicted as one of its objects")
        other = torch.where(first[keep], pool["labels2"][keep], pool["labels"][keep])
        return {"images": pool["images"][keep], "target": pred[keep],
                "target_mask": torch.where(first[keep, None, None], pool["masks"][keep], pool["masks2"][keep]),
                "other_mask": torch.where(first[keep, None, None], pool["masks2"][keep], pool["masks"][keep]),
                "names": [f"{pool['classes'][int(t)]} (+{pool['classes'][int(o)]})"
                          for t, o in zip(pred[keep], other)]}
    data = profile.load_data("localisation", n=n, seed=0)
    with torch.no_grad():
        target = model(data["images"].to(profile.device)).argmax(1).cpu()
    return {"images": data["images"], "target": target, "target_mask": data["masks"].bool(), "other_mask": None,
            "names": [f"class {int(t)}" for t in target]}


def _explain(model, images, name, layer, target, explainer=None, shared: dict | None = None):
    """The map of the paper's method ``name`` at ``layer``.  With ``shared`` (a dict kept by the caller for one set
    of images), FG-Score-CAM(D) computes its Score-CAM weights once per target (``shared[target]``) and reuses them
    (:meth:`fgcam.Explainer.weights`; the same maps)."""
    import torch
    from fgcam.experiments import PAPER_METHODS

    method, denoise = PAPER_METHODS[name]
    fn = explainer if explainer is not None else __import__("fgcam").Explainer(model)
    weights = None
    if shared is not None and method == "fg-score-cam":
        key = None if target is None else tuple(torch.as_tensor(target).reshape(-1).tolist())
        if key not in shared:
            shared[key] = fn.weights(images, method, target=target)
        weights = shared[key]
    return fn(images, method, PAPER_LAYER_MODULES.get(layer, layer), target=target, denoise=denoise, weights=weights)


def figure1_maps(model, images, target, explainer=None) -> dict:
    """``{(method, layer): maps}`` for claim F1-shallow: :data:`FIGURE1_METHODS` at Layer33 and Layer13."""
    explainer = explainer if explainer is not None else __import__("fgcam").Explainer(model)
    shared: dict = {}
    return {(m, la): _explain(model, images, m, la, target, explainer, shared) for m in FIGURE1_METHODS
            for la in ("Layer33", "Layer13")}


def _rows(table, values: dict, n: int) -> list[dict]:
    """Long per-image rows ``{"table", "image_id", "layer", "metric", "method", "value"}``."""
    out = []
    for (method, layer, metric), v in values.items():
        v = np.asarray(v.detach().double().cpu() if hasattr(v, "detach") else v, dtype=np.float64).ravel()
        if v.shape[0] != n:
            raise ValueError(f"{table}: {method} {metric} at {layer} has {v.shape[0]} values for {n} images")
        out += [{"table": table, "image_id": str(i), "layer": layer, "metric": metric, "method": method,
                 "value": float(x)} for i, x in enumerate(v)]
    return out


def figure1_rows(maps: dict, masks) -> list[dict]:
    """Per-image rows of claim F1-shallow (and F4-denoise): ``mask_energy`` of every ``(method, layer)`` map in
    ``maps`` against ``masks`` (:func:`fgcam.metrics.mask_energy`)."""
    from fgcam.metrics import mask_energy

    n = len(masks)
    return _rows("F1", {(m, la, "mask_energy"): mask_energy(s, masks) for (m, la), s in maps.items()}, n)


def figure3_maps(model, images, target_a, target_b, explainer=None) -> dict:
    """``{(method, layer, "A"/"B"): maps}`` for claim F3-discriminative: :data:`FIGURE3_METHODS` at the hidden
    layers (the FG methods also at the input), explained for class A and for class B."""
    explainer = explainer if explainer is not None else __import__("fgcam").Explainer(model)
    out, shared = {}, {}
    for m in FIGURE3_METHODS:
        for la in HIDDEN + (("Input",) if m in FG_PLAIN else ()):
            for cls, t in (("A", target_a), ("B", target_b)):
                out[m, la, cls] = _explain(model, images, m, la, t, explainer, shared)
    return out


def figure3_rows(maps: dict, mask_a, mask_b) -> list[dict]:
    """Per-image rows of claim F3-discriminative: ``class_gap`` = ((E_A(A) - E_A(B)) + (E_B(B) - E_B(A))) / 2,
    E_X(Y) = share of the energy of the map for class X inside object Y's mask, for every (method, layer) that
    has both maps."""
    from fgcam.metrics import mask_energy

    vals = {}
    for (m, la, cls), a in maps.items():
        if cls != "A" or (m, la, "B") not in maps:
            continue
        b = maps[m, la, "B"]
        vals[m, la, "class_gap"] = 0.5 * ((mask_energy(a, mask_a) - mask_energy(a, mask_b))
                                          + (mask_energy(b, mask_b) - mask_energy(b, mask_a)))
    return _rows("F3", vals, len(mask_a))


def figure4_maps(model, images, target, methods=FIGURE4_METHODS, explainer=None) -> dict:
    """``{method: maps}`` at the input for claim F4-lrp (signed maps, in batches of 8)."""
    import torch

    return {m: torch.cat([_explain(model, images[i:i + 8], m, "Input", target[i:i + 8], explainer).detach().cpu()
                          for i in range(0, len(images), 8)]) for m in methods}


def _share(num, den):
    import torch

    return torch.where(den > 0, num / den.clamp(min=1e-30), torch.zeros_like(num))


def figure4_measures(maps: dict, target_mask, other_mask=None) -> dict:
    """Per method, per image: ``pos_target`` / ``pos_other`` (share of the positive relevance inside the
    target's / the other object's mask), ``neg_share_target`` (sum over the target mask of max(0, -R) / of |R|)
    and ``target_negative`` (neg_share_target > 0.5). ``{method: {measure: tensor [N]}}``."""
    out = {}
    for name, m in maps.items():
        m = m.detach().cpu().double()
        pos, neg = m.clamp(min=0), (-m).clamp(min=0)
        tm = target_mask.to(m.dtype)
        neg_share = _share((neg * tm).sum((1, 2)), (m.abs() * tm).sum((1, 2)))
        d = {"pos_target": _share((pos * tm).sum((1, 2)), pos.sum((1, 2))), "neg_share_target": neg_share,
             "target_negative": (neg_share > 0.5).double()}
        if other_mask is not None:
            d["pos_other"] = _share((pos * other_mask.to(m.dtype)).sum((1, 2)), pos.sum((1, 2)))
        out[name] = d
    return out


def figure4_rows(measures: dict) -> list[dict]:
    """Per-image rows of claim F4-lrp from :func:`figure4_measures`."""
    n = len(next(iter(next(iter(measures.values())).values())))
    return _rows("F4", {(m, "Input", k): v for m, d in measures.items() for k, v in d.items()}, n)


def denoise_rows(model, images, masks, target=None, explainer=None) -> list[dict]:
    """Per-image rows of claim F4-denoise: mask energy at the input of FG-Grad-CAM(D) and FG-Score-CAM(D) (rows
    of table ``"F1"``, like :func:`figure1_rows`: the same images and metric)."""
    from fgcam.metrics import mask_energy

    explainer = explainer if explainer is not None else __import__("fgcam").Explainer(model)
    shared: dict = {}
    vals = {(m, "Input", "mask_energy"): mask_energy(_explain(model, images, m, "Input", target, explainer, shared),
                                                     masks)
            for m in ("FG-Grad-CAM", "FG-Grad-CAMD", "FG-Score-CAM", "FG-Score-CAMD")}
    return _rows("F1", vals, len(masks))


def any_cam_rows(model, images, target=None, layer: str = "features.13") -> list[dict]:
    """Per-image rows of claim any-cam: Over-all (:func:`fgcam.metrics.insertion_deletion`, protocol
    ``fgcam-paper``) of Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM and their FG versions at ``layer``."""
    import fgcam
    from fgcam import metrics as M

    vals = {}
    for b in ("grad-cam", "grad-cam++", "xgrad-cam", "layer-cam"):
        for m in (b, "fg-" + b):
            s = fgcam.explain(model, images, m, layer, target=target)
            vals[m, layer, "overall"] = M.insertion_deletion(model, images, s, target=target)["overall"]
    return _rows("ANY", vals, len(images))
