"""The runner: the paper's experiments over an image source, into the resumable store (:mod:`fgcam.store`).

Work is split into *units*: batch ``b`` of images (a fixed, global partition of the image list) x one setting
(method, layer). One :func:`fgcam.explain` call per unit, then every metric on that batch. Under ``torchrun``
(``RANK``/``WORLD_SIZE`` set) batch ``b`` belongs to rank ``b % WORLD_SIZE``; since batches are the same for any
number of processes, K processes give the same rows as one (with the same ``batch_size``: a batch's images go
through the model together, so another batch size may change the last digits).

Speed: FG-Score-CAM(D) at every layer share one Score-CAM weighting per batch (:meth:`fgcam.Explainer.weights`,
passed as ``weights=``), and on
the CPU the metrics' forward passes use a channels-last copy of the model (about 1.5-2x faster; the explanations
use the model as given).
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import math
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

import fgcam
from fgcam import metrics as M
from fgcam.explain import METHODS, ChannelWeights, Explainer
from fgcam.settings import (METRICS, POINTING_PROTOCOL, Setting, UsageError, _KIND, _check_metrics, make_grid,
                            protocol_for, table_for)
from fgcam.sources import ImageNetSource, ShapesSource
from fgcam.store import (_STORE_VERSION, _check_manifest, _clean_tmp, _command_line, _log_run, _write_shard,
                         merge_store, model_fingerprint, read_rows)

__all__ = ["EvalConfig", "evaluate"]



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
    metric_batch_size: int | None = None  # images per pass in the metrics; None: metrics.default_batch_size
    score_batch_size: int | None = None  # masked images per pass in Score-CAM; None: metrics.default_batch_size
    target: str = "predicted"  # "predicted" (arg-max on the clean image, as the paper) or "label"
    device: str | None = None
    channels_last: bool | None = None  # metrics' forward passes on a channels-last copy; None: on CPU only
    quiet: bool = False
    max_units: int | None = None  # stop after this many computed units (tests, smoke runs)
    model: str | None = None  # real profile: the model's name (default fgcam.real.DEFAULT_MODEL)
    images: Path | None = None  # real profile: the photo folder (default $FGCAM_IMAGENET_SAMPLES)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _key(image_id: str, s: Setting, metric: str) -> str:
    return f"{image_id}|{s.name}|{s.layer}|{metric}"


def _setup(config: EvalConfig, model, source, device):
    """Resolve the profile, model and data (model/source may be injected by the caller)."""
    from fgcam import profiles

    if config.profile == "real":
        from fgcam import real

        try:
            return real.setup(config, model, source, device)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
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
    return model.eval().to(device), source, model_name, None


def evaluate(config: EvalConfig, model: nn.Module | None = None, source=None) -> dict:
    """Run (or continue) the evaluation described by ``config`` into the store ``config.out``.

    ``model`` and ``source`` (an object with ``ids``, ``kinds``, ``has_masks``, ``load(positions)``) replace the
    profile's when given. Returns counts: ``units`` (computed here), ``skipped`` (already done), ``rows``
    (written here), ``seconds``, and, on rank 0, ``total_rows`` (in the merged store).  A single-process run
    stopped by SIGTERM or SIGINT merges the store and records the run (``"stopped"`` in ``runs.jsonl``), then
    raises ``SystemExit(143)`` or ``KeyboardInterrupt``.
    """
    t0 = time.time()
    metrics = _check_metrics(config.metrics)
    grid = make_grid(config.methods, config.layers)
    if config.target not in ("predicted", "label"):
        raise UsageError(f"target must be 'predicted' or 'label', not {config.target!r}")
    for what, v in (("batch size", config.batch_size), ("metric batch size", config.metric_batch_size),
                    ("score batch size", config.score_batch_size)):
        if v is not None and int(v) < 1:
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
    model, source, model_name, layer_map = _setup(config, model, source, device)
    from fgcam.graph import leaf_names

    if layer_map is not None:  # the paper's layer names, mapped to this model by resolution
        grid = make_grid(config.methods, config.layers, layer_map)

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
        **({"layer_map": layer_map} if layer_map is not None else {}),
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

    explainer = None  # made at the first batch, when the images' shape sizes the batches of forward passes
    channels_last = torch.device(device).type == "cpu" if config.channels_last is None else config.channels_last
    metric_model = copy.deepcopy(model).to(memory_format=torch.channels_last) if channels_last else model
    clock = _ForwardClock(model, metric_model)
    unit_images = 0  # sum over computed units of their images: / len(grid) = images through the whole grid
    common = {"profile": config.profile, "seed": config.seed, "target_mode": config.target,
              "fgcam_version": fgcam.__version__, "torch_version": torch.__version__,
              "device": torch.device(device).type}
    per_unit = {b: len(range(b * bs, min((b + 1) * bs, len(source.ids)))) / len(grid) for b in my_batches}
    bar = _progress(my_images, sum(per_unit[b] * (len(grid) - len(ss)) for b, ss in work), quiet)
    computed = rows_written = 0
    with _StopSignals(world.size == 1) as signals, contextlib.ExitStack() as stack:
        if bar is not None:
            stack.callback(bar.close)
        for b, settings in work:
            if not settings:
                continue
            if config.max_units is not None and computed >= config.max_units:
                break
            positions = list(range(b * bs, min((b + 1) * bs, len(source.ids))))
            batch = source.load(positions)
            shared: dict = {}  # this batch's channel weights shared by its settings (_shared_weights)
            images = batch["images"].to(device)
            if explainer is None:  # the batch sizes not given: measured from the model (recorded in runs.jsonl)
                config = replace(config, **{k: M.default_batch_size(model, images)
                                            for k in ("metric_batch_size", "score_batch_size")
                                            if getattr(config, k) is None})
                explainer = Explainer(model, score_batch_size=int(config.score_batch_size))
            with torch.no_grad():
                prediction = model(images).argmax(1)
            labels = torch.as_tensor(batch["labels"]).to(device)
            targets = prediction if config.target == "predicted" else labels
            if batch.get("targets") is not None:  # targets fixed by the source (grid cells); -1: the run's mode
                fixed = torch.as_tensor(batch["targets"]).to(device)
                targets = torch.where(fixed >= 0, fixed, targets)
            for s in settings:
                if config.max_units is not None and computed >= config.max_units:
                    break
                if bar is not None:
                    bar.set_postfix_str(f"{s.name} @ {s.layer}", refresh=False)
                rows = _run_unit(metric_model, explainer, s, todo(b, s), positions, batch, images, targets, labels,
                                 prediction, source, config, common, shared)
                keys = sorted(r["key"] for r in rows)
                digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]
                with signals.deferred():  # a stop signal waits until the shard is written and counted
                    _write_shard(out, f"b{b:06d}-{s.slug.replace('@', '-at-')}-{digest}", rows)
                    done.update(keys)
                    computed += 1
                    rows_written += len(rows)
                    unit_images += len(positions)
                if bar is not None:
                    bar.update(min(per_unit[b], bar.total - bar.n))  # float sums may overshoot the total
    stopped = signals.stopped  # SIGTERM or SIGINT: what is done is in the shards; record the run, then stop
    if stopped is not None:
        _log(f"fgcam evaluate: {stopped.name} after {computed} units: merging the store and recording the run", quiet)
    world.barrier()
    clock.close()
    all_units, all_rows, all_images, forward_s = world.sum([computed, rows_written, unit_images, clock.seconds])
    result = {"units": computed, "skipped": n_total_units - n_units, "rows": rows_written, "rank": world.rank,
              "world_size": world.size}
    if world.rank == 0:
        result["total_rows"] = merge_store(out)
        _log_run(out, {"started": datetime.datetime.fromtimestamp(t0).astimezone().isoformat(timespec="seconds"),
                       "seconds": round(time.time() - t0, 1), "units": int(all_units), "rows": int(all_rows),
                       "total_rows": result["total_rows"], "images": len(source.ids), "settings": len(grid),
                       "metrics": metrics, "batch_size": bs, "metric_batch_size": config.metric_batch_size,
                       "score_batch_size": config.score_batch_size,
                       "world_size": world.size, "device": device,
                       **({"stopped": stopped.name} if stopped is not None else {}),
                       "threads": torch.get_num_threads(), "metrics_channels_last": channels_last,
                       **_speed(time.time() - t0, forward_s, all_images / len(grid), world.size),
                       "command": _command_line(), "host": platform.node(), "python": platform.python_version(),
                       "fgcam_version": fgcam.__version__, "torch_version": torch.__version__})
    world.barrier()
    result["seconds"] = time.time() - t0
    speed = _speed(result["seconds"], forward_s, all_images / len(grid), world.size)
    result.update(speed)
    _log(f"fgcam evaluate: {speed['images_per_hour']} images/hour through the grid, "
         f"{100 * (speed['forward_share'] or 0):.0f} % of the wall time in forward passes", quiet)
    _log(f"fgcam evaluate: {int(all_units)} units, {int(all_rows)} rows written in {result['seconds']:.1f} s; "
         f"store {out / 'rows.jsonl'} holds {result.get('total_rows', '?')} rows", quiet)
    if stopped is not None:
        stopped.reraise()
    return result


class _Stop(BaseException):
    """Raised by :class:`_StopSignals`' handler: the run was asked to stop (``signum``)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name

    def reraise(self):
        """End as the signal would have ended the run: ``KeyboardInterrupt`` for SIGINT, else exit 128 + signum."""
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + self.signum)


class _StopSignals:
    """While the units run (``with``), SIGTERM and SIGINT raise :class:`_Stop` in the main thread; it ends the
    block without propagating and :attr:`stopped` holds it, so that a stopped run still merges its shards and writes
    its record (wall time, units, photos per hour, forward share) to ``runs.jsonl``.  Inside :meth:`deferred` (a
    shard's write and its counts) the signal waits for the block's end.  The previous handlers are back as soon as
    the ``with`` ends, so a second signal stops the process at once.  Only for a single process (``enabled``): a
    rank of a multi-process run that left early would hang the others."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.stopped: _Stop | None = None  # the stop that ended the block, which does not propagate
        self._deferring = False
        self._pending: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self._deferring:
            self._pending = signum
        else:
            raise _Stop(signum)

    def __enter__(self):
        if self.enabled:
            self._previous = {s: signal.signal(s, self._handler) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, exc_type, exc, tb):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
        if isinstance(exc, _Stop):
            self.stopped = exc
            return True
        return False

    @contextlib.contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending is not None:
            raise _Stop(self._pending)


class _ForwardClock:
    """Wall time spent inside the models' forward passes (the recorded pass of each explanation, Score-CAM's masked
    passes and the metrics' perturbed passes), by a pre/post forward hook on each top-level model."""

    def __init__(self, *models: nn.Module):
        self.seconds = 0.0
        self._start: float | None = None
        self._handles = []
        for m in dict.fromkeys(models):  # the same model once
            self._handles += [m.register_forward_pre_hook(self._pre), m.register_forward_hook(self._post)]

    def _pre(self, module, args):
        if self._start is None:
            self._start = time.perf_counter()

    def _post(self, module, args, output):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def close(self):
        for h in self._handles:
            h.remove()
        self._handles = []


def _speed(wall: float, forward: float, images_through_grid: float, processes: int) -> dict:
    """The run record's speed fields: images through the whole grid per hour, and the share of the processes' wall
    time spent in the models' forward passes."""
    return {"images_through_grid": round(images_through_grid, 3),
            "images_per_hour": round(3600.0 * images_through_grid / wall, 2) if wall > 0 else None,
            "forward_seconds": round(forward, 1),
            "forward_share": round(forward / (wall * processes), 4) if wall > 0 else None}


def _shared_weights(explainer: Explainer, s: Setting, shared: dict, images, targets, wanted) -> ChannelWeights | None:
    """The Score-CAM weights of an FG-Score-CAM(D) setting, computed once per batch and set of images.

    FG-Score-CAM and FG-Score-CAMD at every layer need the same Score-CAM weights at the CAM layer (C masked
    forward passes per image, the most expensive step of the grid): they depend on the model, the images and the
    target only, so the first such setting of a batch computes them (:meth:`fgcam.Explainer.weights`) and the others
    pass them as ``weights=`` (the same maps, bit for bit).  ``shared`` is the batch's store; None for the other
    methods (whose weights cost one backward pass, or which have none).
    """
    m = METHODS[s.method]
    if m.family != "fg" or m.base != "score-cam":
        return None
    key = (m.base, tuple(wanted))  # a resumed batch may explain a subset of its images for some settings
    if key not in shared:
        shared[key] = explainer.weights(images, s.method, target=targets)
    return shared[key]


def _progress(total: float, initial: float, quiet: bool):
    """A tqdm bar over this rank's images (a unit = 1/len(grid) of its batch's images), or None when quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", dynamic_ncols=True, smoothing=0.1, file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} img [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


def _run_unit(metric_model, explainer, s: Setting, need: dict, positions, batch, images, targets, labels, prediction,
              source, config, common, shared: dict | None = None) -> list[dict]:
    """One explain call for the images of the batch that still need something, then the metrics (whose forward
    passes use ``metric_model``: the model itself or its channels-last copy)."""
    wanted = sorted({p for ps in need.values() for p in ps})
    local = {p: i for i, p in enumerate(positions)}
    idx = torch.as_tensor([local[p] for p in wanted], device=images.device)
    weights = None if shared is None else _shared_weights(explainer, s, shared, images[idx], targets[idx], wanted)
    maps = explainer.explain(images[idx], s.method, s.module, target=targets[idx], denoise=s.denoise,
                             weights=weights).detach()
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
            if getattr(source, "positive_share", False):
                vals["positive_share"] = M.positive_energy_share(
                    sal, torch.as_tensor(boxes)[kc].to(sal.device), size=tuple(x.shape[-2:]))
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
