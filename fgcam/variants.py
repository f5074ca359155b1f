"""FG-CAM variants beyond the paper, measured on the real benchmark (conservation and class contrast).

The paper's FG-Grad-CAM against opt-in variants (:mod:`fgcam.conservation`'s ``zero_denominator`` rules and the
class-contrastive components of :func:`fgcam.explain`'s ``contrast``), and against the LRP family and Grad-CAM, on
the ``real`` profile's items (:mod:`fgcam.real`): the same seeded photos and 2x2 grid composites as the real
benchmark's stores.

Measured, per item, variant and layer (``Input`` and ``Layer13``, the 1/4-resolution layer):

* grid composites (each composite explained for each of its 4 cells' classes; the unit is the composite, values
  are means over its 4 cells): ``cell_share`` (share of the positive energy in the explained class's cell,
  :func:`fgcam.metrics.positive_energy_share`; chance 0.25), ``energy_pg`` (the paper's energy pointing game with
  the cell as the box), ``reached`` (share of ``sum |R|`` that reaches the layer,
  :class:`fgcam.conservation.ConservationReport`) and ``rank_corr`` (Spearman correlation of the maps of two
  classes on the same composite, mean over the 6 pairs);
* photos (the predicted class, as the paper): ``insertion``, ``deletion``, ``overall``, ``average_drop_pct``,
  ``average_increase_pct`` (the paper's protocols, :func:`fgcam.settings.protocol_for`) and ``reached``;
* cascading randomisation on the first photos (:func:`fgcam.metrics.cascading_randomization`, the top
  :data:`CASCADE_STEPS` parameterised modules from the output down, explaining the class predicted by the
  intact model): ``cascade_final`` (Spearman of |map| with the intact model's after the last step) and
  ``cascade_mean`` (mean over the steps).  Lower = more sensitive to the parameters (Adebayo et al. 2018).

The store (``DIR``) is resumable: ``manifest.json`` (model, seed, variants; a run with other settings refuses to
write), ``rows.jsonl`` (one line per item, variant and layer, appended and fsync'ed item by item; a line cut by a
kill is ignored and recomputed) and ``runs.jsonl`` (one record per run: wall time, items, versions).

    python -m fgcam.variants --model mobilenet_v1_0.75_192 --images DIR --out results/variants-v1 \\
        --photos 48 --composites 100 --cascade 8 --threads 1

:func:`rows`, :func:`table` and :func:`compare` read a store; :func:`verdicts` decides the chapter's claims.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fgcam import metrics as M
from fgcam import stats
from fgcam.explain import Explainer
from fgcam.settings import Setting, protocol_for

__all__ = ["Variant", "VARIANTS", "BASELINES", "LAYERS", "CASCADE_STEPS", "NON_INFERIORITY", "run", "rows",
           "table", "compare", "verdicts", "measure_composite", "measure_photo", "display_table",
           "verdict_frame", "interval_bars", "describe", "comparison"]


@dataclass(frozen=True)
class Variant:
    """One way to explain: an fgcam method with a zero-denominator rule (``"drop"`` = the paper's) and a contrast
    (None = the paper's components)."""

    name: str
    method: str
    zero_denominator: str = "drop"
    contrast: str | None = None

    def explain(self, model, images, module, target, report: bool):
        """``(maps [B, h, w], reached share [B] or None)``; ``report`` asks for the conservation report (two
        propagations: positive and negative relevance apart)."""
        ex = Explainer(model, zero_denominator=self.zero_denominator)
        if report and self.method != "grad-cam":
            rep = ex.report(images, self.method, module, target=target, contrast=self.contrast)
            return rep.maps.detach(), rep.reached_share.detach()
        return ex.explain(images, self.method, module, target=target, contrast=self.contrast).detach(), None


#: The paper's FG-Grad-CAM first, then the variants (beyond the paper).
VARIANTS = (
    Variant("FG-Grad-CAM", "fg-grad-cam"),
    Variant("FG-Grad-CAM others", "fg-grad-cam", contrast="others"),
    Variant("FG-Grad-CAM softmax", "fg-grad-cam", contrast="softmax"),
    Variant("FG-Grad-CAM flat", "fg-grad-cam", zero_denominator="flat"),
    Variant("FG-Grad-CAM w2", "fg-grad-cam", zero_denominator="w2"),
    Variant("FG-Grad-CAM others+flat", "fg-grad-cam", "flat", "others"),
    Variant("FG-Grad-CAM softmax+flat", "fg-grad-cam", "flat", "softmax"),
)
#: Baselines of the grid pointing game: the LRP family at the input, Grad-CAM at the CAM layer.
BASELINES = (Variant("LRP", "lrp"), Variant("CLRP", "clrp"), Variant("SGLRP", "sglrp"))
GRAD_CAM = Variant("Grad-CAM", "grad-cam")
#: The paper's layer names measured (mapped to the model's modules by :func:`fgcam.real.paper_layer_map`).
LAYERS = ("Input", "Layer13")
#: Modules randomised by the cascade, from the output down.
CASCADE_STEPS = 12
#: Non-inferiority margin on Over-all (insertion - deletion, in [-1, 1]): a variant "keeps" the paper's
#: faithfulness when the paired interval of its Over-all minus the paper's lies above ``-NON_INFERIORITY``.
NON_INFERIORITY = 0.02

_GRID_MEASURES = ("cell_share", "energy_pg", "reached", "rank_corr")
_PHOTO_MEASURES = ("insertion", "deletion", "overall", "average_drop_pct", "average_increase_pct", "reached")
_VERSION = 1


# -- measuring ----------------------------------------------------------------------------------------------

def _grid_values(model, variant: Variant, image, classes, module, boxes) -> dict:
    x4 = image[None].repeat(4, 1, 1, 1)
    maps, reached = variant.explain(model, x4, module, torch.as_tensor(classes), report=True)
    size = tuple(image.shape[-2:])
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    rho = M.spearman(maps[[a for a, _ in pairs]], maps[[b for _, b in pairs]])
    out = {"cell_share": float(M.positive_energy_share(maps, boxes, size=size).mean()),
           "energy_pg": float(M.energy_pointing_game(maps, boxes, size=size).mean()),
           "rank_corr": float(rho.mean())}
    if reached is not None:
        out["reached"] = float(reached.double().mean())
    return out


def _photo_values(model, variant: Variant, image, target, module, layer) -> dict:
    x = image[None]
    t = torch.as_tensor([target])
    maps, reached = variant.explain(model, x, module, t, report=True)
    setting = Setting(variant.name, variant.method, False, layer, module)
    ins = M.insertion_deletion(model, x, maps, target=t, protocol=protocol_for(setting, "insdel"))
    ad = M.average_drop_increase(model, x, maps, target=t, protocol=protocol_for(setting, "adai"))
    return {"insertion": float(ins["insertion"][0]), "deletion": float(ins["deletion"][0]),
            "overall": float(ins["overall"][0]), "average_drop_pct": 100.0 * float(ad["drop"][0]),
            "average_increase_pct": 100.0 * float(ad["increase"][0]),
            "reached": float(reached[0]) if reached is not None else None}


def _cascade_values(model, variant: Variant, image, target) -> dict:
    from fgcam.metrics import _default_layers

    t = torch.as_tensor([target])
    fn = lambda m, x: variant.explain(m, x, "input", t, report=False)[0]  # noqa: E731
    steps = M.cascading_randomization(model, image[None], fn, layers=_default_layers(model)[:CASCADE_STEPS])
    curve = [float(s["spearman_abs_per_image"][0]) for s in steps]
    return {"cascade_final": curve[-1], "cascade_mean": float(np.mean(curve)), "cascade_curve": curve}


def measure_composite(model, image, classes, boxes, layer_map: dict, layers=LAYERS, variants=VARIANTS,
                      baselines=BASELINES, grad_cam: bool = True) -> list[tuple[str, str, dict]]:
    """``(variant, layer, values)`` of one grid composite ``image`` ``[3, H, W]`` whose cells (``boxes`` ``[4, 4]``)
    hold the classes ``classes`` (4 logits): every variant at every layer, the baselines at the input, Grad-CAM at
    the CAM layer (``layer_map["cam"]``)."""
    out = []
    for layer in layers:
        for v in tuple(variants) + (tuple(baselines) if layer == "Input" else ()):
            out.append((v.name, layer, _grid_values(model, v, image, classes, layer_map[layer], boxes)))
    if grad_cam:
        out.append((GRAD_CAM.name, "CAM", _grid_values(model, GRAD_CAM, image, classes, layer_map["cam"], boxes)))
    return out


def measure_photo(model, image, target: int, layer_map: dict, layers=LAYERS, variants=VARIANTS,
                  cascade: bool = False) -> list[tuple[str, str, dict]]:
    """``(variant, layer, values)`` of one photo ``[3, H, W]`` explained for ``target``: faithfulness and
    conservation of every variant at every layer, and (``cascade``) the cascading randomisation at the input."""
    out = [(v.name, layer, _photo_values(model, v, image, target, layer_map[layer], layer))
           for layer in layers for v in variants]
    if cascade:
        out += [(v.name, "Input", _cascade_values(model, v, image, target)) for v in variants]
    return out


# -- the store ----------------------------------------------------------------------------------------------

def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1 and any(x.strip() for x in lines[i + 1:]):
                raise ValueError(f"{path}:{i + 1}: not a JSON line (only the last line may be cut by a kill)")
    return out


def _append(path: Path, new: list[dict]) -> None:
    """Append ``new`` as JSON lines and fsync; a last line cut by a kill is removed first (its item is recomputed)."""
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in new)
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def rows(out: str | Path) -> list[dict]:
    """The store's rows (the last row wins for a repeated ``(part, item, variant, layer)``)."""
    seen = {}
    for r in _read(Path(out) / "rows.jsonl"):
        seen[(r["part"], r["item"], r["variant"], r["layer"])] = r
    return list(seen.values())


def _manifest(model_name: str, seed: int) -> dict:
    return {"version": _VERSION, "model": model_name, "seed": seed,
            "variants": [asdict(v) for v in VARIANTS + BASELINES + (GRAD_CAM,)], "layers": list(LAYERS),
            "cascade_steps": CASCADE_STEPS}


def _check_manifest(out: Path, manifest: dict) -> None:
    path = out / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise ValueError(f"{path} was written with other settings ({', '.join(diff)} differ); use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=1) + "\n")


def run(model_name: str, images: str | Path | None, out: str | Path, n_photos: int, n_composites: int,
        n_cascade: int, seed: int = 0, log=print) -> dict:
    """Measure every variant on ``n_photos`` photos (``n_cascade`` of them also cascade-randomised) and
    ``n_composites`` grid composites; resumable (items already in the store are skipped).  Items interleave
    (photo ``i``, then its share of the composites, ``ceil(n_composites / n_photos)``) so that a run stopped early
    leaves both parts in proportion."""
    from fgcam import real

    out = Path(out)
    model, spec = real.load_model(model_name)
    _check_manifest(out, _manifest(model_name, seed))
    layer_map = real.paper_layer_map(model, spec["input"]["shape"])
    photos = real.scan_photos(images)
    psource = real.PhotoSource(photos, spec, n_photos, seed)
    gsource = real.GridSource(model, photos, spec, n_composites, seed)
    real.record_photos(out, real.RealSource(psource, gsource))
    have: dict[tuple[str, str], int] = {}
    for r in rows(out):
        key = ("grid" if r["part"] == "grid" else "photo", r["item"])
        have[key] = have.get(key, 0) + 1
    n_grid = len(LAYERS) * len(VARIANTS) + len(BASELINES) + 1

    def done(part, item, cascade=False):  # every row of the item is there (a kill can cut the last item short)
        want = n_grid if part == "grid" else len(VARIANTS) * (len(LAYERS) + int(cascade))
        return have.get((part, item), 0) >= want

    t0, count = time.time(), 0
    path = out / "rows.jsonl"
    per_photo = -(-len(gsource.plan) // max(1, len(psource.ids)))  # composites after each photo
    for i in range(max(len(psource.ids), -(-len(gsource.plan) // max(1, per_photo)))):
        if i < len(psource.ids) and not done("photo", psource.ids[i], i < n_cascade):
            t = time.time()
            d = psource.load([i])
            image = d["images"][0]
            with torch.no_grad():
                target = int(model(image[None]).argmax(1))
            new = [{"part": "photo", "item": psource.ids[i], "variant": v, "layer": layer,
                    "label": int(d["labels"][0]), "target": target, "values": values}
                   for v, layer, values in measure_photo(model, image, target, layer_map, cascade=i < n_cascade)]
            for r in new:
                r["part"] = "cascade" if "cascade_final" in r["values"] else "photo"
                r["item_seconds"] = round(time.time() - t, 1)
            _append(path, new)
            count += 1
            log(f"photo {i} {psource.ids[i]}: {time.time() - t:.0f} s")
        for k in range(i * per_photo, min((i + 1) * per_photo, len(gsource.plan))):
            item = f"grid-s{seed}-{k:05d}"
            if done("grid", item):
                continue
            t = time.time()
            d = gsource.load([4 * k + c for c in range(4)])
            image, classes = d["images"][0], d["targets"].tolist()
            new = [{"part": "grid", "item": item, "variant": v, "layer": layer, "classes": classes,
                    "values": values}
                   for v, layer, values in measure_composite(model, image, classes, gsource.boxes, layer_map)]
            for r in new:
                r["item_seconds"] = round(time.time() - t, 1)
            _append(path, new)
            count += 1
            log(f"composite {k}: {time.time() - t:.0f} s")
    record = {"start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "wall_s": round(time.time() - t0, 1),
              "items": count, "photos": len(psource.ids), "composites": len(gsource.plan), "cascade": n_cascade,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
              "command": " ".join(["python -m fgcam.variants"] + sys.argv[1:])}
    with open(out / "runs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record


# -- reading ------------------------------------------------------------------------------------------------

def _values(rs, part, variant, layer, measure) -> dict[str, float]:
    return {r["item"]: r["values"][measure] for r in rs
            if r["part"] == part and r["variant"] == variant and r["layer"] == layer
            and r["values"].get(measure) is not None}


def table(store_rows: list[dict], part: str, measures=None, n_resamples: int = stats.N_RESAMPLES):
    """A DataFrame: one row per (variant, layer) of ``part``, each measure's mean with its 95 % bootstrap interval
    over items (composites or photos) as ``(estimate, low, high, n)``."""
    import pandas as pd

    measures = measures or {"grid": _GRID_MEASURES, "photo": _PHOTO_MEASURES,
                            "cascade": ("cascade_final", "cascade_mean")}[part]
    keys = list(dict.fromkeys((r["variant"], r["layer"]) for r in store_rows if r["part"] == part))
    out = []
    for variant, layer in keys:
        row = {"variant": variant, "layer": layer}
        for m in measures:
            vals = list(_values(store_rows, part, variant, layer, m).values())
            row[m] = stats.bootstrap_ci(vals, n_resamples=n_resamples) if vals else None
        out.append(row)
    return pd.DataFrame(out)


def compare(store_rows: list[dict], part: str, measure: str, a: tuple[str, str], b: tuple[str, str],
            n_resamples: int = stats.N_RESAMPLES) -> stats.Interval:
    """Paired bootstrap interval of ``mean(a) - mean(b)`` over the items both have; ``a``, ``b`` =
    ``(variant, layer)``."""
    va = _values(store_rows, part, *a, measure)
    vb = _values(store_rows, part, *b, measure)
    items = sorted(set(va) & set(vb))
    if not items:
        raise ValueError(f"no {part} item has {measure} for both {a} and {b}")
    return stats.paired_bootstrap([va[i] for i in items], [vb[i] for i in items], n_resamples=n_resamples)


def verdicts(store_rows: list[dict], layer: str = "Input", n_resamples: int = stats.N_RESAMPLES) -> list[dict]:
    """The chapter's claims, each ``{"claim", "variant", "interval", "verdict", "rule"}``:

    * the paper's FG-Grad-CAM is class-discriminative: its cell share exceeds chance (0.25);
    * it is as class-discriminative as the CAM it extends: cell share minus Grad-CAM's at the CAM layer > 0;
    * variant X conserves relevance: mean ``reached`` >= 0.999 (the interval's low end);
    * variant X improves the grid pointing game: cell share minus the paper's > 0, and keeps the faithfulness:
      Over-all minus the paper's > ``-NON_INFERIORITY`` (both must hold);
    * variant X reaches CLRP's grid pointing game: cell share minus CLRP's > 0.

    With fewer than :data:`fgcam.claims.MIN_IMAGES` items a claim is *inconclusive* (too few to decide).
    """
    from fgcam.claims import MIN_IMAGES

    paper = VARIANTS[0].name
    out = []

    def decide(interval, threshold):
        return "inconclusive" if interval.n < MIN_IMAGES else stats.verdict(interval, threshold)

    def add(claim, variant, interval, threshold, rule):
        out.append({"claim": claim, "variant": variant, "interval": interval,
                    "verdict": decide(interval, threshold), "rule": rule})

    share = _values(store_rows, "grid", paper, layer, "cell_share")
    if share:
        add("class-discriminative", paper, stats.bootstrap_ci(list(share.values()), n_resamples=n_resamples), 0.25,
            "cell share > 0.25 (chance)")
    if _values(store_rows, "grid", GRAD_CAM.name, "CAM", "cell_share") and share:
        add("as discriminative as Grad-CAM", paper,
            compare(store_rows, "grid", "cell_share", (paper, layer), (GRAD_CAM.name, "CAM"), n_resamples), 0.0,
            "cell share - Grad-CAM's (CAM layer) > 0")
    for v in VARIANTS:
        reached = _values(store_rows, "grid", v.name, layer, "reached")
        if reached:
            add("conserves relevance", v.name, stats.bootstrap_ci(list(reached.values()), n_resamples=n_resamples),
                0.999, "reached share > 0.999")
    for v in VARIANTS[1:]:
        if not _values(store_rows, "grid", v.name, layer, "cell_share"):
            continue
        pg = compare(store_rows, "grid", "cell_share", (v.name, layer), (paper, layer), n_resamples)
        row = {"claim": "improves the grid pointing game, keeps Over-all", "variant": v.name, "interval": pg,
               "verdict": decide(pg, 0.0), "rule": f"cell share - paper's > 0 and Over-all - paper's > "
                                                         f"-{NON_INFERIORITY}"}
        if _values(store_rows, "photo", v.name, layer, "overall"):
            ov = compare(store_rows, "photo", "overall", (v.name, layer), (paper, layer), n_resamples)
            row["overall_interval"] = ov
            both = (row["verdict"], decide(ov, -NON_INFERIORITY))
            row["verdict"] = ("holds" if both == ("holds", "holds") else
                              "does not hold" if "does not hold" in both else "inconclusive")
        else:
            row["verdict"] = "inconclusive" if row["verdict"] != "does not hold" else row["verdict"]
        out.append(row)
        if _values(store_rows, "grid", "CLRP", layer, "cell_share"):
            add("reaches CLRP's grid pointing game", v.name,
                compare(store_rows, "grid", "cell_share", (v.name, layer), ("CLRP", layer), n_resamples), 0.0,
                "cell share - CLRP's > 0")
    return out


def describe(out: str | Path) -> dict:
    """What a store holds: items per part, rows, and the seconds its items took (``item_seconds``, summed once per
    item; rows of runs that predate the field count as unknown)."""
    rs = rows(out)
    items: dict[tuple[str, str], float | None] = {}
    for r in rs:
        part = "grid" if r["part"] == "grid" else "photo"
        items.setdefault((part, r["item"]), r.get("item_seconds"))
    count = {p: sum(1 for k in items if k[0] == p) for p in ("photo", "grid")}
    cascade = len({r["item"] for r in rs if r["part"] == "cascade"})
    known = {p: [v for k, v in items.items() if k[0] == p and v is not None] for p in ("photo", "grid")}
    return {"store": str(out), "rows": len(rs), "photos": count["photo"], "photos with cascade": cascade,
            "composites": count["grid"],
            **{f"{p} seconds (mean over {len(v)} timed items)": round(float(np.mean(v)), 1) if v else None
               for p, v in known.items()}}


# -- presentation (the chapter "Making FG-CAM conserve and discriminate") ---------------------------------------

def _fmt(iv) -> str:
    """``mean [low, high]``; an interval over fewer than :data:`fgcam.claims.MIN_IMAGES` items says so."""
    from fgcam.claims import MIN_IMAGES

    if iv is None:
        return ""
    few = f" (n = {iv.n}: too few to decide)" if iv.n is not None and iv.n < MIN_IMAGES else ""
    return f"{iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}]{few}"


def display_table(store_rows: list[dict], part: str, measures=None, n_resamples: int = stats.N_RESAMPLES):
    """:func:`table` with each interval written ``mean [low, high]``, indexed by (variant, layer)."""
    t = table(store_rows, part, measures, n_resamples)
    return t.set_index(["variant", "layer"]).map(_fmt)


def comparison(store_rows: list[dict], layer: str = "Input", n_resamples: int = stats.N_RESAMPLES):
    """One row per variant at ``layer``: the share of relevance reaching it, the two-class rank correlation and the
    grid cell share (means with 95 % intervals over composites), and the paired differences of the cell share
    against the paper's FG-Grad-CAM, CLRP and SGLRP, and of Over-all (photos) against the paper's, as
    ``mean [low, high]`` strings (empty where the store lacks the data)."""
    import pandas as pd

    paper = VARIANTS[0].name
    out = []
    for v in VARIANTS:
        row = {"variant": v.name}
        for m in ("reached", "rank_corr", "cell_share"):
            vals = list(_values(store_rows, "grid", v.name, layer, m).values())
            row[m] = _fmt(stats.bootstrap_ci(vals, n_resamples=n_resamples)) if vals else ""
        for other, part, m, other_layer in ((paper, "grid", "cell_share", layer), ("CLRP", "grid", "cell_share", "Input"),
                                            ("SGLRP", "grid", "cell_share", "Input"), (paper, "photo", "overall", layer)):
            key = f"{'Over-all' if m == 'overall' else 'cell share'} - {other}"
            if v.name == other:
                row[key] = ""
                continue
            try:
                row[key] = _fmt(compare(store_rows, part, m, (v.name, layer), (other, other_layer), n_resamples))
            except ValueError:
                row[key] = ""
        out.append(row)
    return pd.DataFrame(out).set_index("variant")


def verdict_frame(results: list[dict]):
    """:func:`verdicts` as a DataFrame: claim, variant, verdict, the deciding interval(s) and the rule."""
    import pandas as pd

    return pd.DataFrame([{"claim": r["claim"], "variant": r["variant"], "verdict": r["verdict"],
                          "interval": _fmt(r["interval"]),
                          "Over-all interval": _fmt(r.get("overall_interval")), "rule": r["rule"]}
                         for r in results]).set_index(["claim", "variant"])


def interval_bars(ax, store_rows: list[dict], part: str, measure: str, keys, chance: float | None = None,
                  title: str | None = None, n_resamples: int = stats.N_RESAMPLES) -> None:
    """Horizontal error bars: the mean of ``measure`` with its 95 % interval for each ``(variant, layer)`` of
    ``keys`` (missing ones left out); a dashed line at ``chance``."""
    labels, ivs = [], []
    for variant, layer in keys:
        vals = list(_values(store_rows, part, variant, layer, measure).values())
        if vals:
            labels.append(f"{variant} @ {layer}")
            ivs.append(stats.bootstrap_ci(vals, n_resamples=n_resamples))
    y = np.arange(len(ivs))[::-1]
    est = np.array([i.estimate for i in ivs])
    err = np.array([[i.estimate - i.low for i in ivs], [i.high - i.estimate for i in ivs]])
    ax.errorbar(est, y, xerr=err, fmt="o", capsize=3, label=f"mean, 95 % interval (n = {ivs[0].n if ivs else 0})")
    if chance is not None:
        ax.axvline(chance, ls="--", c="grey", label="chance")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(measure)
    ax.set_title(title or measure)
    ax.legend(fontsize=7, loc="best")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fgcam.variants", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v1_0.75_192")
    ap.add_argument("--images", help="folder of ImageNet photos (default $FGCAM_IMAGENET_SAMPLES)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--describe", action="store_true", help="print what the store at --out holds, run nothing")
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--composites", type=int, default=100)
    ap.add_argument("--cascade", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.describe:
        print(json.dumps(describe(args.out), indent=1))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = run(args.model, args.images, args.out, args.photos, args.composites, args.cascade, args.seed,
              log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
