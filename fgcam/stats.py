"""Bootstrap intervals over images, verdicts against a threshold, and saturation of a metric.

Every number of the book's tables is a mean over images; its uncertainty is the spread of that mean when the
images are drawn again. The nonparametric bootstrap estimates it by resampling the images with replacement
(Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 6) and takes the percentile interval of the
resampled statistic (ibid., ch. 13): the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
``n_resamples`` bootstrap replications.

Comparisons of two methods are *paired*: both were measured on the same images, so one resample draws images,
not values, and the statistic is computed from both methods' values on the drawn images (Efron & Tibshirani
1993, ch. 6-7 for resampling the data units as a whole). The differences between two methods on the same image
are usually much less variable than either method alone, so the paired interval is narrower than an unpaired one
(one that resamples each method's images independently); :func:`paired_bootstrap` offers both.

A claim that compares several quantities at once ("every FG method beats every CAM method at every layer") is
judged by :func:`fgcam.claims.verdict` with two rules, stated there: it *holds* when each quantity's marginal
interval lies on the claim's side (an intersection-union test: the joint claim is accepted only if every part
is, which keeps the error rate of "holds" at the per-part level without a multiplicity correction; Berger 1982,
*Technometrics* 24: 295-300), and it *does not hold* when some quantity's *simultaneous* interval lies on the
wrong side (:func:`sup_t_band`: bootstrap sup-t band, Montiel Olea & Plagborg-Moller 2019, *J. Applied
Econometrics* 34: 1-17), which keeps the rate of false "does not hold" at ``1 - level`` over all the parts.

Everything is vectorised with numpy: the resamples are a ``(n_resamples, n_images)`` matrix of counts (how often
each image is drawn), and the means of ``k`` quantities are one matrix product ``counts @ values / n``. 2,000
resamples of 1,000 images x 100 cells take well under a second.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

__all__ = ["Interval", "resample_counts", "bootstrap_means", "bootstrap_ci", "paired_bootstrap", "percentile",
           "sup_t_band", "verdict", "VERDICTS", "Saturation", "SATURATION_RULES", "SATURATED_SHARE", "saturation",
           "separable", "cluster_id", "cluster_means",
           "N_RESAMPLES", "LEVEL", "SEED"]

#: Defaults of every interval in the book.
N_RESAMPLES = 2000
LEVEL = 0.95
SEED = 0

#: What :func:`verdict` answers (``fgcam.claims.VERDICTS`` adds "not measurable in this profile").
VERDICTS = ("holds", "does not hold", "inconclusive")


class Interval(NamedTuple):
    """A point estimate with its bootstrap percentile interval, and what it was computed from."""

    estimate: float
    low: float
    high: float
    n: int | None = None  # images (None: a published number, no per-image data)
    level: float = LEVEL
    n_resamples: int = 0  # 0: a point value, the interval has width 0

    def __str__(self) -> str:
        if self.n is None or self.n_resamples == 0:
            return f"{self.estimate:.4g}"
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"

    @classmethod
    def point(cls, value: float) -> "Interval":
        """A number without per-image data (a published value): zero-width interval."""
        v = float(value)
        return cls(v, v, v, None, LEVEL, 0)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _as_2d(values, name="values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be 1-D (images) or 2-D (images x quantities), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: a bootstrap needs at least one image")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{name} holds a non-finite value at image {bad[0]}, column {bad[1] if x.shape[1] > 1 else 0}")
    return x


_GRID_CELL = re.compile(r"^(grid-s\d+-\d+)-c\d+$")


def cluster_id(image_id: str) -> str:
    """The resampling unit of an item.  The four cells of a grid composite (ids ``grid-s{seed}-{k}-c{c}``,
    :class:`fgcam.real.GridSource`) share one image, so they are not independent draws: they form one unit,
    ``grid-s{seed}-{k}`` (a cluster bootstrap, Davison & Hinkley 1997, *Bootstrap Methods and their Application*,
    sec. 3.8).  Every other id is its own unit."""
    m = _GRID_CELL.match(image_id)
    return m.group(1) if m else image_id


def cluster_means(values: dict[str, float]) -> dict[str, float]:
    """``{image_id: value}`` -> ``{unit: mean of its values}`` (:func:`cluster_id`), in first-seen order.  With equal
    cluster sizes the mean over units equals the mean over items, and resampling units keeps the cells of a
    composite together."""
    sums: dict[str, list[float]] = {}
    for k, v in values.items():
        sums.setdefault(cluster_id(k), []).append(float(v))
    return {k: math.fsum(v) / len(v) for k, v in sums.items()}


def resample_counts(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``(n_resamples, n)`` int matrix: how often each of ``n`` images is drawn in each resample (each row sums to
    ``n``; Efron & Tibshirani 1993, ch. 6). Seeded: the same ``(n, n_resamples, seed)`` give the same
    matrix."""
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need n >= 1 images and n_resamples >= 1, got n={n}, n_resamples={n_resamples}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = (idx + (np.arange(n_resamples) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n)


@functools.lru_cache(maxsize=8)
def _cached_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    c = resample_counts(n, n_resamples, seed).astype(np.float64)
    c.setflags(write=False)
    return c


def bootstrap_means(values, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                    counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Means of each column of ``values`` (images x quantities) and their ``(n_resamples, k)`` bootstrap
    replications, all columns resampled with the *same* images (paired).

    The values are centred on the first image's before the matrix product, so constant columns give exactly
    constant replications (a zero-width interval) and large offsets lose no precision.
    """
    x = _as_2d(values)
    n = x.shape[0]
    if counts is None:  # the same (n, n_resamples, seed) always give the same matrix: computed once
        counts = _cached_counts(n, n_resamples, seed)
    elif counts.shape[1] != n:
        raise ValueError(f"counts has {counts.shape[1]} columns for {n} images")
    ref = x[0]
    d = x - ref
    est = ref + d.sum(0) / n
    boot = ref + (counts @ d) / n
    return est, boot


def percentile(boot: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval (Efron & Tibshirani 1993, ch. 13) of bootstrap replications along axis 0."""
    _check_level(level)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def bootstrap_ci(values, n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = LEVEL,
                 statistic: Callable[[np.ndarray], np.ndarray] | None = None):
    """Percentile bootstrap interval of the mean (or ``statistic``) of ``values`` over images.

    ``values``: 1-D (one quantity per image) -> one :class:`Interval`; 2-D (images x quantities) -> a list, one
    per column, every column resampled with the same images. ``statistic(x)`` must reduce along the last axis
    (``np.median``-like with ``axis=-1`` applied for you); the default, the mean, uses the fast count matrix.
    """
    _check_level(level)
    x = _as_2d(values)
    n = x.shape[0]
    if statistic is None:
        est, boot = bootstrap_means(x, n_resamples, seed)
    else:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_resamples, n))
        est = np.array([float(statistic(x[:, j])) for j in range(x.shape[1])])
        boot = np.stack([np.apply_along_axis(statistic, -1, x[:, j][idx]) for j in range(x.shape[1])], axis=1)
    lo, hi = percentile(boot, level)
    out = [Interval(float(e), float(a), float(b), n, level, n_resamples) for e, a, b in zip(est, lo, hi)]
    return out[0] if np.ndim(values) == 1 else out


def paired_bootstrap(a, b, statistic: Callable[[np.ndarray, np.ndarray], float] | None = None,
                     n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = LEVEL,
                     paired: bool = True) -> Interval:
    """Interval of ``statistic(a, b)`` (default: ``mean(a) - mean(b)``) for two methods measured on the same images.

    ``a[i]`` and ``b[i]`` must belong to the same image (pair the rows by ``image_id`` first). ``paired=True``
    resamples images (both values of an image together); ``paired=False`` resamples ``a`` and ``b``
    independently, which ignores the pairing and is only there to show the difference. ``statistic(a, b)``
    receives the resampled 1-D arrays.
    """
    _check_level(level)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired values need two 1-D arrays of the same length, got shapes {a.shape} and {b.shape}")
    n = a.shape[0]
    if statistic is None:
        if paired:
            est, boot = bootstrap_means(a - b, n_resamples, seed)
        else:
            ea, ba = bootstrap_means(a, n_resamples, seed)
            eb, bb = bootstrap_means(b, n_resamples, seed + 1)
            est, boot = ea - eb, ba - bb
        est, boot = float(est[0]), boot[:, 0]
    else:
        rng = np.random.default_rng(seed)
        ia = rng.integers(0, n, size=(n_resamples, n))
        ib = ia if paired else np.random.default_rng(seed + 1).integers(0, n, size=(n_resamples, n))
        est = float(statistic(a, b))
        boot = np.array([statistic(a[i], b[j]) for i, j in zip(ia, ib)], dtype=np.float64)
    lo, hi = percentile(boot, level)
    return Interval(est, float(lo), float(hi), n, level, n_resamples)


def sup_t_band(boot: np.ndarray, estimate: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous intervals for ``k`` quantities from their paired bootstrap replications ``(B, k)``.

    ``estimate +- c * se``, with ``se`` the bootstrap standard error of each quantity (Efron & Tibshirani 1993,
    ch. 6) and ``c`` the ``level`` quantile of ``max_j |boot_j - estimate_j| / se_j`` over the resamples: all
    ``k`` intervals cover their quantities together with probability about ``level`` (sup-t band, Montiel Olea &
    Plagborg-Moller 2019). Quantities with ``se = 0`` get a zero-width interval.
    """
    _check_level(level)
    boot = np.asarray(boot, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    se = boot.std(axis=0, ddof=1) if boot.shape[0] > 1 else np.zeros_like(est)
    live = se > 0
    if not live.any():
        return est.copy(), est.copy()
    z = np.abs(boot[:, live] - est[live]) / se[live]
    c = float(np.quantile(z.max(axis=1), level))
    return est - c * se, est + c * se


_DIRECTIONS = {">": ">", ">=": ">", "greater": ">", "<": "<", "<=": "<", "less": "<"}


def verdict(interval, threshold: float = 0.0, direction: str = ">") -> str:
    """``"holds"`` when the whole interval lies on the claim's side of ``threshold``, ``"does not hold"`` when it
    lies wholly on the other side, ``"inconclusive"`` when it straddles (or touches) the threshold.

    ``interval``: an :class:`Interval` or ``(low, high)``; ``direction``: ``">"`` (``"greater"``) for a claim
    "quantity > threshold", ``"<"`` (``"less"``) for "quantity < threshold". A zero-width interval of a
    published value (an :class:`Interval` without images, :meth:`Interval.point`, or a plain ``(low, high)``
    pair) decides on the point: ``holds`` or ``does not hold`` (a value equal to the threshold: ``holds`` for
    ``">="``/``"<="``, otherwise ``does not hold``). A zero-width interval from a *sample* (an :class:`Interval`
    with ``n`` images: every image gave the same value, so the bootstrap has no spread) is not a point: one
    that touches the threshold is ``inconclusive`` like any other (16 images that all tie say little about the
    next 16), one wholly on a side decides as usual.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(_DIRECTIONS)}, got {direction!r}")
    lo, hi = (interval.low, interval.high) if isinstance(interval, Interval) else map(float, interval)
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"interval ({lo}, {hi}) holds NaN")
    if lo > hi:
        raise ValueError(f"interval ({lo}, {hi}): low > high")
    t = float(threshold)
    sampled = isinstance(interval, Interval) and interval.n is not None
    if lo == hi and not sampled:  # a published value: no sampling uncertainty to respect
        v = lo
        if v == t:
            return VERDICTS[0] if direction in (">=", "<=") else VERDICTS[1]
        return VERDICTS[0] if (v > t) == (_DIRECTIONS[direction] == ">") else VERDICTS[1]
    if _DIRECTIONS[direction] == ">":
        return VERDICTS[0] if lo > t else VERDICTS[1] if hi < t else VERDICTS[2]
    return VERDICTS[0] if hi < t else VERDICTS[1] if lo > t else VERDICTS[2]


# ----------------------------------------------------------------------------------------------------------------
# Saturation
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Bound:
    bound: float
    tolerance: float
    text: str

    def at(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x - self.bound) <= self.tolerance


#: Per metric, the bound an image's value can reach and how close counts as "at" it. A cell is saturated when at
#: least :data:`SATURATED_SHARE` of its images are at the bound: the metric then says little about the map
#: (AD ~ 0 means the kept half of the image already gives the full score, whatever the map marked).
SATURATION_RULES = {
    "average_drop_pct": _Bound(0.0, 1.0, "AD <= 1 %"),
    "insertion": _Bound(1.0, 0.05, "insertion >= 0.95"),
    "deletion": _Bound(0.0, 0.05, "deletion <= 0.05"),
    "overall": _Bound(1.0, 0.05, "Over-all >= 0.95"),
    "energy_proportion": _Bound(1.0, 0.05, "energy >= 0.95"),
    "mask_energy": _Bound(1.0, 0.05, "mask energy >= 0.95"),
}
SATURATED_SHARE = 0.5


class Saturation(NamedTuple):
    """Whether a metric's per-image values sit at the metric's bound (see :data:`SATURATION_RULES`)."""

    saturated: bool
    share_at_bound: float | None  # None: the metric has no bound rule (e.g. AI, a 0/100 indicator per image)
    rule: str

    def __str__(self) -> str:
        if self.share_at_bound is None:
            return f"no bound rule ({self.rule})"
        return f"{'saturated' if self.saturated else 'not saturated'}: {self.share_at_bound:.0%} of images with {self.rule}"


def saturation(values, metric: str) -> Saturation:
    """Is ``metric`` saturated on these per-image ``values``: at least half of them at the metric's bound?

    ``average_increase_pct`` (0 or 100 per image) has no bound: its saturation shows only as methods that cannot
    be separated (:func:`separable`).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"no values for metric {metric!r}")
    rule = SATURATION_RULES.get(metric)
    if rule is None:
        return Saturation(False, None, f"{metric} has no bound; only the separation of methods tells")
    share = float(rule.at(x[np.isfinite(x)]).mean()) if np.isfinite(x).any() else float("nan")
    return Saturation(bool(share >= SATURATED_SHARE), share, rule.text)


def separable(intervals: Sequence[Interval]) -> bool:
    """Can the methods of one table column be told apart: are at least two of their intervals disjoint?

    ``False`` means the spread of the method means lies inside the intervals (max of the lows <= min of the
    highs): on this profile the metric does not separate the methods at this sample size.
    """
    if len(intervals) < 2:
        return False
    return max(i.low for i in intervals) > min(i.high for i in intervals)
