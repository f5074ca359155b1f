"""The resumable results store of the runner.

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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from fgcam.settings import UsageError, _LAYER_ORDER, _METHOD_ORDER

__all__ = ["STORE_VERSION", "read_rows", "merge_store", "model_fingerprint"]

STORE_VERSION = 1
_STORE_VERSION = STORE_VERSION



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
        for k in ("store_version", "profile", "model", "model_sha256", "seed", "target_mode", "layer_map"):
            if old.get(k) != manifest.get(k):
                raise UsageError(f"{out} holds results for {k}={old.get(k)!r}, this run has {k}={manifest.get(k)!r}; "
                                 "use another --out folder")
    elif write:
        _atomic_write(path, json.dumps(manifest, indent=2) + "\n")
