"""The paper's experimental grid: method and layer names, metrics, tables and protocols.

A :class:`Setting` is one (method, layer) of the grid; :func:`make_grid` builds the paper's grid (Tables 1-3 at the
hidden layers ``Layer33/23/13``, Tables 4-6 at the input) or any sub-grid, with the paper's layer names mapped to a
model's modules (:data:`PAPER_LAYERS` for VGG16-BN; :func:`fgcam.real.paper_layer_map` for other CNNs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from fgcam import metrics as M
from fgcam.explain import METHODS

__all__ = ["PAPER_LAYERS", "PAPER_METHODS", "PAPER_METHOD_NAMES", "HIDDEN_GRID", "INPUT_GRID", "METRICS",
           "METRIC_VALUES", "POINTING_PROTOCOL", "Setting", "UsageError", "resolve_method", "resolve_layer",
           "default_grid", "make_grid", "table_for", "protocol_for"]

#: The paper's layer names -> module names of VGG16-BN (the outputs of the 4th/3rd/2nd max-pool, the input).
PAPER_LAYERS = {"Layer33": "features.33", "Layer23": "features.23", "Layer13": "features.13", "Input": "input"}
_MODULE_TO_LAYER = {v: k for k, v in PAPER_LAYERS.items()}

#: The paper's method names -> (fgcam method, denoise). A trailing D = denoised.
PAPER_METHODS: dict[str, tuple[str, bool]] = {
    "Grad-CAM": ("grad-cam", False),
    "FG-Grad-CAM": ("fg-grad-cam", False),
    "FG-Grad-CAMD": ("fg-grad-cam", True),
    "Score-CAM": ("score-cam", False),
    "FG-Score-CAM": ("fg-score-cam", False),
    "FG-Score-CAMD": ("fg-score-cam", True),
    "Layer-CAM": ("layer-cam", False),
    "LRP": ("lrp", False),
    "CLRP": ("clrp", False),
    "SGLRP": ("sglrp", False),
}
_METHOD_TO_NAME = {v: k for k, v in PAPER_METHODS.items()}
#: (fgcam method, denoise) -> the paper's name.
PAPER_METHOD_NAMES = _METHOD_TO_NAME

#: The paper's grid: methods of Tables 1-3 (hidden layers) and Tables 4-6 (input), in the tables' order.
HIDDEN_GRID = ("Grad-CAM", "FG-Grad-CAM", "FG-Grad-CAMD", "Score-CAM", "FG-Score-CAM", "FG-Score-CAMD", "Layer-CAM")
INPUT_GRID = ("LRP", "CLRP", "SGLRP", "FG-Grad-CAM", "FG-Grad-CAMD", "FG-Score-CAM", "FG-Score-CAMD")
_METHOD_ORDER = list(dict.fromkeys(HIDDEN_GRID + INPUT_GRID))
_LAYER_ORDER = list(PAPER_LAYERS)

METRICS = ("adai", "insdel", "pointing")
#: Per-image values each metric writes (``mask_energy`` only where the data has masks).
METRIC_VALUES = {
    "adai": ("average_drop_pct", "average_increase_pct"),
    "insdel": ("insertion", "deletion", "overall"),
    "pointing": ("energy_proportion", "mask_energy", "positive_share"),
}
_KIND = {"adai": "faithfulness", "insdel": "faithfulness", "pointing": "localisation"}
_TABLES = {("adai", False): 1, ("insdel", False): 2, ("pointing", False): 3,
           ("adai", True): 4, ("insdel", True): 5, ("pointing", True): 6}
POINTING_PROTOCOL = {
    "name": "energy-pointing-game",
    "saliency": "bilinear upsampling (align_corners=False) to the image grid, ReLU, per-image min-max",
    "boxes": "x1, y1 inclusive; x2, y2 exclusive, image pixels",
    "mask_energy": "same energy with the object's pixel mask (offline profile)",
    "positive_share": "share of the positive energy in the box, no min-max normalisation (real profile's grid)",
}



class UsageError(ValueError):
    """A bad option, name or path given by the user (the command line prints it as one line, exit code 2)."""





@dataclass(frozen=True)
class Setting:
    """One (method, layer) of the grid: the paper's names and what :func:`fgcam.explain` gets."""

    name: str  # paper method name ("FG-Grad-CAMD"), or the fgcam name for methods outside the paper
    method: str  # fgcam method ("fg-grad-cam")
    denoise: bool
    layer: str  # paper layer name ("Layer13", "Input"), or the module name for layers outside the paper
    module: str  # module name ("features.13") or "input"

    @property
    def slug(self) -> str:
        return f"{self.method}{'-d' if self.denoise else ''}@{self.module}"

    @property
    def is_input(self) -> bool:
        return self.module == "input"


def resolve_method(name: str) -> tuple[str, str, bool]:
    """A method name as the user writes it -> (display name, fgcam method, denoise).

    Accepts the paper's names (``FG-Grad-CAMD``, case-insensitive), fgcam's names (``fg-grad-cam``, any of
    :data:`fgcam.METHODS`) and fgcam names with a denoise suffix (``fg-grad-cam-d``, ``fg-grad-cam+d``).
    """
    s = name.strip()
    lower = {k.lower(): k for k in PAPER_METHODS}
    if s.lower() in lower:
        paper = lower[s.lower()]
        return (paper, *PAPER_METHODS[paper])
    low = s.lower()
    if low in METHODS:
        return (_METHOD_TO_NAME.get((low, False), low), low, False)
    for suffix in ("-d", "+d", "_d", "d"):
        base = low[: -len(suffix)]
        if low.endswith(suffix) and base in METHODS and METHODS[base].family == "fg":
            return (_METHOD_TO_NAME.get((base, True), base + "-d"), base, True)
    valid = ", ".join(list(PAPER_METHODS) + [m for m in METHODS if (m, False) not in _METHOD_TO_NAME])
    raise UsageError(f"unknown method {name!r}; valid methods: {valid} (FG methods also with a trailing D)")


def resolve_layer(name: str, layer_map: dict[str, str] | None = None) -> tuple[str, str]:
    """A layer as the user writes it -> (display name, module name): ``Layer13``/``features.13``/``input``.

    ``layer_map`` maps the paper's names to the model's modules (default :data:`PAPER_LAYERS`, VGG16-BN's; for
    other models :func:`fgcam.real.paper_layer_map` computes it by resolution)."""
    layer_map = PAPER_LAYERS if layer_map is None else {k: v for k, v in layer_map.items() if k in PAPER_LAYERS}
    s = name.strip()
    lower = {k.lower(): k for k in layer_map}
    if s.lower() in lower:
        paper = lower[s.lower()]
        return paper, layer_map[paper]
    inverse = {v: k for k, v in layer_map.items()}
    if s in inverse:
        return inverse[s], s
    if not s:
        raise UsageError("empty layer name")
    return s, s  # another module: checked against the model when the run starts


def default_grid(layers: Sequence[str] | None = None) -> list[Setting]:
    """The paper's grid for ``layers`` (default: Layer33, Layer23, Layer13, Input): hidden layers get
    :data:`HIDDEN_GRID`, the input gets :data:`INPUT_GRID`."""
    return make_grid(None, layers)


def make_grid(methods: Sequence[str] | None, layers: Sequence[str] | None,
              layer_map: dict[str, str] | None = None) -> list[Setting]:
    """Settings for ``methods`` x ``layers``; ``methods=None`` = the paper's methods for each layer.

    Combinations fgcam cannot compute (a plain CAM method at the input) are left out; an empty grid is an error.
    ``layer_map``: the paper's layer names -> the model's modules (see :func:`resolve_layer`).
    """
    layer_list = [resolve_layer(x, layer_map) for x in (layers or list(PAPER_LAYERS))]
    layer_list = list(dict.fromkeys(layer_list))
    grid = []
    for disp_layer, module in layer_list:
        names = methods if methods is not None else (INPUT_GRID if module == "input" else HIDDEN_GRID)
        for m in names:
            disp, method, denoise = resolve_method(m)
            if module == "input" and METHODS[method].family == "cam":
                continue
            grid.append(Setting(disp, method, denoise, disp_layer, module))
    grid = list(dict.fromkeys(grid))
    if not grid:
        raise UsageError("no (method, layer) combination to evaluate: plain CAM methods (grad-cam, score-cam, "
                         "layer-cam) need a hidden layer")
    return grid


def table_for(setting: Setting, metric: str) -> int:
    """The paper's table number for a setting's metric (1-3 at hidden layers, 4-6 at the input)."""
    return _TABLES[(metric, setting.is_input)]


def protocol_for(setting: Setting, metric: str) -> M.Protocol | None:
    """The faithfulness protocol of a metric at a layer: AD/AI uses ``fgcam-paper-input`` at the input."""
    if metric == "adai":
        return M.get_protocol("fgcam-paper-input" if setting.is_input else "fgcam-paper")
    if metric == "insdel":
        return M.get_protocol("fgcam-paper")
    return None


def _check_metrics(metrics: Iterable[str]) -> list[str]:
    out = []
    for m in metrics:
        m = m.strip().lower()
        if m not in METRICS:
            raise UsageError(f"unknown metric {m!r}; valid metrics: {', '.join(METRICS)}")
        if m not in out:
            out.append(m)
    if not out:
        raise UsageError("no metric given")
    return out
