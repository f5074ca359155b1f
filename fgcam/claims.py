"""The paper's quantitative claims, each as a check over a table of results, with a three-way verdict.

A claim is the paper's sentence plus a rule over the long-format results (``table, layer, metric, method, value``
rows, as :func:`fgcam.experiments.summarize` returns them and ``published_tables.csv`` holds them).
:func:`verdict` answers ``"holds"``, ``"does not hold"`` or ``"not measurable in this profile"`` (a row the rule
needs is missing), with the numbers that decided it.  Every rule is also checked against the paper's own
published numbers (the tests require each claim to hold there), so a rule cannot be stricter than the paper.

The thresholds that turn the paper's words into numbers ("almost unaffected", "almost no change",
"significantly better") are stated in each claim's ``rule`` text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

HIDDEN = ("Layer33", "Layer23", "Layer13")
CAM = ("Grad-CAM", "Score-CAM", "Layer-CAM")
FG = ("FG-Grad-CAM", "FG-Grad-CAMD", "FG-Score-CAM", "FG-Score-CAMD")
LRPS = ("LRP", "CLRP", "SGLRP")
VERDICTS = ("holds", "does not hold", "not measurable in this profile")


class Missing(KeyError):
    """A value the rule needs is not in the results."""


@dataclass(frozen=True)
class Claim:
    """One claim: an id, the table it rests on, the paper's words, our rule, and the rule as code."""

    id: str
    table: int
    paper: str
    rule: str
    check: Callable[[Callable[[str, str, str], float]], tuple[bool, str]]


def _lookup(rows, table):
    values = {(r["layer"], r["metric"], r["method"]): r["value"] for r in rows if int(r["table"]) == table
              and r.get("value") is not None}

    def get(layer, metric, method):
        try:
            return float(values[(layer, metric, method)])
        except KeyError:
            raise Missing(f"table {table}: {method} {metric} at {layer}") from None
    return get


def _all(pairs):
    """pairs: (ok, text) -> (all ok, the failing texts or a summary)."""
    pairs = list(pairs)
    bad = [t for ok, t in pairs if not ok]
    return (not bad, "; ".join(bad) if bad else f"all {len(pairs)} comparisons hold")


def _better(get, layer, metric, a, b, lower):
    va, vb = get(layer, metric, a), get(layer, metric, b)
    ok = va < vb if lower else va > vb
    return ok, f"{a} {va:.4g} vs {b} {vb:.4g} ({metric}, {layer})"


def _fg_beats(bases, layers, metrics):
    def check(get):
        return _all(_better(get, la, m, fg, b, lower) for la in layers for m, lower in metrics for fg in FG
                    for b in bases)
    return check


def _flat_vs_growing(get):
    out = []
    for base in ("Grad-CAM", "Score-CAM"):
        cam = [get(la, "average_drop_pct", base) for la in HIDDEN]
        fg = [get(la, "average_drop_pct", "FG-" + base) for la in HIDDEN]
        cam_range, fg_range = max(cam) - min(cam), max(fg) - min(fg)
        out.append((cam[0] < cam[1] < cam[2], f"{base} AD {cam[0]:.1f} -> {cam[1]:.1f} -> {cam[2]:.1f} "
                                              "(must grow towards shallower layers)"))
        out.append((fg_range < 0.25 * cam_range, f"FG-{base} AD range {fg_range:.1f} vs {base} {cam_range:.1f} "
                                                  "(must be < 1/4)"))
    return _all(out)


def _denoise_no_worse(limit, layers):
    """AD may rise and AI may fall by at most ``limit`` points when denoising (improvements are fine)."""
    def check(get):
        out = []
        for la in layers:
            for b in ("FG-Grad-CAM", "FG-Score-CAM"):
                dad = get(la, "average_drop_pct", b + "D") - get(la, "average_drop_pct", b)
                dai = get(la, "average_increase_pct", b + "D") - get(la, "average_increase_pct", b)
                out.append((dad <= limit and -dai <= limit, f"{b}D - {b}: AD {dad:+.2f}, AI {dai:+.2f} ({la})"))
        return _all(out)
    return check


def _denoise_helps(layers, margin):
    def check(get):
        return _all((get(la, "energy_proportion", b + "D") - get(la, "energy_proportion", b) >= margin,
                     f"{b}D - {b} = {get(la, 'energy_proportion', b + 'D') - get(la, 'energy_proportion', b):+.3f} "
                     f"({la})") for la in layers for b in ("FG-Grad-CAM", "FG-Score-CAM"))
    return check


def _input_localisation(get):
    out = [_better(get, "Input", "energy_proportion", fg, b, False) for fg in ("FG-Grad-CAMD", "FG-Score-CAMD")
           for b in LRPS]
    out += [_better(get, "Input", "energy_proportion", fg, "LRP", False) for fg in ("FG-Grad-CAM", "FG-Score-CAM")]
    return _all(out)


CLAIMS: list[Claim] = [
    Claim("T1-faithful", 1, "FG-CAM outperforms CAM-based methods in shallow and intermediate layers (AD/AI).",
          "at Layer33/23/13 every FG method (with and without D) has a lower AD and a higher AI than Grad-CAM, "
          "Score-CAM and Layer-CAM",
          _fg_beats(CAM, HIDDEN, [("average_drop_pct", True), ("average_increase_pct", False)])),
    Claim("T1-resolution", 1, "The performance of FG-CAM is almost unaffected by the explanation resolution.",
          "Grad-CAM's and Score-CAM's AD grow from Layer33 to Layer23 to Layer13, and the FG version's AD varies "
          "over the three layers by less than a quarter of the base method's variation",
          _flat_vs_growing),
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
          "at Layer33/23/13 denoising raises the energy proportion by at least 0.05", _denoise_helps(HIDDEN, 0.05)),
    Claim("T4-faithful", 4, "FG-CAM is significantly better than LRP, CLRP and SGLRP in every metric (AD/AI).",
          "at the input every FG method has a lower AD and a higher AI than LRP, CLRP and SGLRP",
          _fg_beats(LRPS, ("Input",), [("average_drop_pct", True), ("average_increase_pct", False)])),
    Claim("T5-overall", 5, "In the deletion and insertion tests FG-CAM still outperforms other methods.",
          "at the input every FG method has a higher Over-all than LRP, CLRP and SGLRP",
          _fg_beats(LRPS, ("Input",), [("overall", False)])),
    Claim("T6-localisation", 6, "The value of FG-CAM with denoising is significantly higher than that of others. "
          "FG-CAM is also better than LRP.",
          "at the input FG-Grad-CAMD and FG-Score-CAMD have a higher energy proportion than LRP, CLRP and SGLRP, "
          "and FG-Grad-CAM and FG-Score-CAM a higher one than LRP", _input_localisation),
]


def verdict(claim: Claim, rows) -> dict:
    """``{"id", "table", "paper", "rule", "verdict", "evidence"}`` for ``rows`` (long-format results)."""
    try:
        ok, evidence = claim.check(_lookup(rows, claim.table))
        v = VERDICTS[0] if ok else VERDICTS[1]
    except Missing as e:
        v, evidence = VERDICTS[2], f"missing: {e.args[0]}"
    return {"id": claim.id, "table": claim.table, "paper": claim.paper, "rule": claim.rule, "verdict": v,
            "evidence": evidence}


def verdicts(rows, tables=None) -> list[dict]:
    """Verdicts of every claim (of the given tables) on ``rows``."""
    return [verdict(c, rows) for c in CLAIMS if tables is None or c.table in tables]
