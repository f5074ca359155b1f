"""Summaries of a results store: the paper's Tables 1-6 (published numbers beside ours), as CSV and Markdown."""
from __future__ import annotations

from pathlib import Path

from fgcam.settings import HIDDEN_GRID, INPUT_GRID, METRIC_VALUES, UsageError, _LAYER_ORDER, _METHOD_ORDER
from fgcam.store import _atomic_write, read_rows

__all__ = ["published_rows", "summarize"]


# The paper's Tables 1-6 (AAAI 2024), as published: columns per table, then one line per method.
_PUBLISHED_COLUMNS = {
    1: [(la, m) for la in ("Layer33", "Layer23", "Layer13") for m in ("average_drop_pct", "average_increase_pct")],
    2: [(la, m) for la in ("Layer33", "Layer23", "Layer13") for m in ("insertion", "deletion", "overall")],
    3: [(la, "energy_proportion") for la in ("Layer33", "Layer23", "Layer13")],
    4: [("Input", m) for m in ("average_drop_pct", "average_increase_pct")],
    5: [("Input", m) for m in ("insertion", "deletion", "overall")],
    6: [("Input", "energy_proportion")],
}
_PUBLISHED = """
1 Grad-CAM: 44.53 18.85 72.89 5.1 83.8 3.25
1 FG-Grad-CAM: 18.69 34.9 19.55 33.45 19.65 32.35
1 FG-Grad-CAMD: 18.0 33.85 17.75 33.55 17.9 34.0
1 Score-CAM: 32.63 21.6 51.24 13.8 57.06 12.0
1 FG-Score-CAM: 21.13 29.15 22.63 27.15 23.5 25.85
1 FG-Score-CAMD: 19.19 31.7 18.99 32.0 19.24 30.5
1 Layer-CAM: 24.25 26.8 27.32 24.5 30.76 24.4
2 Grad-CAM: 0.4392 0.15392 0.28528 0.30033 0.19113 0.1092 0.23266 0.1685 0.06416
2 FG-Grad-CAM: 0.60214 0.0964 0.50574 0.59217 0.09459 0.49758 0.5863 0.09256 0.49374
2 FG-Grad-CAMD: 0.60247 0.11108 0.49139 0.60248 0.11378 0.4887 0.59976 0.11421 0.48555
2 Score-CAM: 0.51428 0.11988 0.3944 0.39734 0.14254 0.2548 0.36485 0.15037 0.21448
2 FG-Score-CAM: 0.58202 0.10196 0.48006 0.5721 0.09985 0.47225 0.5657 0.09774 0.46796
2 FG-Score-CAMD: 0.59716 0.11198 0.48518 0.59676 0.11403 0.48273 0.59341 0.11435 0.47906
2 Layer-CAM: 0.56566 0.09997 0.46569 0.54096 0.09333 0.44763 0.51348 0.08469 0.42879
3 Grad-CAM: 0.32417 0.31645 0.3076
3 FG-Grad-CAM: 0.51458 0.50995 0.50861
3 FG-Grad-CAMD: 0.66736 0.65744 0.65472
3 Score-CAM: 0.35646 0.28588 0.29219
3 FG-Score-CAM: 0.57161 0.56192 0.56001
3 FG-Score-CAMD: 0.68256 0.67233 0.66959
3 Layer-CAM: 0.49272 0.49854 0.48238
4 LRP: 25.48 25.0
4 CLRP: 30.64 24.15
4 SGLRP: 40.62 21.75
4 FG-Grad-CAM: 16.81 36.45
4 FG-Grad-CAMD: 16.13 36.55
4 FG-Score-CAM: 20.28 30.15
4 FG-Score-CAMD: 16.84 31.8
5 LRP: 0.55344 0.09975 0.45369
5 CLRP: 0.5674 0.19168 0.37572
5 SGLRP: 0.51655 0.22315 0.2934
5 FG-Grad-CAM: 0.60757 0.08668 0.52089
5 FG-Grad-CAMD: 0.61386 0.11271 0.50115
5 FG-Score-CAM: 0.58608 0.0898 0.49628
5 FG-Score-CAMD: 0.60566 0.11143 0.49423
6 LRP: 0.48385
6 CLRP: 0.59515
6 SGLRP: 0.52136
6 FG-Grad-CAM: 0.49503
6 FG-Grad-CAMD: 0.65496
6 FG-Score-CAM: 0.54
6 FG-Score-CAMD: 0.66983
"""

_SUMMARY_FIELDS = ["table", "layer", "metric", "method", "value", "ci_low", "ci_high", "n_images", "at_bound",
                   "saturated_column", "profile", "protocol"]
_COMPARISON_FIELDS = ["table", "layer", "metric", "method", "value", "ci_low", "ci_high", "paper", "difference",
                      "n_images", "saturated_column", "profile", "protocol"]
_METRIC_LABEL = {"average_drop_pct": "AD (%)", "average_increase_pct": "AI (%)", "insertion": "Insertion",
                 "deletion": "Deletion", "overall": "Over-all", "energy_proportion": "Energy",
                 "mask_energy": "Mask energy", "positive_share": "Positive share"}
_TABLE_TITLE = {1: "Average Drop / Average Increase, hidden layers",
                2: "Insertion / Deletion / Over-all, hidden layers",
                3: "Energy-based pointing game, hidden layers", 4: "Average Drop / Average Increase, input layer",
                5: "Insertion / Deletion / Over-all, input layer", 6: "Energy-based pointing game, input layer"}
_LOWER_IS_BETTER = {"average_drop_pct", "deletion"}


def published_rows() -> list[dict]:
    """The paper's Tables 1-6 in the long format of ``published_tables.csv`` (table, layer, metric, method, value)."""
    rows = []
    for line in _PUBLISHED.strip().splitlines():
        head, values = line.split(":")
        table, method = head.split(" ", 1)
        cols = _PUBLISHED_COLUMNS[int(table)]
        vals = values.split()
        assert len(vals) == len(cols), line
        rows += [{"table": int(table), "layer": la, "metric": m, "method": method, "value": float(v)}
                 for (la, m), v in zip(cols, vals)]
    # the CSV lists, per table, each method's columns in order; sort like it: table, method order, column order
    return rows


def _summary_rows(rows: list[dict]) -> list[dict]:
    """One row per table cell: the mean over images with its 95 % percentile bootstrap interval over images
    (:func:`fgcam.tables.cells`: seeded, 2,000 resamples), the share of images at the metric's bound, and whether
    the column cannot separate the methods on this store (:func:`fgcam.tables.columns`)."""
    from fgcam import tables

    cells = tables.cells(rows)
    columns = tables.columns(cells)
    out = []
    for c in cells:
        col = columns[(c["table"], c["layer"], c["metric"])]
        out.append({"table": c["table"], "layer": c["layer"], "metric": c["metric"], "method": c["method"],
                    "value": c["mean"], "ci_low": c["ci_low"], "ci_high": c["ci_high"], "n_images": c["n_images"],
                    "at_bound": c["at_bound"], "saturated_column": col["reason"] if col["saturated"] else "",
                    "profile": c["profile"], "protocol": c["protocol"]})
    metric_order = [m for vs in METRIC_VALUES.values() for m in vs]

    def order(r):
        methods = list(INPUT_GRID if r["table"] in (4, 5, 6) else HIDDEN_GRID)
        methods += [m for m in _METHOD_ORDER if m not in methods]
        return (r["table"], methods.index(r["method"]) if r["method"] in methods else 99, r["method"],
                _LAYER_ORDER.index(r["layer"]) if r["layer"] in _LAYER_ORDER else 99, r["layer"],
                metric_order.index(r["metric"]) if r["metric"] in metric_order else 99, r["metric"], r["protocol"])

    return sorted(out, key=order)


def _fmt(metric: str, v) -> str:
    if v is None or v == "":
        return "–"
    return f"{v:.2f}" if metric.endswith("_pct") else f"{v:.4f}"


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]))
                    for k in fields})
    _atomic_write(path, buf.getvalue())


def _markdown(comparison: list[dict], profile: str) -> str:
    lines = []
    tables = sorted({r["table"] for r in comparison})
    for t in tables:
        rs = [r for r in comparison if r["table"] == t]
        cols = list(dict.fromkeys((r["layer"], r["metric"]) for r in rs))
        methods = list(dict.fromkeys(r["method"] for r in rs))
        cell = {(r["method"], r["layer"], r["metric"]): r for r in rs}
        n = sorted({r["n_images"] for r in rs})
        protos = sorted({r["protocol"] for r in rs})
        lines.append(f"### Table {t}: {_TABLE_TITLE.get(t, '')}")
        lines.append("")
        lines.append(f"Profile `{profile}`, {'/'.join(map(str, n))} images, protocol {', '.join(protos)}. "
                     "Each cell: ours (paper); " + ", ".join(
                         f"{_METRIC_LABEL.get(m, m)} {'lower' if m in _LOWER_IS_BETTER else 'higher'} is better"
                         for m in dict.fromkeys(m for _, m in cols)) + ".")
        lines.append("")
        saturated = {(la, m): next((r["saturated_column"] for r in rs if (r["layer"], r["metric"]) == (la, m)
                                    and r["saturated_column"]), "") for la, m in cols}
        lines.append("| Method | " + " | ".join(f"{la} {_METRIC_LABEL.get(m, m)}"
                                                + (" (saturated)" if saturated[(la, m)] else "")
                                                for la, m in cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for meth in methods:
            cells = []
            for la, m in cols:
                r = cell.get((meth, la, m))
                if r is None:
                    cells.append("")
                else:
                    cells.append(f"{_fmt(m, r['value'])} [{_fmt(m, r['ci_low'])}, {_fmt(m, r['ci_high'])}] "
                                 f"({_fmt(m, r['paper'])})")
            lines.append(f"| {meth} | " + " | ".join(cells) + " |")
        lines.append("")
        for (la, m), why in saturated.items():
            if why:
                lines.append(f"- {la} {_METRIC_LABEL.get(m, m)} is saturated: {why}.")
        if any(saturated.values()):
            lines.append("")
    return "\n".join(lines)


def summarize(out: str | Path, write: bool = True) -> dict:
    """The paper's tables from the store in ``out``: mean per (table, layer, metric, method).

    Writes (atomically) ``summary.csv`` (long format of ``published_tables.csv`` plus ``n_images``, ``profile``,
    ``protocol``), ``comparison.csv`` (the same joined with the paper's value and the difference ours - paper)
    and ``summary.md`` (one Markdown table per paper table, cells "ours (paper)"). Returns
    ``{"summary": rows, "comparison": rows, "markdown": str, "files": [paths]}``.
    """
    out = Path(out)
    rows = read_rows(out)
    if not rows:
        raise UsageError(f"no results in {out} (run `python -m fgcam evaluate --out {out}` first)")
    summary = _summary_rows(rows)
    paper = {(r["table"], r["layer"], r["metric"], r["method"]): r["value"] for r in published_rows()}
    comparison = []
    for r in summary:
        p = paper.get((r["table"], r["layer"], r["metric"], r["method"]))
        comparison.append({**{k: r[k] for k in ("table", "layer", "metric", "method", "value", "ci_low", "ci_high")},
                           "paper": p, "difference": None if p is None else r["value"] - p,
                           **{k: r[k] for k in ("n_images", "saturated_column", "profile", "protocol")}})
    profiles_ = sorted({r["profile"] for r in rows})
    md = (f"# FG-CAM paper tables from `{out}`\n\n"
          f"Means over images of the per-image values in `rows.jsonl` ({len(rows)} rows), with their 95 % "
          "bootstrap interval over images in square brackets; in round brackets the value published in the paper "
          "(VGG16-BN on ILSVRC2012 val, 2,000 / 500 images). A column marked *saturated* cannot separate the "
          "methods on this store (the reason is under the table).\n\n"
          + _markdown(comparison, ", ".join(profiles_)))
    files = []
    if write:
        _write_csv(out / "summary.csv", _SUMMARY_FIELDS, summary)
        _write_csv(out / "comparison.csv", _COMPARISON_FIELDS, comparison)
        _atomic_write(out / "summary.md", md + "\n")
        files = [out / "summary.csv", out / "comparison.csv", out / "summary.md"]
    return {"summary": summary, "comparison": comparison, "markdown": md, "files": files}
