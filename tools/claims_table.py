"""Each of the paper's claims, its verdict on each source, with the interval that decided it (Markdown table).

    python tools/claims_table.py            # published numbers, results/offline, results/real-v1, results/real-v2

A cell is ``fgcam.claims.verdict`` of the claim on that source's rows, followed by the critical comparison and its
95 % interval.  Where a claim is not measurable on a source (a method or layer the store lacks), the cell gives the
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


def cell(claim, rows, published: bool) -> str:
    from fgcam import claims

    v = claims.verdict(claim, rows)
    if v["verdict"].startswith("not measurable"):
        part = claims.measured_part(claim, rows)
        if part is not None and part is not claim:
            pv = claims.verdict(part, rows)
            return f"not measurable; measured part: {pv['verdict']}: {pv['outcome'].split(';')[0].split(': ', 1)[-1]}"
        return v["verdict"]
    return v["verdict"] if published else v["verdict"] + ": " + v["outcome"].split(";")[0].split(": ", 1)[-1]


def markdown(profiles: dict) -> str:
    from fgcam import claims

    lines = ["| claim | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for c in claims.CLAIMS:
        lines.append(f"| {c.id} | " + " | ".join(cell(c, rows, name == "published") for name, rows in profiles.items())
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(sources(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "results")))
