"""The verdicts the book shows, read from executed chapters, checked against ``fgcam.claims``.

A chapter shows a claim's verdict in two ways, and both are read here:

* **glued** (myst-nb ``glue``, which the prose cites with ``{glue:text}``): the name says which claim and which
  source, ``verdict-<claim id>-<source>``, the value is the verdict. ``<source>`` is the folder of a committed
  results store (``offline``, ``real-v1``, ``real-v2``: ``results/<source>``), ``published`` (the paper's numbers,
  :func:`fgcam.experiments.published_rows`) or ``live`` (a figure claim measured in the chapter on the images of
  ``fgcam.claims.figure_images`` and friends); ``-measured`` after a store's folder names the verdict of the
  claim's measured part (:func:`fgcam.claims.measured_part`).
* **printed** (stream and ``text/plain`` outputs: ``print``, tables): a line that names a claim id and a verdict
  (holds / does not hold / inconclusive / not measurable). The first claim id of the line is the line's claim (a
  table row starts with its index).

:func:`problems` lists what disagrees: a glued verdict that is not what ``fgcam.claims`` computes for that claim
and source, one claim and source glued with two verdicts (in one chapter or across chapters), a printed verdict
that the chapter did not glue for that claim, a glue name ``verdict-...`` that names no claim or source.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fgcam import claims

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "verdict-"
LIVE = "live"
PUBLISHED = "published"
MEASURED = "-measured"
_GLUE_MIME = "application/papermill.record/text/plain"
_VERDICT = re.compile(r"(?<![\w-])(does not hold|holds|inconclusive|not measurable(?: in this profile)?)(?![\w-])",
                      re.I)


def claim_ids() -> list[str]:
    """Every claim id of ``fgcam.claims``, longest first (so no id is read as a prefix of another)."""
    return sorted((c.id for c in claims.ALL_CLAIMS), key=len, reverse=True)


_ID = re.compile(r"(?<![\w-])(" + "|".join(re.escape(i) for i in claim_ids()) + r")(?![\w-])")


def normalise(verdict: str) -> str:
    """A verdict as ``fgcam.claims.VERDICTS`` spells it ("HOLDS" -> "holds", "not measurable" -> the full one)."""
    v = verdict.strip().lower()
    return claims.VERDICTS[3] if v.startswith("not measurable") else v


def parse_name(name: str) -> tuple[str, str] | None:
    """``verdict-<claim id>-<source>`` -> ``(claim id, source)``; ``None`` when it names no claim."""
    if not name.startswith(PREFIX):
        return None
    rest = name[len(PREFIX):]
    for cid in claim_ids():
        if rest.startswith(cid + "-") and len(rest) > len(cid) + 1:
            return cid, rest[len(cid) + 1:]
    return None


@dataclass
class Scan:
    """What one executed chapter shows: ``glued`` [(claim, source, verdict, glue name)], ``printed``
    [(claim, verdict, line)] and ``bad`` (glue names or values that are not a claim's verdict)."""

    chapter: str
    glued: list[tuple[str, str, str, str]] = field(default_factory=list)
    printed: list[tuple[str, str, str]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def scan(chapter: str, nb) -> Scan:
    """Read the glued and the printed verdicts of the executed notebook ``nb`` (an ``nbformat`` notebook)."""
    out = Scan(chapter)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            data = o.get("data", {})
            if name is not None:
                if not name.startswith(PREFIX):
                    continue
                raw = _text(data.get(_GLUE_MIME, data.get("text/plain", "")))
                try:
                    value = ast.literal_eval(raw)
                except (ValueError, SyntaxError):
                    value = raw
                parsed = parse_name(name)
                if parsed is None:
                    out.bad.append(f"{chapter}: glue name {name!r} names no claim of fgcam.claims "
                                   f"(verdict-<claim id>-<source>)")
                elif not isinstance(value, str) or value not in claims.VERDICTS:
                    out.bad.append(f"{chapter}: {name} = {value!r} is not one of {claims.VERDICTS}")
                else:
                    out.glued.append((*parsed, value, name))
                continue
            if o.get("output_type") == "stream":
                text = _text(o.get("text", ""))
            elif "text/plain" in data:
                text = _text(data["text/plain"])
            else:
                continue
            for line in text.splitlines():
                m = _ID.search(line)
                if m is None:
                    continue
                for v in _VERDICT.findall(line[m.end():]):
                    out.printed.append((m.group(1), normalise(v), line.strip()))
    return out


class Expected:
    """What ``fgcam.claims`` computes for a claim on a source: the committed store ``<results>/<source>`` (the
    folder of ``FGCAM_RESULTS`` if set, as the chapters read it, else ``results/``) or the published numbers.
    Rows and verdicts are computed once per source."""

    def __init__(self, results: Path | None = None):
        self.results = Path(results if results is not None else os.environ.get("FGCAM_RESULTS", ROOT / "results"))
        self._rows: dict[str, list] = {}
        self._verdicts: dict[str, dict[str, str]] = {}

    def rows(self, source: str) -> list:
        if source not in self._rows:
            from fgcam.experiments import published_rows, read_rows

            if source == PUBLISHED:
                self._rows[source] = list(published_rows())
            else:
                store = self.results / source
                if not (store / "rows.jsonl").exists():
                    raise KeyError(f"no results store {store} for source {source!r}")
                self._rows[source] = read_rows(store)
        return self._rows[source]

    def __call__(self, claim_id: str, source: str) -> str | None:
        """The verdict, or ``None`` for a live source (measured in the chapters, compared across them only)."""
        if source == LIVE:
            return None
        measured = source.endswith(MEASURED)
        base = source[:-len(MEASURED)] if measured else source
        rows = self.rows(base)
        claim = claims.get(claim_id)
        if measured:
            part = claims.measured_part(claim, rows)
            return claims.VERDICTS[3] if part is None else claims.verdict(part, rows)["verdict"]
        if base not in self._verdicts:
            self._verdicts[base] = {v["id"]: v["verdict"] for v in claims.verdicts(rows, claims=claims.ALL_CLAIMS)}
        return self._verdicts[base][claim_id]


def problems(scans: dict[str, Scan], expected) -> list[str]:
    """Every disagreement among the verdicts of ``scans`` (chapter -> :class:`Scan`) and with ``expected(claim,
    source)`` (a verdict, or ``None``: not recomputed)."""
    out = [b for s in scans.values() for b in s.bad]
    seen: dict[tuple[str, str], dict[str, list[str]]] = {}
    for s in scans.values():
        for cid, source, v, name in s.glued:
            seen.setdefault((cid, source), {}).setdefault(v, []).append(s.chapter)
    for (cid, source), shown in sorted(seen.items()):
        if len(shown) > 1:
            out.append(f"{cid} on {source}: different verdicts in the book: "
                       + "; ".join(f"{v!r} in {', '.join(sorted(set(ch)))}" for v, ch in shown.items()))
        try:
            want = expected(cid, source)
        except KeyError as err:
            out.append(f"{cid} on {source} (glued in {', '.join(sorted({c for ch in shown.values() for c in ch}))}):"
                       f" cannot recompute it: {err}")
            continue
        for v, chapters in shown.items():
            if want is not None and v != want:
                out.append(f"{cid} on {source}: {', '.join(sorted(set(chapters)))} shows {v!r}, fgcam.claims "
                           f"computes {want!r}")
    for s in scans.values():
        glued = {}
        for cid, _, v, _ in s.glued:
            glued.setdefault(cid, set()).add(v)
        for cid, v, line in s.printed:
            if v not in glued.get(cid, set()):
                out.append(f"{s.chapter}: prints {v!r} for {cid} ({line[:160]!r}), but glues "
                           + (f"only {sorted(glued[cid])} for it" if cid in glued else "no verdict for it")
                           + " (glue every verdict shown: verdict-<claim id>-<source>)")
    return out
