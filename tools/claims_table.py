"""Each of the paper's claims, its verdict on each source, with the interval that decided it (Markdown table).

    python tools/claims_table.py            # published numbers, results/offline, results/real-v1, results/real-v2

A cell is ``fgcam.claims.verdict`` of the claim on that source's rows, followed by the critical comparison and its
95 % interval (for a claim of several comparisons also its simultaneous 95 % interval, which decides "does not
hold").  Where a claim is not measurable on a source (a method or layer the store lacks), the cell gives the
verdict of its measurable part (``claims.measured_part``), if it has one.  The closing notes of the project quote
this table; the audit chapter shows the same verdicts from the same functions.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sources(results: Path = ROOT / "results") -> dict:
    from fgcam import experiments as E

    return {"published": E.published_rows(), "offline": E.read_rows(results / "offline"),
            "real-v1": E.read_rows(results / "real-v1"), "real-v2": E.read_rows(results / "real-v2")}


def column(rows, published: bool) -> dict[str, str]:
    """Claim id -> the cell text on ``rows``: ``claims.verdicts`` (one pass over the rows for every claim), and for
    a claim not measurable there the verdict of its measurable part."""
    from fgcam import claims

    rows = list(rows)
    out = {}
    for v in claims.verdicts(rows):
        if v["verdict"].startswith("not measurable"):
            claim = claims.get(v["id"])
            part = claims.measured_part(claim, rows)
            if part is not None and part is not claim:
                pv = claims.verdict(part, rows)
                out[v["id"]] = f"not measurable; measured part: {pv['verdict']}: {_critical(pv)}"
            else:
                out[v["id"]] = v["verdict"]
        else:
            out[v["id"]] = v["verdict"] if published else f"{v['verdict']}: {_critical(v)}"
    return out


def _critical(v: dict) -> str:
    """The critical comparison with its 95 % interval, and for a claim of several comparisons also its simultaneous
    95 % interval (the one that decides "does not hold", ``fgcam.claims``): a marginal interval on the wrong side
    with a simultaneous one across the threshold is *inconclusive*. Built from the verdict's fields (its
    ``comparisons``), not from its outcome text."""
    comps = v["comparisons"]
    c = next(c for c in comps if c["label"] == v["critical"])
    text = f"{c['label']} = {v['interval']}"  # the critical comparison's fgcam.stats.Interval
    if v["mode"] == "per-image" and len(comps) > 1:
        text += f", simultaneous [{c['sim_low']:.4g}, {c['sim_high']:.4g}]"
    return f"{text} (needs {c['op']} {c['threshold']:g})"


def markdown(profiles: dict) -> str:
    from fgcam import claims

    columns = {name: column(rows, name == "published") for name, rows in profiles.items()}
    lines = ["| claim | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for c in claims.CLAIMS:
        lines.append(f"| {c.id} | " + " | ".join(columns[name][c.id] for name in profiles) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(sources(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results")))
