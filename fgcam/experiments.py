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

Store layout (``DIR``)::

    DIR/manifest.json     what the store holds (profile, seed, target mode, model fingerprint); a run with
                          other settings refuses to write into it
    DIR/shards/*.jsonl    one file per completed unit (batch of images x method x layer, all its metrics),
                          written to a temporary file, fsync'ed and renamed: a file is there whole or not at all
    DIR/rows.jsonl        the merged store: at the end of a run, rank 0 folds the shards into it (sorted,
                          de-duplicated by key, written atomically) and removes the folded shards
    DIR/runs.jsonl        one record per finished run: start, wall seconds, units and rows computed, processes,
                          device, threads, command line, host, versions
    DIR/.lock             rank 0 holds an exclusive flock on it while running: one run per store at a time

The done-key index is the set of ``key`` values in ``rows.jsonl`` and ``shards/``; a run computes only the keys
that are missing, so killing it at any moment and starting it again loses nothing and duplicates nothing (shard
names are a hash of the keys they hold, so even a unit computed twice lands in the same file). Readers
(:func:`read_rows`) de-duplicate by key as well.

Work is split into *units*: batch ``b`` of images (a fixed, global partition of the image list) x one setting
(method, layer). One :func:`fgcam.explain` call per unit, then every metric on that batch. Under ``torchrun``
(``RANK``/``WORLD_SIZE`` set) batch ``b`` belongs to rank ``b % WORLD_SIZE``; since batches are the same for any
number of processes, K processes give the same rows as one (with the same ``batch_size``: a batch's images go
through the model together, so another batch size may change the last digits).

Speed: FG-Score-CAM(D) at every layer share one Score-CAM weighting per batch (:func:`score_cam_cache`), and on
the CPU the metrics' forward passes use a channels-last copy of the model (about 1.5-2x faster; the explanations
use the model as given).


The code lives in one module per stage: :mod:`fgcam.settings` (the grid, names, tables, protocols),
:mod:`fgcam.sources` and :mod:`fgcam.real` (image sources), :mod:`fgcam.store` (the resumable store),
:mod:`fgcam.runner` (:func:`evaluate`) and :mod:`fgcam.summaries` (tables).  This module gathers their public
names, so ``from fgcam import experiments as E`` gives the whole pipeline.
"""
from __future__ import annotations

from fgcam.runner import EvalConfig, evaluate, score_cam_cache
from fgcam.settings import (HIDDEN_GRID, INPUT_GRID, METRIC_VALUES, METRICS, PAPER_LAYERS, PAPER_METHOD_NAMES,  # noqa: F401
                            PAPER_METHODS, POINTING_PROTOCOL, Setting, UsageError, _KIND, default_grid, make_grid,
                            protocol_for, resolve_layer, resolve_method, table_for)
from fgcam.sources import ImageNetSource, ShapesSource
from fgcam.store import _store_files, merge_store, model_fingerprint, read_rows  # noqa: F401
from fgcam.summaries import published_rows, summarize

__all__ = [
    "PAPER_LAYERS", "PAPER_METHODS", "PAPER_METHOD_NAMES", "POINTING_PROTOCOL", "HIDDEN_GRID", "INPUT_GRID", "METRICS", "METRIC_VALUES", "Setting",
    "UsageError", "score_cam_cache", "resolve_method", "resolve_layer", "default_grid", "make_grid",
    "table_for", "protocol_for", "ShapesSource", "ImageNetSource", "EvalConfig", "evaluate", "read_rows",
    "merge_store", "summarize", "published_rows", "model_fingerprint",
]
