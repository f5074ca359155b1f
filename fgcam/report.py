"""Tables and figures of results, for the book's chapters.

The chapters show only the steps their prose discusses; the presentation code lives here so that it is tested
once (``tests/test_report.py``) instead of copied into every notebook.

* :func:`to_image`, :func:`heat`: a normalised image back to ``[0, 1]`` and a map's display form (ReLU, min-max);
* :func:`table`: a pandas DataFrame as a styled HTML table (pandas Styler), the book's replacement for
  ``print(df.to_string())``;
* :func:`map_grid`: images in rows, maps in columns, one title per column;
* :func:`pipeline_figure`: the FG-CAM pipeline of Eq. (2)-(8) of the paper as a diagram;
* :func:`spread`, :func:`bootstrap_ci`: the spread of per-image values and a percentile bootstrap interval of
  their mean, for verdicts that must say "inconclusive" when a difference lies inside the noise;
* :func:`png_data_uri`, :func:`static_explorer_html`: maps as small PNG data URIs and an HTML+JavaScript
  widget that switches among them without a kernel (the static explorer page);
* :func:`layer_table`, :func:`side_by_side`, :func:`published_layout`, :func:`plot_layers`: a results store's
  comparison rows (``fgcam.experiments.summarize(...)["comparison"]``) and the published rows
  (``fgcam.experiments.published_rows()``) in the paper's layout of Tables 1-6, and plotted against the layer;
* :func:`protocol_of`, :func:`verdict_details`, :func:`live_check`: the protocol a store recorded for a table, the
  claims' verdicts as a table, and a small live run of the pipeline summarised as a table.
"""

from __future__ import annotations

import base64
import html as _html
import io
import json

import numpy as np
import torch

__all__ = ["to_image", "heat", "table", "map_grid", "pipeline_figure", "spread", "bootstrap_ci",
           "compare_means", "png_data_uri", "decode_png_levels", "image_data_uri",
           "static_explorer_html", "METRIC_LABEL", "layer_table", "side_by_side", "published_layout",
           "plot_layers", "protocol_of", "verdict_details", "live_check"]


def to_image(img: torch.Tensor) -> torch.Tensor:
    """One normalised image ``[3, H, W]`` back to ``[H, W, 3]`` in ``[0, 1]``, for ``imshow``."""
    from fgcam.data import denormalize

    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"to_image expects one image [3, H, W]; got shape {tuple(img.shape)}")
    return denormalize(img[None].detach().cpu())[0].permute(1, 2, 0).clamp(0, 1)


def heat(m: torch.Tensor) -> torch.Tensor:
    """ReLU and division by the maximum, for display only (fgcam itself returns signed maps).

    A map with no positive value is returned as zeros.
    """
    m = m.detach().clamp(min=0).cpu()
    top = m.max()
    return m / top if top > 0 else m


def table(df, caption: str | None = None, precision: int = 3):
    """``df`` as a styled HTML table (a pandas ``Styler``): numbers rounded, a caption, compact cells.

    Display it as the last expression of a cell, or with ``IPython.display.display``. Non-numeric cells are
    left as they are.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    styler = df.style.format(precision=precision, na_rep="–")
    if caption:
        styler = styler.set_caption(caption)
    return styler.set_table_styles([
        {"selector": "th, td", "props": [("padding", "2px 8px"), ("font-size", "0.85em")]},
        {"selector": "caption", "props": [("caption-side", "top"), ("text-align", "left")]},
    ])


def map_grid(images, maps: dict, titles=None, size: float = 1.9, overlay: bool = False):
    """A figure with one row per image: the image, then one panel per map in ``maps`` (``{name: [B, h, w]}``).

    Maps are shown with :func:`heat` and the ``jet`` colour map; ``overlay=True`` draws them over the grey
    image (nearest-neighbour upsampling). ``titles`` optionally names each row's image.
    """
    import matplotlib.pyplot as plt

    names = list(maps)
    n, cols = len(images), len(maps) + 1
    fig, axes = plt.subplots(n, cols, figsize=(size * cols, size * n), squeeze=False)
    side = images.shape[-1]
    for i in range(n):
        axes[i, 0].imshow(to_image(images[i]))
        if titles is not None:
            axes[i, 0].set_title(str(titles[i]), fontsize=8)
        for j, name in enumerate(names, start=1):
            m = maps[name]
            if m.shape[0] != n:
                raise ValueError(f"map {name!r} has {m.shape[0]} images, expected {n}")
            ax = axes[i, j]
            if overlay:
                ax.imshow(to_image(images[i]).mean(-1), cmap="gray", vmin=0, vmax=1)
                ax.imshow(heat(m[i]), cmap="jet", alpha=0.55, extent=(0, side, side, 0),
                          interpolation="nearest")
            else:
                ax.imshow(heat(m[i]), cmap="jet", interpolation="nearest")
            if i == 0:
                ax.set_title(str(name).replace(" @ ", "\n"), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


STAGES = (
    ("CAM weights", "one weight per channel\nfrom any CAM method\n(Grad-CAM, Score-CAM, ...)"),
    ("components", "keep the channels apart\nEq. (3): weight x activation\nat the last block"),
    ("denoising\n(optional)", "FG-CAM_D: low-rank\napproximation of the\ncentred components"),
    ("propagation", "layer by layer, Eq. (4)-(7)\nz+ in hidden layers,\nz^B at the input"),
    ("sum", "Eq. (8): sum over the\nchannels of the\ntarget layer"),
)


def pipeline_figure(stages=STAGES):
    """The FG-CAM pipeline as boxes and arrows: weights -> components -> (denoising) -> propagation -> sum.

    The optional stage is drawn dashed. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(2.3 * len(stages), 2.3))
    ax.set_xlim(0, len(stages))
    ax.set_ylim(0, 1)
    ax.axis("off")
    for i, (name, text) in enumerate(stages):
        optional = "optional" in name
        box = FancyBboxPatch((i + 0.06, 0.08), 0.78, 0.84, boxstyle="round,pad=0.02",
                             linestyle="--" if optional else "-", linewidth=1.2,
                             facecolor="#f3f3f3" if optional else "#dbe9f6", edgecolor="#333333")
        ax.add_patch(box)
        ax.text(i + 0.45, 0.78, name, ha="center", va="center", fontsize=9, fontweight="bold")
        ax.text(i + 0.45, 0.38, text, ha="center", va="center", fontsize=7.5)
        if i + 1 < len(stages):
            ax.add_patch(FancyArrowPatch((i + 0.86, 0.5), (i + 1.04, 0.5), arrowstyle="-|>",
                                         mutation_scale=12, color="#333333"))
    fig.tight_layout()
    return fig


def spread(values) -> dict:
    """``{"n", "mean", "std", "min", "max"}`` of a 1-D sequence of per-image values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("spread of an empty sequence")
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def bootstrap_ci(values, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling the values with replacement).

    ``fgcam.stats.bootstrap_ci`` is used instead when it exists (its ``Interval``'s low and high are returned).
    """
    try:
        from fgcam.stats import bootstrap_ci as _stats_ci  # the stats helper's version, once merged
    except ImportError:
        _stats_ci = None
    if _stats_ci is not None:
        r = _stats_ci(values, n_resamples=n_resamples, seed=seed, level=level)
        if hasattr(r, "low") and hasattr(r, "high"):  # fgcam.stats.Interval(estimate, low, high, ...)
            return float(r.low), float(r.high)
        lo, hi = r
        return float(lo), float(hi)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("bootstrap_ci of an empty sequence")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_resamples, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def compare_means(a, b, lower_is_better: bool = False, **bootstrap) -> dict:
    """Is ``a`` better than ``b``? Paired per-image values; the verdict is "inconclusive" when the bootstrap
    interval of the mean difference ``a - b`` contains 0.

    Returns ``{"difference", "ci", "verdict"}`` with verdict ``"a better"``, ``"b better"`` or ``"inconclusive"``.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same length; got {a.size} and {b.size}")
    d = a - b
    lo, hi = bootstrap_ci(d, **bootstrap)
    if lo <= 0 <= hi:
        verdict = "inconclusive"
    else:
        a_wins = (hi < 0) if lower_is_better else (lo > 0)
        verdict = "a better" if a_wins else "b better"
    return {"difference": float(d.mean()), "ci": (lo, hi), "verdict": verdict}


def png_data_uri(m, cmap: str = "jet", size: int | None = None) -> str:
    """A map ``[h, w]`` as a ``data:image/png;base64,...`` URI: :func:`heat` (a tensor) or values in ``[0, 1]``
    (an array), quantised to 256 levels of the colour map and stored as a palette PNG (small), optionally resized
    to ``size`` x ``size`` (nearest neighbour, so the map's own resolution stays visible)."""
    from PIL import Image

    from fgcam.plotting import colorize

    if isinstance(m, torch.Tensor):
        m = heat(m).double().numpy()
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"png_data_uri expects a map [h, w]; got shape {m.shape}")
    levels = np.round(np.clip(m, 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(levels, mode="L").convert("P")
    img.putpalette(colorize(np.linspace(0, 1, 256)[None, :], cmap)[0].reshape(-1).tolist())
    if size is not None:
        img = img.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png_levels(uri: str) -> np.ndarray:
    """The palette indices (levels 0-255) of a PNG written by :func:`png_data_uri`, for tests."""
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    if img.mode != "P":
        raise ValueError(f"not a palette PNG of png_data_uri (mode {img.mode})")
    return np.asarray(img)


def image_data_uri(img: torch.Tensor, size: int | None = None) -> str:
    """A normalised image ``[3, H, W]`` as a PNG data URI (see :func:`to_image`)."""
    from PIL import Image

    rgb = (to_image(img).numpy() * 255).round().astype(np.uint8)
    pil = Image.fromarray(rgb)
    if size is not None:
        pil = pil.resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def static_explorer_html(controls: dict, images: dict, key_order: list, element_id: str = "fgcam-explorer",
                         originals: dict | None = None, messages: dict | None = None,
                         captions: dict | None = None) -> str:
    """An HTML+JavaScript widget that needs no kernel: one ``<select>`` per control, one ``<img>``.

    ``controls`` is ``{control name: [option, ...]}`` in display order; ``images`` maps a key
    ``"|".join(option of each control in key_order)`` to a PNG data URI; choices without a precomputed map show
    a message. ``originals`` optionally maps the value of the first control to the photo's data URI, shown
    beside the map. ``messages`` maps keys without a map to the reason (e.g. fgcam's error message);
    ``captions`` maps the value of the first control to a line of text shown under the images. The widget's
    ``<img>`` carries ``data-key``, the key it shows, for tests.
    """
    if list(controls) != list(key_order):
        raise ValueError(f"key_order {key_order} must list the controls {list(controls)} in order")
    for key in images:
        parts = key.split("|")
        if len(parts) != len(key_order) or any(p not in controls[c] for p, c in zip(parts, key_order)):
            raise ValueError(f"image key {key!r} does not name one option of each control {key_order}")
    eid = _html.escape(element_id)
    selects = "".join(
        f'<label style="margin-right:1em">{_html.escape(name)} '
        f'<select data-control="{_html.escape(name)}">'
        + "".join(f'<option value="{_html.escape(str(o))}">{_html.escape(str(o))}</option>' for o in options)
        + "</select></label>"
        for name, options in controls.items()
    )
    script = f"""
(function() {{
  var root = document.getElementById({json.dumps(element_id)});
  var MAPS = {json.dumps(images)};
  var ORIG = {json.dumps(originals or {})};
  var MSG = {json.dumps(messages or {})};
  var CAP = {json.dumps(captions or {})};
  var ORDER = {json.dumps(list(key_order))};
  var selects = root.querySelectorAll("select[data-control]");
  var img = root.querySelector("img.fgcam-map"), photo = root.querySelector("img.fgcam-photo");
  var note = root.querySelector(".fgcam-note"), cap = root.querySelector(".fgcam-caption");
  function update() {{
    var values = {{}};
    selects.forEach(function(s) {{ values[s.getAttribute("data-control")] = s.value; }});
    var key = ORDER.map(function(c) {{ return values[c]; }}).join("|");
    if (photo && ORIG[values[ORDER[0]]]) {{ photo.src = ORIG[values[ORDER[0]]]; }}
    if (cap) {{ cap.textContent = CAP[values[ORDER[0]]] || ""; }}
    if (MAPS[key]) {{
      img.src = MAPS[key]; img.setAttribute("data-key", key); img.style.visibility = "visible";
      note.textContent = "";
    }} else {{
      img.setAttribute("data-key", ""); img.style.visibility = "hidden";
      note.textContent = MSG[key] || ("not precomputed for this choice: " + key);
    }}
  }}
  selects.forEach(function(s) {{ s.addEventListener("change", update); }});
  update();
}})();
"""
    return (f'<div id="{eid}" class="fgcam-static-explorer">'
            f'<div style="margin-bottom:0.5em">{selects}</div>'
            '<img class="fgcam-photo" alt="image" style="width:192px;height:192px;margin-right:8px;'
            'image-rendering:pixelated"/>'
            '<img class="fgcam-map" alt="map" data-key="" style="width:192px;height:192px;'
            'image-rendering:pixelated"/>'
            '<div class="fgcam-caption" style="font-size:0.85em"></div>'
            '<div class="fgcam-note" style="font-size:0.85em"></div>'
            f"<script>{script}</script></div>")


# ----------------------------------------------------------------------------------------------------------------
# Tables 1-6 of the paper: methods x layers, ours next to the published values
# ----------------------------------------------------------------------------------------------------------------

#: Column labels of the paper's metrics.
METRIC_LABEL = {"average_drop_pct": "AD (%)", "average_increase_pct": "AI (%)", "insertion": "Insertion",
                "deletion": "Deletion", "overall": "Over-all", "energy_proportion": "Energy (box)",
                "mask_energy": "Energy (mask)"}


def _frame(rows):
    import pandas as pd

    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def layer_table(frame, table: int, metric: str, methods, layers, column: str = "value"):
    """Methods x layers for one metric of one table: rows in the order of ``methods`` (those present), columns in
    the order of ``layers`` (a missing cell is NaN).

    ``frame``: long rows with ``table, metric, method, layer`` and ``column`` (a DataFrame or a list of dicts).
    """
    f = _frame(frame)
    missing = {"table", "metric", "method", "layer", column} - set(f.columns)
    if missing:
        raise ValueError(f"layer_table needs the columns {sorted(missing)}; the rows have {sorted(f.columns)}")
    f = f[(f["table"] == table) & (f["metric"] == metric)]
    if f.empty:
        raise ValueError(f"no rows for table {table}, metric {metric!r}")
    t = f.pivot(index="method", columns="layer", values=column)
    return t.reindex(index=[m for m in methods if m in t.index], columns=list(layers))


def side_by_side(ours, published, table: int, metric: str, methods, layers):
    """Ours, published and ours − published for each layer: one row per method (in the order of ``methods``
    present in ``ours``), columns ``(layer, "ours" | "published" | "ours − published")``."""
    import pandas as pd

    o = layer_table(ours, table, metric, methods, layers)
    p = layer_table(published, table, metric, methods, layers).reindex(index=o.index)
    parts = {(la, kind): f[la] for la in layers
             for kind, f in (("ours", o), ("published", p), ("ours − published", o - p))}
    return pd.DataFrame(parts)


def published_layout(published, table: int, metrics, methods, layers):
    """The published table as printed: one row per method, one column ``"<layer> <metric label>"`` per layer and
    metric (layers outer, metrics inner, as in the paper)."""
    f = _frame(published)
    f = f[f["table"] == table]
    t = f.pivot(index="method", columns=["layer", "metric"], values="value")
    t = t.reindex(index=list(methods), columns=[(la, m) for la in layers for m in metrics])
    t.columns = [f"{la} {METRIC_LABEL.get(m, m)}" for la, m in t.columns]
    return t


def plot_layers(panels: dict, table: int, metric: str, methods, layers, xlabel: str = "layer"):
    """One panel per entry of ``panels`` (``{title: long rows}``, e.g. ours and published): the metric against the
    layer, one line per method (FG methods solid with circles, the others dashed with squares), each panel
    with its own legend. Returns the figure."""
    import matplotlib.pyplot as plt

    label = METRIC_LABEL.get(metric, metric)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, (who, frame) in zip(axes[0], panels.items()):
        t = layer_table(frame, table, metric, methods, layers)
        for method in t.index:
            ax.plot(list(layers), t.loc[method].to_numpy(dtype=float), "o-" if method.startswith("FG") else "s--",
                    ms=4, label=method)
        ax.set_title(f"Table {table}, {label}: {who}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    return fig


def plot_methods(rows, table: int, metrics, methods, ours_label: str = "ours"):
    """One panel per metric of one table at one layer (e.g. the input, Tables 4-6): per method, our value with
    its 95 % interval as an error bar and the published value as a red cross; each panel with its own legend.

    ``rows``: comparison rows of ``fgcam.experiments.summarize`` (``table, metric, method, value, ci_low,
    ci_high, paper``; a missing ``paper`` is not drawn). Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    f = _frame(rows)
    missing = {"table", "metric", "method", "value", "ci_low", "ci_high", "paper"} - set(f.columns)
    if missing:
        raise ValueError(f"plot_methods needs the columns {sorted(missing)}; the rows have {sorted(f.columns)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        t = f[(f["table"] == table) & (f["metric"] == metric)].set_index("method")
        if t.empty:
            raise ValueError(f"no rows for table {table}, metric {metric!r}")
        t = t.reindex([m for m in methods if m in t.index])
        x = np.arange(len(t))
        v = t["value"].to_numpy(dtype=float)
        err = np.vstack([v - t["ci_low"].to_numpy(dtype=float), t["ci_high"].to_numpy(dtype=float) - v])
        handles = [ax.errorbar(x, v, yerr=err, fmt="o", ms=4, capsize=3, label=f"{ours_label} (95 % interval)")]
        pub = t["paper"].to_numpy(dtype=float)
        if np.isfinite(pub).any():
            handles += ax.plot(x, pub, "x", color="tab:red", ms=6, label="published")
        label = METRIC_LABEL.get(metric, metric)
        ax.set_xticks(x, list(t.index), rotation=60, ha="right", fontsize=7)
        ax.set_title(f"Table {table}, {label}", fontsize=9)
        ax.set_ylabel(label)
        ax.legend(handles=handles, fontsize=6.5)
    fig.tight_layout()
    return fig


def protocol_of(rows, table: int):
    """``(name, settings)``: the one protocol that the store's ``rows`` recorded for ``table``; a clear error when
    the table has no rows or several protocols."""
    rows = [r for r in rows if r["table"] == table]
    names = sorted({r["protocol"] for r in rows})
    settings = {json.dumps(r["protocol_settings"], sort_keys=True) for r in rows}
    if len(names) != 1 or len(settings) != 1:
        raise ValueError(f"table {table}: expected one protocol in the store, found {len(names)} name(s) {names} "
                         f"and {len(settings)} setting(s)")
    return names[0], json.loads(settings.pop())


def verdict_details(verdicts, published_verdicts=None):
    """The claims' verdicts (``fgcam.claims.verdicts``) as a DataFrame indexed by claim: the paper's words, the
    rule, our verdict and outcome, the evidence, saturated metrics and, optionally, the verdict of the same rule
    on the published numbers."""
    import pandas as pd

    pub = {v["id"]: v["verdict"] for v in (published_verdicts or [])}
    out = pd.DataFrame([{"claim": v["id"], "verdict": v["verdict"], "paper": v["paper"], "rule": v["rule"],
                         "ours": v["outcome"], "evidence": v["evidence"],
                         "saturated": "; ".join(v["saturated"]) or "none",
                         **({"on the published numbers": pub.get(v["id"], "–")} if published_verdicts is not None
                            else {})} for v in verdicts])
    return out.set_index("claim") if len(out) else out


def live_check(profile: str, metric: str, methods, layer: str, n: int):
    """``fgcam.experiments.evaluate`` on ``n`` images of ``profile`` into a temporary store; its comparison rows
    (method, layer, metric, value, paper, n_images, protocol) as a DataFrame."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from fgcam.experiments import EvalConfig, evaluate, summarize

    with tempfile.TemporaryDirectory() as tmp:
        evaluate(EvalConfig(out=Path(tmp), profile=profile, methods=list(methods), layers=[layer],
                            metrics=[metric], n=n, quiet=True))
        live = pd.DataFrame(summarize(tmp, write=False)["comparison"])
    return live[["method", "layer", "metric", "value", "paper", "n_images", "protocol"]].reset_index(drop=True)
