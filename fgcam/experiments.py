"""The paper's experiments: a resumable, shardable runner and the tables it produces.

One *row* of the results store is one (image, method, layer, metric) evaluation::

    {"key": "shapes-s0-00017|FG-Grad-CAMD|Layer13|adai", "image_id": "shapes-s0-00017", "image_index": 17,
     "label": 3, "target": 3, "prediction": 3, "method": "FG-Grad-CAMD", "fgcam_method": "fg-grad-cam",
     "denoise": true, "layer": "Layer13", "module": "features.13", "table": 1, "metric": "adai",
     "values": {"average_drop_pct": 12.3, "average_increase_pct": 0.0}, "protocol": "fgcam-paper",
     "protocol_settings": {...}, "profile": "offline", "seed": 0, "target_mode": "predicted",
     "fgcam_version": "0.1.0", "torch_version": "2.14.1", "device": "cpu"}

Metrics (``metric`` -> ``values``; the paper's table; the images used):

* ``adai`` -> ``average_drop_pct`` (100 * max(0, Y - O) / Y) and ``average_increase_pct`` (100 * [O > Y]) per
  image, whose means are AD and AI; Table 1 at hidden layers with protocol ``fgcam-paper``, Table 4 at the
  input with ``fgcam-paper-input``; faithfulness images.
* ``insdel`` -> ``insertion``, ``deletion``, ``overall``; Tables 2 and 5, protocol ``fgcam-paper``;
  faithfulness images.
* ``pointing`` -> ``energy_proportion`` (energy-based pointing game on the box) and, when the data has
  pixel-exact masks (offline profile), ``mask_energy``; Tables 3 and 6; localisation images.

The store's layout and crash safety are described in :mod:`fgcam.store`; how work is split into units, sharded
under ``torchrun`` and timed, in :mod:`fgcam.runner`.

The code lives in one module per stage: :mod:`fgcam.settings` (the grid, names, tables, protocols),
:mod:`fgcam.sources` and :mod:`fgcam.real` (image sources), :mod:`fgcam.store` (the resumable store),
:mod:`fgcam.runner` (:func:`evaluate`) and :mod:`fgcam.summaries` (tables).  This module gathers their public
names, so ``from fgcam import experiments as E`` gives the whole pipeline.
"""
from __future__ import annotations

from fgcam.runner import EvalConfig, evaluate
from fgcam.settings import (HIDDEN_GRID, INPUT_GRID, METRIC_VALUES, METRICS, PAPER_LAYERS, PAPER_METHOD_NAMES,  # noqa: F401
                            PAPER_METHODS, POINTING_PROTOCOL, Setting, UsageError, _KIND, default_grid, make_grid,
                            protocol_for, resolve_layer, resolve_method, table_for)
from fgcam.sources import ImageNetSource, ShapesSource
from fgcam.store import _store_files, merge_store, model_fingerprint, read_rows  # noqa: F401
from fgcam.summaries import published_rows, summarize

__all__ = [
    "PAPER_LAYERS", "PAPER_METHODS", "PAPER_METHOD_NAMES", "POINTING_PROTOCOL", "HIDDEN_GRID", "INPUT_GRID", "METRICS", "METRIC_VALUES", "Setting",
    "UsageError", "resolve_method", "resolve_layer", "default_grid", "make_grid",
    "table_for", "protocol_for", "ShapesSource", "ImageNetSource", "EvalConfig", "evaluate", "read_rows",
    "merge_store", "summarize", "published_rows", "model_fingerprint",
]
