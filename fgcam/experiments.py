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
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

import fgcam
from fgcam import metrics as M
from fgcam.explain import METHODS, Explainer

__all__ = [
    "PAPER_LAYERS", "PAPER_METHODS", "HIDDEN_GRID", "INPUT_GRID", "METRICS", "METRIC_VALUES", "Setting",
    "UsageError", "score_cam_cache", "resolve_method", "resolve_layer", "default_grid", "make_grid",
    "table_for", "protocol_for", "ShapesSource", "ImageNetSource", "EvalConfig", "evaluate", "read_rows", "merge_store", "summarize",
    "published_rows", "model_fingerprint",
]

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
    "pointing": ("energy_proportion", "mask_energy"),
}
_KIND = {"adai": "faithfulness", "insdel": "faithfulness", "pointing": "localisation"}
_TABLES = {("adai", False): 1, ("insdel", False): 2, ("pointing", False): 3,
           ("adai", True): 4, ("insdel", True): 5, ("pointing", True): 6}
POINTING_PROTOCOL = {
    "name": "energy-pointing-game",
    "saliency": "bilinear upsampling (align_corners=False) to the image grid, ReLU, per-image min-max",
    "boxes": "x1, y1 inclusive; x2, y2 exclusive, image pixels",
    "mask_energy": "same energy with the object's pixel mask (offline profile)",
}

_STORE_VERSION = 1


class UsageError(ValueError):
    """A bad option, name or path given by the user (the command line prints it as one line, exit code 2)."""


# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------


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


def resolve_layer(name: str) -> tuple[str, str]:
    """A layer as the user writes it -> (display name, module name): ``Layer13``/``features.13``/``input``."""
    s = name.strip()
    lower = {k.lower(): k for k in PAPER_LAYERS}
    if s.lower() in lower:
        paper = lower[s.lower()]
        return paper, PAPER_LAYERS[paper]
    if s in _MODULE_TO_LAYER:
        return _MODULE_TO_LAYER[s], s
    if not s:
        raise UsageError("empty layer name")
    return s, s  # another module: checked against the model when the run starts


def default_grid(layers: Sequence[str] | None = None) -> list[Setting]:
    """The paper's grid for ``layers`` (default: Layer33, Layer23, Layer13, Input): hidden layers get
    :data:`HIDDEN_GRID`, the input gets :data:`INPUT_GRID`."""
    return make_grid(None, layers)


def make_grid(methods: Sequence[str] | None, layers: Sequence[str] | None) -> list[Setting]:
    """Settings for ``methods`` x ``layers``; ``methods=None`` = the paper's methods for each layer.

    Combinations fgcam cannot compute (a plain CAM method at the input) are left out; an empty grid is an error.
    """
    layer_list = [resolve_layer(x) for x in (layers or list(PAPER_LAYERS))]
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


# ----------------------------------------------------------------------------------------------------------------
# Image sources
# ----------------------------------------------------------------------------------------------------------------


class ShapesSource:
    """The offline profile's images: ``fgcam.data.make_shapes(n, seed)``; ids ``shapes-s{seed}-{index:05d}``.

    The first ``n_faithfulness`` images serve AD/AI and insertion/deletion, the first ``n_localisation`` the
    pointing game (the same stream, so the smaller set is a prefix of the larger). Masks are exact.
    """

    has_masks = True

    def __init__(self, n_faithfulness: int, n_localisation: int, seed: int):
        from fgcam import data

        self._data = data
        self.seed = int(seed)
        n = max(n_faithfulness, n_localisation)
        self.ids = [f"shapes-s{self.seed}-{i:05d}" for i in range(n)]
        self.kinds = [frozenset(k for k, m in (("faithfulness", n_faithfulness), ("localisation", n_localisation))
                                if i < m) for i in range(n)]
        self.description = (f"fgcam.data.make_shapes(n, seed={self.seed}): {n_faithfulness} faithfulness, "
                            f"{n_localisation} localisation images")

    def load(self, positions: Sequence[int]) -> dict:
        lo, hi = min(positions), max(positions) + 1
        d = self._data.make_shapes(hi - lo, self.seed, raw=False, offset=lo)
        sel = torch.as_tensor([p - lo for p in positions])
        return {k: d[k][sel] for k in ("images", "labels", "boxes", "masks")}


class ImageNetSource:
    """The paper profile's images: ILSVRC2012 validation images sampled from ``seed``
    (``fgcam.imagenet.sample_faithfulness`` / ``sample_localisation``); ids are the file stems."""

    has_masks = False  # box masks only: the mask energy would repeat the box energy

    def __init__(self, profile, n_faithfulness: int, n_localisation: int, seed: int):
        from fgcam import imagenet, profiles

        self._ds = profiles._imagenet_dataset(**profile.imagenet)
        faith = imagenet.sample_faithfulness(self._ds, n_faithfulness, seed) if n_faithfulness else []
        loc = imagenet.sample_localisation(self._ds, n_localisation, seed) if n_localisation else []
        f, l_ = set(faith), set(loc)
        self._indices = sorted(f | l_)
        self.ids = [Path(self._ds.files[i]).stem for i in self._indices]
        self.kinds = [frozenset(k for k, s in (("faithfulness", f), ("localisation", l_)) if i in s)
                      for i in self._indices]
        self.description = (f"ILSVRC2012 val in {self._ds.root}: {n_faithfulness} faithfulness and "
                            f"{n_localisation} localisation images drawn from seed {seed}")

    def load(self, positions: Sequence[int]) -> dict:
        d = self._ds.load([self._indices[p] for p in positions])
        return {"images": d["images"], "labels": d["labels"], "boxes": d.get("boxes"), "masks": None}


# ----------------------------------------------------------------------------------------------------------------
# Store
# ----------------------------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: temporary file in the same folder, fsync, rename, fsync folder."""
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _dumps(row: dict) -> str:
    return json.dumps(row, sort_keys=False, separators=(",", ":"), allow_nan=True)


def _iter_file(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not a JSON line ({err})") from None


def _store_files(out: Path) -> list[Path]:
    files = [out / "rows.jsonl"] if (out / "rows.jsonl").exists() else []
    shards = out / "shards"
    if shards.is_dir():
        files += sorted(p for p in shards.glob("*.jsonl") if not p.name.startswith("."))
    return files


def read_rows(out: str | Path) -> list[dict]:
    """Every row of the store in ``out`` (merged file and shards), each key once (the first copy wins)."""
    out = Path(out)
    seen, rows = set(), []
    for path in _store_files(out):
        for row in _iter_file(path):
            if row["key"] not in seen:
                seen.add(row["key"])
                rows.append(row)
    return rows


def _row_order(row: dict):
    layer, method = row.get("layer", ""), row.get("method", "")
    lrank = _LAYER_ORDER.index(layer) if layer in _LAYER_ORDER else len(_LAYER_ORDER)
    mrank = _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER)
    return (row.get("table", 0), lrank, layer, mrank, method, row.get("metric", ""), row.get("image_id", ""),
            row["key"])


def merge_store(out: str | Path) -> int:
    """Fold every shard into ``rows.jsonl`` (sorted, one row per key, written atomically), then delete the
    folded shards. Safe to interrupt at any point. Returns the number of rows."""
    out = Path(out)
    shards = [p for p in _store_files(out) if p.parent.name == "shards"]
    rows = sorted(read_rows(out), key=_row_order)
    if shards or not (out / "rows.jsonl").exists():
        _atomic_write(out / "rows.jsonl", "".join(_dumps(r) + "\n" for r in rows))
        for p in shards:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        _fsync_dir(out / "shards")
    return len(rows)


def _write_shard(out: Path, name: str, rows: list[dict]) -> Path:
    path = out / "shards" / f"{name}.jsonl"
    _atomic_write(path, "".join(_dumps(r) + "\n" for r in rows))
    return path


def _clean_tmp(out: Path) -> None:
    for folder in (out, out / "shards"):
        if folder.is_dir():
            for p in folder.glob(".tmp-*"):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


def _command_line() -> str:
    """This process's command line, ``python -m fgcam ...`` when run as the module."""
    import shlex

    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "fgcam":
        argv[0] = "python -m fgcam"
        return argv[0] + (" " + shlex.join(argv[1:]) if argv[1:] else "")
    return shlex.join(argv)


def _log_run(out: Path, record: dict) -> None:
    """Append one record per finished run to ``DIR/runs.jsonl`` (rewritten atomically)."""
    path = out / "runs.jsonl"
    old = path.read_text() if path.exists() else ""
    _atomic_write(path, old + json.dumps(record) + "\n")


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes and bytes), first 16 hex digits."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _check_manifest(out: Path, manifest: dict, write: bool) -> None:
    """Refuse a store made with other settings; write the manifest (atomically) when it is new."""
    path = out / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        for k in ("store_version", "profile", "model", "model_sha256", "seed", "target_mode"):
            if old.get(k) != manifest.get(k):
                raise UsageError(f"{out} holds results for {k}={old.get(k)!r}, this run has {k}={manifest.get(k)!r}; "
                                 "use another --out folder")
    elif write:
        _atomic_write(path, json.dumps(manifest, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Distributed
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    device: str = "cpu"

    def barrier(self):
        if self.size > 1:
            torch.distributed.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (every rank gets it)."""
        if self.size == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def close(self):
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _world(device: str) -> _World:
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return _World()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    owns = False
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(hours=6))
        owns = True
    return _World(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, owns,
                  f"cuda:{local_rank}" if device.startswith("cuda") else "cpu")


# ----------------------------------------------------------------------------------------------------------------
# Runner
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """What :func:`evaluate` runs (the command line's ``evaluate`` options)."""

    out: Path
    profile: str = "offline"
    methods: Sequence[str] | None = None  # None: the paper's methods per layer
    layers: Sequence[str] | None = None  # None: Layer33, Layer23, Layer13, Input
    metrics: Sequence[str] = METRICS
    n: int | None = None  # both kinds of images; None: the profile's sizes
    n_localisation: int | None = None  # overrides n for the pointing game
    seed: int = 0
    batch_size: int = 16  # images per unit (one explain call)
    metric_batch_size: int = 128  # perturbed images per forward pass in AD/AI and insertion/deletion
    score_batch_size: int = 64  # masked images per forward pass in Score-CAM
    target: str = "predicted"  # "predicted" (arg-max on the clean image, as the paper) or "label"
    device: str | None = None
    channels_last: bool | None = None  # metrics' forward passes on a channels-last copy; None: on CPU only
    quiet: bool = False
    max_units: int | None = None  # stop after this many computed units (tests, smoke runs)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _key(image_id: str, s: Setting, metric: str) -> str:
    return f"{image_id}|{s.name}|{s.layer}|{metric}"


def _setup(config: EvalConfig, model, source, device):
    """Resolve the profile, model and data (model/source may be injected by the caller)."""
    from fgcam import profiles

    if source is None or model is None:
        try:
            prof = profiles.get_profile(config.profile)
        except ValueError as err:
            raise UsageError(str(err)) from None
        n_f = config.n or prof.n_faithfulness
        n_l = config.n_localisation or config.n or prof.n_localisation
        if source is None:
            source = (ShapesSource(n_f, n_l, config.seed) if prof.name == "offline"
                      else ImageNetSource(prof, n_f, n_l, config.seed))
        if model is None:
            model = prof.load_model()
        model_name = prof.model_name
    else:
        model_name = getattr(model, "fgcam_name", type(model).__name__)
    return model.eval().to(device), source, model_name


def evaluate(config: EvalConfig, model: nn.Module | None = None, source=None) -> dict:
    """Run (or continue) the evaluation described by ``config`` into the store ``config.out``.

    ``model`` and ``source`` (an object with ``ids``, ``kinds``, ``has_masks``, ``load(positions)``) replace the
    profile's when given. Returns counts: ``units`` (computed here), ``skipped`` (already done), ``rows``
    (written here), ``seconds``, and, on rank 0, ``total_rows`` (in the merged store).
    """
    t0 = time.time()
    metrics = _check_metrics(config.metrics)
    grid = make_grid(config.methods, config.layers)
    if config.target not in ("predicted", "label"):
        raise UsageError(f"target must be 'predicted' or 'label', not {config.target!r}")
    for what, v in (("batch size", config.batch_size), ("metric batch size", config.metric_batch_size),
                    ("score batch size", config.score_batch_size)):
        if int(v) < 1:
            raise UsageError(f"{what} must be >= 1, got {v}")
    if config.n is not None and config.n < 1:
        raise UsageError(f"n must be >= 1, got {config.n}")
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    world = _world(device)
    lock = None
    try:
        if device == "cuda" and world.size > 1:
            device = f"cuda:{world.local_rank}"
        if world.rank == 0:
            (Path(config.out) / "shards").mkdir(parents=True, exist_ok=True)
            lock = _lock(Path(config.out))
        return _evaluate(config, metrics, grid, device, world, model, source, t0)
    finally:
        if lock is not None:
            lock.close()
        world.close()


def _lock(out: Path):
    """Rank 0 holds an exclusive ``flock`` on ``DIR/.lock`` while it runs (the OS drops it if the process dies), so
    that two runs never write the same store at once. None where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    f = open(out / ".lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UsageError(f"another fgcam evaluate is writing to {out}; wait for it to end or use another --out") \
            from None
    return f


def _evaluate(config, metrics, grid, device, world, model, source, t0) -> dict:
    quiet = config.quiet or world.rank != 0
    model, source, model_name = _setup(config, model, source, device)
    from fgcam.graph import leaf_names

    modules = {name for name, _ in model.named_modules() if name}
    for s in grid:
        if s.module != "input" and s.module not in modules:
            shown = [n for n in leaf_names(model) if n.startswith("features.")] or leaf_names(model)
            raise UsageError(f"unknown layer {s.module!r} for model {model_name}; valid layers: input, "
                             + ", ".join(shown[:60]) + (" ..." if len(shown) > 60 else ""))
    out = Path(config.out)
    manifest = {
        "store_version": _STORE_VERSION,
        "profile": config.profile,
        "model": model_name,
        "model_sha256": model_fingerprint(model),
        "seed": config.seed,
        "target_mode": config.target,
        "data": source.description,
        "fgcam_version": fgcam.__version__,
        "torch_version": torch.__version__,
    }
    if world.rank == 0:
        _clean_tmp(out)  # left by a killed run (rank 0 holds the store's lock)
    world.barrier()
    _check_manifest(out, manifest, write=world.rank == 0)
    world.barrier()

    done = {r["key"] for r in read_rows(out)}
    needs = [[m for m in metrics if _KIND[m] in kinds] for kinds in source.kinds]
    bs = int(config.batch_size)
    n_batches = math.ceil(len(source.ids) / bs)
    my_batches = [b for b in range(n_batches) if b % world.size == world.rank]
    my_images = sum(len(range(b * bs, min((b + 1) * bs, len(source.ids)))) for b in my_batches)

    def todo(b: int, s: Setting) -> dict[str, list[int]]:
        """metric -> positions of batch b still missing for setting s."""
        rng = range(b * bs, min((b + 1) * bs, len(source.ids)))
        return {m: [p for p in rng if m in needs[p] and _key(source.ids[p], s, m) not in done] for m in metrics}

    work = [(b, [s for s in grid if any(todo(b, s).values())]) for b in my_batches]
    n_units = sum(len(ss) for _, ss in work)
    n_total_units = len(my_batches) * len(grid)
    _log(f"fgcam evaluate: profile {config.profile}, model {model_name}, device {device}, "
         f"{len(source.ids)} images ({source.description}), {len(grid)} settings x {metrics}, "
         f"batch {bs}, {world.size} process(es); store {out}: {len(done)} rows done, "
         f"{n_units}/{n_total_units} units to run on rank 0", quiet)

    explainer = Explainer(model, score_batch_size=int(config.score_batch_size))
    channels_last = torch.device(device).type == "cpu" if config.channels_last is None else config.channels_last
    metric_model = copy.deepcopy(model).to(memory_format=torch.channels_last) if channels_last else model
    common = {"profile": config.profile, "seed": config.seed, "target_mode": config.target,
              "fgcam_version": fgcam.__version__, "torch_version": torch.__version__,
              "device": torch.device(device).type}
    per_unit = {b: len(range(b * bs, min((b + 1) * bs, len(source.ids)))) / len(grid) for b in my_batches}
    bar = _progress(my_images, sum(per_unit[b] * (len(grid) - len(ss)) for b, ss in work), quiet)
    computed = rows_written = 0
    cache: dict = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(score_cam_cache(cache))
        if bar is not None:
            stack.callback(bar.close)
        for b, settings in work:
            if not settings:
                continue
            if config.max_units is not None and computed >= config.max_units:
                break
            positions = list(range(b * bs, min((b + 1) * bs, len(source.ids))))
            batch = source.load(positions)
            cache.clear()
            images = batch["images"].to(device)
            with torch.no_grad():
                prediction = model(images).argmax(1)
            labels = torch.as_tensor(batch["labels"]).to(device)
            targets = prediction if config.target == "predicted" else labels
            for s in settings:
                if config.max_units is not None and computed >= config.max_units:
                    break
                if bar is not None:
                    bar.set_postfix_str(f"{s.name} @ {s.layer}", refresh=False)
                rows = _run_unit(metric_model, explainer, s, todo(b, s), positions, batch, images, targets, labels,
                                 prediction, source, config, common)
                keys = sorted(r["key"] for r in rows)
                digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]
                _write_shard(out, f"b{b:06d}-{s.slug.replace('@', '-at-')}-{digest}", rows)
                done.update(keys)
                computed += 1
                rows_written += len(rows)
                if bar is not None:
                    bar.update(min(per_unit[b], bar.total - bar.n))  # float sums may overshoot the total
    world.barrier()
    all_units, all_rows = world.sum([computed, rows_written])
    result = {"units": computed, "skipped": n_total_units - n_units, "rows": rows_written, "rank": world.rank,
              "world_size": world.size}
    if world.rank == 0:
        result["total_rows"] = merge_store(out)
        _log_run(out, {"started": datetime.datetime.fromtimestamp(t0).astimezone().isoformat(timespec="seconds"),
                       "seconds": round(time.time() - t0, 1), "units": int(all_units), "rows": int(all_rows),
                       "total_rows": result["total_rows"], "images": len(source.ids), "settings": len(grid),
                       "metrics": metrics, "batch_size": bs, "world_size": world.size, "device": device,
                       "threads": torch.get_num_threads(), "metrics_channels_last": channels_last,
                       "command": _command_line(), "host": platform.node(), "python": platform.python_version(),
                       "fgcam_version": fgcam.__version__, "torch_version": torch.__version__})
    world.barrier()
    result["seconds"] = time.time() - t0
    _log(f"fgcam evaluate: {int(all_units)} units, {int(all_rows)} rows written in {result['seconds']:.1f} s; "
         f"store {out / 'rows.jsonl'} holds {result.get('total_rows', '?')} rows", quiet)
    return result


@contextlib.contextmanager
def score_cam_cache(cache: dict):
    """Memoise ``fgcam.components.score_cam_weights`` while a batch is processed.

    FG-Score-CAM and FG-Score-CAMD at every layer need the same Score-CAM weights at the CAM layer (C masked
    forward passes per image, the most expensive step of the grid): the weights depend only on the model, the
    images, the CAM layer's activations and the target, so they are computed once per batch (``cache`` is
    cleared by the caller for each batch). The function is restored on exit.
    """
    from fgcam import components as comp

    original = getattr(comp, "score_cam_weights", None)
    if original is None:
        yield
        return

    def digest(t) -> str:
        if not isinstance(t, torch.Tensor):
            return repr(t)
        t = t.detach().cpu().contiguous()
        return hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy()
                            .tobytes()).hexdigest()

    def cached(model, images, A, target, *args, **kwargs):
        key = (id(model), digest(images), digest(A), digest(target), repr(args), repr(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original(model, images, A, target, *args, **kwargs)
        return cache[key].clone()

    comp.score_cam_weights = cached
    try:
        yield
    finally:
        comp.score_cam_weights = original


def _progress(total: float, initial: float, quiet: bool):
    """A tqdm bar over this rank's images (a unit = 1/len(grid) of its batch's images), or None when quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", dynamic_ncols=True, smoothing=0.1, file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} img [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


def _run_unit(metric_model, explainer, s: Setting, need: dict, positions, batch, images, targets, labels, prediction,
              source, config, common) -> list[dict]:
    """One explain call for the images of the batch that still need something, then the metrics (whose forward
    passes use ``metric_model``: the model itself or its channels-last copy)."""
    wanted = sorted({p for ps in need.values() for p in ps})
    local = {p: i for i, p in enumerate(positions)}
    idx = torch.as_tensor([local[p] for p in wanted], device=images.device)
    maps = explainer.explain(images[idx], s.method, s.module, target=targets[idx], denoise=s.denoise).detach()
    sub = {p: i for i, p in enumerate(wanted)}
    rows = []
    for metric, ps in need.items():
        if not ps:
            continue
        j = torch.as_tensor([sub[p] for p in ps], device=images.device)
        k = torch.as_tensor([local[p] for p in ps], device=images.device)
        x, sal, t = images[k], maps[j], targets[k]
        proto = protocol_for(s, metric)
        if metric == "adai":
            r = M.average_drop_increase(metric_model, x, sal, target=t, protocol=proto,
                                        batch_size=config.metric_batch_size)
            vals = {"average_drop_pct": 100.0 * r["drop"], "average_increase_pct": 100.0 * r["increase"].double()}
        elif metric == "insdel":
            r = M.insertion_deletion(metric_model, x, sal, target=t, protocol=proto,
                                     batch_size=config.metric_batch_size)
            vals = {"insertion": r["insertion"], "deletion": r["deletion"], "overall": r["overall"]}
        else:
            boxes = batch["boxes"]
            if boxes is None:
                raise ValueError("the pointing game needs boxes, and this data has none")
            kc = k.cpu()
            vals = {"energy_proportion": M.energy_pointing_game(sal, torch.as_tensor(boxes)[kc].to(sal.device),
                                                                size=tuple(x.shape[-2:]))}
            if source.has_masks and batch.get("masks") is not None:
                vals["mask_energy"] = M.mask_energy(sal, batch["masks"][kc].to(sal.device))
        settings = proto.as_dict() if proto is not None else POINTING_PROTOCOL
        vals = {name: v.detach().double().cpu().tolist() for name, v in vals.items()}
        for i, p in enumerate(ps):
            li = local[p]
            rows.append({
                "key": _key(source.ids[p], s, metric),
                "image_id": source.ids[p],
                "image_index": p,
                "label": int(labels[li]),
                "target": int(targets[li]),
                "prediction": int(prediction[li]),
                "method": s.name,
                "fgcam_method": s.method,
                "denoise": s.denoise,
                "layer": s.layer,
                "module": s.module,
                "table": table_for(s, metric),
                "metric": metric,
                "values": {name: v[i] for name, v in vals.items()},
                "protocol": settings["name"],
                "protocol_settings": settings,
                **common,
            })
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------

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

_SUMMARY_FIELDS = ["table", "layer", "metric", "method", "value", "n_images", "profile", "protocol"]
_COMPARISON_FIELDS = ["table", "layer", "metric", "method", "value", "paper", "difference", "n_images", "profile",
                      "protocol"]
_METRIC_LABEL = {"average_drop_pct": "AD (%)", "average_increase_pct": "AI (%)", "insertion": "Insertion",
                 "deletion": "Deletion", "overall": "Over-all", "energy_proportion": "Energy",
                 "mask_energy": "Mask energy"}
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
    groups: dict[tuple, list[float]] = {}
    meta: dict[tuple, tuple] = {}
    for r in rows:
        for name, v in r["values"].items():
            k = (r["table"], r["layer"], name, r["method"], r["protocol"])
            groups.setdefault(k, []).append(float(v))
            meta[k] = (r["profile"],)
    out = []
    for k, vs in groups.items():
        table, layer, metric, method, protocol = k
        out.append({"table": table, "layer": layer, "metric": metric, "method": method,
                    "value": math.fsum(vs) / len(vs), "n_images": len(vs), "profile": meta[k][0],
                    "protocol": protocol})
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
        lines.append("| Method | " + " | ".join(f"{la} {_METRIC_LABEL.get(m, m)}" for la, m in cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for meth in methods:
            cells = []
            for la, m in cols:
                r = cell.get((meth, la, m))
                if r is None:
                    cells.append("")
                else:
                    cells.append(f"{_fmt(m, r['value'])} ({_fmt(m, r['paper'])})")
            lines.append(f"| {meth} | " + " | ".join(cells) + " |")
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
        comparison.append({**{k: r[k] for k in ("table", "layer", "metric", "method", "value")}, "paper": p,
                           "difference": None if p is None else r["value"] - p,
                           **{k: r[k] for k in ("n_images", "profile", "protocol")}})
    profiles_ = sorted({r["profile"] for r in rows})
    md = (f"# FG-CAM paper tables from `{out}`\n\n"
          f"Means over images of the per-image values in `rows.jsonl` ({len(rows)} rows); in brackets the value "
          "published in the paper (VGG16-BN on ILSVRC2012 val, 2,000 / 500 images).\n\n"
          + _markdown(comparison, ", ".join(profiles_)))
    files = []
    if write:
        _write_csv(out / "summary.csv", _SUMMARY_FIELDS, summary)
        _write_csv(out / "comparison.csv", _COMPARISON_FIELDS, comparison)
        _atomic_write(out / "summary.md", md + "\n")
        files = [out / "summary.csv", out / "comparison.csv", out / "summary.md"]
    return {"summary": summary, "comparison": comparison, "markdown": md, "files": files}
