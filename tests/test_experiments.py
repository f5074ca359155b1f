"""fgcam.experiments: the resumable, sharded runner and the summary tables.

A tiny seeded VGG16-BN-layout model and a 32 x 32 image source (``tests/tiny_eval.py``: :func:`tiny_model`,
:class:`TinySource`) keep every run to seconds. Covered: resume after a real SIGKILL (no row lost,
none duplicated), 2 torchrun processes == 1 process, deterministic sampling from a seed, crash-safe merging,
manifest checks, the paper's grid and names, and the summary tables.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fgcam import experiments as E
from fgcam import metrics as M

from conftest import PUBLISHED_CSV
from tiny_eval import LAYERS, METHODS, TinySource, tiny_model

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------------------------ helpers


def expected_keys(n: int, methods=METHODS, layers=LAYERS, metrics=E.METRICS, n_loc=None) -> set[str]:
    grid = E.make_grid(methods, layers)
    src = TinySource(n, n_localisation=n_loc)
    ids = src.ids
    return {f"{ids[i]}|{s.name}|{s.layer}|{m}" for s in grid for m in metrics for i in range(len(ids))
            if E._KIND[m] in src.kinds[i]}


def run_inproc(out, n=6, batch_size=2, threads=1, **kw):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kw.setdefault("metric_batch_size", 64)
        cfg = E.EvalConfig(out=out, methods=kw.pop("methods", METHODS), layers=kw.pop("layers", LAYERS),
                           batch_size=batch_size, quiet=True, **kw)
        return E.evaluate(cfg, model=tiny_model(), source=TinySource(n, n_localisation=kw.get("n_localisation")))
    finally:
        torch.set_num_threads(old)


def raw_lines(out: Path) -> list[dict]:
    """Every row in every file of the store, duplicates included."""
    return [json.loads(line) for p in E._store_files(out) for line in p.read_text().splitlines() if line.strip()]


def values(rows) -> dict:
    return {r["key"]: r for r in rows}


def assert_same_rows(a: list[dict], b: list[dict], tol: float = 1e-6):
    va, vb = values(a), values(b)
    assert va.keys() == vb.keys()
    for k in va:
        ra, rb = va[k], vb[k]
        assert {x: y for x, y in ra.items() if x != "values"} == {x: y for x, y in rb.items() if x != "values"}, k
        assert ra["values"].keys() == rb["values"].keys()
        for name in ra["values"]:
            assert abs(ra["values"][name] - rb["values"][name]) <= tol, (k, name, ra["values"], rb["values"])


RUNNER = r'''
import sys
sys.path.insert(0, {tests!r})
from tiny_eval import tiny_model, TinySource, METHODS, LAYERS
from fgcam import experiments as E
out, n, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = E.EvalConfig(out=out, methods=METHODS, layers=LAYERS, batch_size=bs, quiet=True, metric_batch_size=64)
print(E.evaluate(cfg, model=tiny_model(), source=TinySource(n)))
'''


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runner") / "run_eval.py"
    path.write_text(RUNNER.format(tests=str(TESTS)))
    return path


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    env.pop("FGCAM_PROFILE", None)
    return env


# ------------------------------------------------------------------------------------------------ names and grid


def test_paper_names_map_to_methods():
    assert E.resolve_method("FG-Grad-CAMD") == ("FG-Grad-CAMD", "fg-grad-cam", True)
    assert E.resolve_method("fg-score-camd") == ("FG-Score-CAMD", "fg-score-cam", True)
    assert E.resolve_method("fg-grad-cam-d") == ("FG-Grad-CAMD", "fg-grad-cam", True)
    assert E.resolve_method("grad-cam") == ("Grad-CAM", "grad-cam", False)
    assert E.resolve_method("SGLRP") == ("SGLRP", "sglrp", False)
    assert E.resolve_method("grad-cam++") == ("grad-cam++", "grad-cam++", False)
    with pytest.raises(E.UsageError, match="unknown method 'nope'"):
        E.resolve_method("nope")
    with pytest.raises(E.UsageError):
        E.resolve_method("grad-camd")  # denoise is for FG methods only
    assert E.resolve_layer("layer13") == ("Layer13", "features.13")
    assert E.resolve_layer("features.33") == ("Layer33", "features.33")
    assert E.resolve_layer("input") == ("Input", "input")


def test_default_grid_is_the_papers():
    grid = E.default_grid()
    assert len(grid) == 3 * 7 + 7
    hidden = [s.name for s in grid if s.layer == "Layer13"]
    assert hidden == list(E.HIDDEN_GRID)
    assert [s.name for s in grid if s.layer == "Input"] == list(E.INPUT_GRID)
    assert {s.module for s in grid} == {"features.33", "features.23", "features.13", "input"}
    s = next(s for s in grid if s.name == "FG-Score-CAMD" and s.layer == "Input")
    assert (s.method, s.denoise) == ("fg-score-cam", True)
    assert E.table_for(s, "adai") == 4 and E.protocol_for(s, "adai").name == "fgcam-paper-input"
    h = grid[0]
    assert E.table_for(h, "insdel") == 2 and E.protocol_for(h, "adai").name == "fgcam-paper"
    # explicit methods: plain CAM methods are left out at the input
    assert [(s.name, s.layer) for s in E.make_grid(["Grad-CAM", "LRP"], ["Layer23", "Input"])] == [
        ("Grad-CAM", "Layer23"), ("LRP", "Layer23"), ("LRP", "Input")]
    with pytest.raises(E.UsageError):
        E.make_grid(["Grad-CAM"], ["Input"])


def test_published_rows_match_the_vendored_csv():
    rows = E.published_rows()
    assert len(rows) == 168
    import csv

    with open(PUBLISHED_CSV) as f:
        csv_rows = {(int(r["table"]), r["layer"], r["metric"], r["method"]): float(r["value"])
                    for r in csv.DictReader(f)}
    assert {(r["table"], r["layer"], r["metric"], r["method"]): r["value"] for r in rows} == csv_rows


# ------------------------------------------------------------------------------------------------ sampling


def test_sampling_is_deterministic_from_the_seed():
    from fgcam import data

    a, b, c = E.ShapesSource(5, 3, seed=7), E.ShapesSource(5, 3, seed=7), E.ShapesSource(5, 3, seed=8)
    assert a.ids == b.ids and a.ids[0] == "shapes-s7-00000" and c.ids[0] == "shapes-s8-00000"
    assert [sorted(k) for k in a.kinds][:3] == [["faithfulness", "localisation"]] * 3
    assert a.kinds[4] == frozenset({"faithfulness"})
    x, ref = a.load([2, 3, 4]), data.make_shapes(5, 7, raw=False)
    for k in ("images", "labels", "boxes", "masks"):
        assert torch.equal(x[k], ref[k][2:5])
    assert not torch.equal(c.load([2])["images"], x["images"][:1])


def test_imagenet_source_sampling(tmp_path):
    try:
        from tests.fixtures_imagenet import make_imagenet_val
    except ImportError:
        from fixtures_imagenet import make_imagenet_val
    from types import SimpleNamespace

    fx = make_imagenet_val(tmp_path / "imagenet")
    prof = SimpleNamespace(imagenet={"val": str(fx.val), "bbox": str(fx.bbox), "labels": None,
                                     "synsets": str(fx.synsets)})
    a, b = E.ImageNetSource(prof, 5, 3, seed=1), E.ImageNetSource(prof, 5, 3, seed=1)
    assert a.ids == b.ids and a.kinds == b.kinds
    assert sum("faithfulness" in k for k in a.kinds) == 5 and sum("localisation" in k for k in a.kinds) == 3
    assert all(i.startswith("ILSVRC2012_val_") for i in a.ids)
    d = a.load([0, 1])
    assert d["images"].shape == (2, 3, 224, 224) and d["boxes"].shape == (2, 4) and d["masks"] is None
    # the paper profile end to end with the tiny model (it takes any input size): AD/AI and pointing game
    cfg = E.EvalConfig(out=tmp_path / "store", profile="paper", methods=["FG-Grad-CAM"], layers=["Input"],
                       metrics=["adai", "pointing"], batch_size=4, quiet=True)
    E.evaluate(cfg, model=tiny_model(), source=a)
    rows = E.read_rows(tmp_path / "store")
    assert len(rows) == 5 + 3
    loc = [r for r in rows if r["metric"] == "pointing"]
    assert {r["image_id"] for r in loc} == {i for i, k in zip(a.ids, a.kinds) if "localisation" in k}
    assert all(set(r["values"]) == {"energy_proportion"} for r in loc)  # box masks only: no mask energy
    assert all(r["table"] == 4 for r in rows if r["metric"] == "adai")


# ------------------------------------------------------------------------------------------------ the store


def test_rows_are_complete_and_carry_their_settings(tmp_path):
    res = run_inproc(tmp_path, n=4, n_localisation=3)
    rows = E.read_rows(tmp_path)
    assert values(rows).keys() == expected_keys(4, n_loc=3)
    assert res["total_rows"] == len(rows) == res["rows"]
    assert not list((tmp_path / "shards").glob("*.jsonl"))  # merged
    r = next(r for r in rows if r["method"] == "FG-Grad-CAMD" and r["layer"] == "Input" and r["metric"] == "adai")
    assert (r["fgcam_method"], r["denoise"], r["module"], r["table"]) == ("fg-grad-cam", True, "input", 4)
    assert r["protocol"] == "fgcam-paper-input" and r["protocol_settings"]["positive_only_if_at_most_half"]
    assert set(r["values"]) == {"average_drop_pct", "average_increase_pct"}
    assert r["values"]["average_increase_pct"] in (0.0, 100.0) and 0 <= r["values"]["average_drop_pct"] <= 100
    for k in ("image_id", "label", "target", "prediction", "profile", "seed", "device", "fgcam_version",
              "torch_version"):
        assert k in r
    assert r["target"] == r["prediction"]
    p = next(r for r in rows if r["metric"] == "pointing")
    assert set(p["values"]) == {"energy_proportion", "mask_energy"} and p["table"] in (3, 6)
    i = next(r for r in rows if r["metric"] == "insdel")
    assert abs(i["values"]["overall"] - (i["values"]["insertion"] - i["values"]["deletion"])) < 1e-6
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"] == "tiny-test-vgg" and manifest["seed"] == 0
    # a second run finds everything done and changes nothing
    before = (tmp_path / "rows.jsonl").read_bytes()
    again = run_inproc(tmp_path, n=4, n_localisation=3)
    assert again["units"] == 0 and again["rows"] == 0 and (tmp_path / "rows.jsonl").read_bytes() == before


def test_resume_after_partial_runs_gives_the_same_rows(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    run_inproc(full, n=6)
    for _ in range(3):  # three interrupted runs (stopped after a few units), then one to the end
        res = run_inproc(part, n=6, max_units=7)
        assert res["units"] == 7
    run_inproc(part, n=6)
    lines = raw_lines(part)
    assert len(lines) == len({r["key"] for r in lines}) == len(expected_keys(6))
    assert_same_rows(E.read_rows(part), E.read_rows(full), tol=0.0)
    assert (part / "rows.jsonl").read_bytes() == (full / "rows.jsonl").read_bytes()


def test_merge_is_crash_safe(tmp_path):
    run_inproc(tmp_path, n=2, methods=["FG-Grad-CAM"], layers=["Input"])
    rows = E.read_rows(tmp_path)
    # a crash after rows.jsonl was written but before the shards were deleted leaves duplicates on disk
    shard = tmp_path / "shards" / "b000000-leftover.jsonl"
    shard.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    (tmp_path / "shards" / ".tmp-b000001-x.jsonl-123").write_text('{"key": "torn')  # a torn temporary file
    assert len(raw_lines(tmp_path)) == len(rows) + 3
    assert values(E.read_rows(tmp_path)).keys() == values(rows).keys()
    assert E.merge_store(tmp_path) == len(rows)
    assert len(raw_lines(tmp_path)) == len(rows) and not shard.exists()
    run_inproc(tmp_path, n=2, methods=["FG-Grad-CAM"], layers=["Input"])  # cleans the temporary file
    assert not list((tmp_path / "shards").glob(".tmp-*"))


def test_a_store_refuses_other_settings(tmp_path):
    run_inproc(tmp_path, n=2, methods=["LRP"], layers=["Input"], metrics=["adai"])
    with pytest.raises(E.UsageError, match="seed"):
        run_inproc(tmp_path, n=2, methods=["LRP"], layers=["Input"], metrics=["adai"], seed=1)
    with pytest.raises(E.UsageError, match="target_mode"):
        run_inproc(tmp_path, n=2, methods=["LRP"], layers=["Input"], metrics=["adai"], target="label")
    with pytest.raises(E.UsageError, match="unknown metric"):
        run_inproc(tmp_path, n=2, metrics=["nope"])
    with pytest.raises(E.UsageError, match="unknown layer 'features.99'"):
        run_inproc(tmp_path, n=2, layers=["features.99"])


def test_metric_batch_size_auto(tmp_path):
    """Without a metric batch size the runner sizes it from the model (metrics.forward_batch_size), records it in
    runs.jsonl, and the rows are those of any other batch size."""
    grid = dict(n=3, methods=["Grad-CAM", "LRP"], layers=["Layer13", "Input"], metrics=["adai", "insdel"])
    run_inproc(tmp_path / "auto", metric_batch_size=None, **grid)
    run_inproc(tmp_path / "one", metric_batch_size=1, **grid)
    # float32 convolutions sum in a batch-dependent order: equal within 1e-4 (Average Drop is in percent)
    assert_same_rows(E.read_rows(tmp_path / "auto"), E.read_rows(tmp_path / "one"), tol=1e-4)
    record = json.loads((tmp_path / "auto" / "runs.jsonl").read_text().splitlines()[-1])
    assert record["metric_batch_size"] == M.forward_batch_size(tiny_model(), (3, 32, 32)) > 1
    assert json.loads((tmp_path / "one" / "runs.jsonl").read_text())["metric_batch_size"] == 1


def test_one_run_per_store_at_a_time(tmp_path):
    import fcntl

    (tmp_path / "shards").mkdir()
    with open(tmp_path / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(E.UsageError, match="another fgcam evaluate is writing"):
            run_inproc(tmp_path, n=2, methods=["LRP"], layers=["Input"], metrics=["adai"])
    run_inproc(tmp_path, n=2, methods=["LRP"], layers=["Input"], metrics=["adai"])
    runs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 1 and runs[0]["units"] == 1 and runs[0]["total_rows"] == 2 and runs[0]["seconds"] >= 0


def test_score_cam_weights_once_per_batch(tmp_path, monkeypatch):
    """FG-Score-CAM and FG-Score-CAMD at two layers: Score-CAM's masked forward passes run once per batch (2 batches),
    and the rows are those of runs that explain each setting alone (computing the weights in the call)."""
    from fgcam import components as comp

    calls, original = [], comp._masked_probabilities

    def counting(model, images, A, batch_size):
        calls.append(images.shape[0])
        yield from original(model, images, A, batch_size)

    monkeypatch.setattr(comp, "_masked_probabilities", counting)
    grid = dict(methods=["FG-Score-CAM", "FG-Score-CAMD"], layers=["Layer13", "Input"], metrics=["adai"])
    result = run_inproc(tmp_path / "grid", n=4, batch_size=2, **grid)
    assert result["units"] == 4 * 2 and calls == [2, 2]
    alone = []
    for method in grid["methods"]:
        for layer in grid["layers"]:
            run_inproc(tmp_path / f"{method}-{layer}", n=4, batch_size=2, methods=[method], layers=[layer],
                       metrics=["adai"])
            alone += E.read_rows(tmp_path / f"{method}-{layer}")
    assert len(calls) == 2 + 4 * 2
    assert_same_rows(E.read_rows(tmp_path / "grid"), alone, tol=0)


# ------------------------------------------------------------------------------------------------ real processes


def test_resume_after_sigkill(tmp_path, runner):
    """Kill a real run with SIGKILL at a random moment mid-run, run it again: every row exactly once."""
    n, out = 8, tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(runner), str(out), str(n), "2"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "shards").glob("*.jsonl"))) >= 2:
            break
        time.sleep(0.02)
    time.sleep(random.Random().uniform(0.0, 0.6))
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = E.read_rows(out)
    expected = expected_keys(n)
    assert 0 < len(partial) < len(expected)
    done = subprocess.run([sys.executable, str(runner), str(out), str(n), "2"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = raw_lines(out)
    keys = [r["key"] for r in lines]
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
    assert not list((out / "shards").iterdir())
    # and the resumed store equals an uninterrupted run
    ref = tmp_path / "ref"
    run_inproc(ref, n=n)
    assert_same_rows(E.read_rows(out), E.read_rows(ref))


def test_sigterm_merges_and_records_the_stopped_run(tmp_path, runner):
    """SIGTERM mid-run: the process exits with 128 + 15 after merging its shards and appending a run record that
    says it was stopped, with its units, rows and speed; no row is lost or doubled."""
    n, out = 8, tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, str(runner), str(out), str(n), "2"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list((out / "shards").glob("*.jsonl")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read().decode()[-2000:]
    record = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert record["stopped"] == "SIGTERM"
    keys = [r["key"] for r in raw_lines(out)]
    assert not list((out / "shards").glob("*.jsonl")), "the stopped run merges its shards"
    assert 0 < len(keys) == len(set(keys)) == record["total_rows"] < len(expected_keys(n))
    assert set(keys) <= expected_keys(n)
    assert record["units"] >= 1 and 0 < record["rows"] <= len(keys)
    assert record["images_per_hour"] > 0 and 0 < record["forward_share"] <= 1


def test_two_processes_equal_one(tmp_path, runner):
    """torchrun --nproc_per_node=2 (gloo, CPU) shards the batches and gives exactly the 1-process rows."""
    n = 10
    two, one = tmp_path / "two", tmp_path / "one"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(runner), str(two), str(n), "2"], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "'world_size': 2" in res.stdout and "'rank': 1" in res.stdout
    run_inproc(one, n=n)
    rows2, rows1 = E.read_rows(two), E.read_rows(one)
    assert len(raw_lines(two)) == len(rows2) == len(expected_keys(n))
    assert_same_rows(rows2, rows1)
    assert (two / "rows.jsonl").read_bytes() == (one / "rows.jsonl").read_bytes()


# ------------------------------------------------------------------------------------------------ summary


def test_summary_tables(tmp_path):
    run_inproc(tmp_path, n=3, methods=None, layers=["Layer13", "Input"], batch_size=3)
    result = E.summarize(tmp_path)
    s = result["summary"]
    # hidden layer: 7 methods x (2 AD/AI + 3 ins/del + 2 energies); input: the same
    count = {t: sum(r["table"] == t for r in s) for t in range(1, 7)}
    assert count == {1: 14, 2: 21, 3: 14, 4: 14, 5: 21, 6: 14}
    assert all(r["n_images"] == 3 and r["profile"] == "offline" for r in s)
    # methods in the paper's order: Table 1 starts with Grad-CAM, Table 4 with LRP
    assert list(dict.fromkeys(r["method"] for r in s if r["table"] == 1)) == list(E.HIDDEN_GRID)
    assert list(dict.fromkeys(r["method"] for r in s if r["table"] == 4)) == list(E.INPUT_GRID)
    rows = E.read_rows(tmp_path)
    ad = [r["values"]["average_drop_pct"] for r in rows
          if r["method"] == "Grad-CAM" and r["layer"] == "Layer13" and r["metric"] == "adai"]
    got = next(r for r in s if (r["table"], r["layer"], r["metric"], r["method"]) ==
               (1, "Layer13", "average_drop_pct", "Grad-CAM"))
    assert got["value"] == pytest.approx(sum(ad) / 3) and got["protocol"] == "fgcam-paper"
    # the cell's interval is the percentile bootstrap over these three images (every resample mean lies between
    # the smallest and the largest value), as fgcam.stats computes it for the same values
    from fgcam import stats

    iv = stats.bootstrap_ci(ad)
    assert min(ad) <= got["ci_low"] <= got["value"] <= got["ci_high"] <= max(ad)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((iv.low, iv.high))
    comp = {(r["table"], r["layer"], r["metric"], r["method"]): r for r in result["comparison"]}
    c = comp[(1, "Layer13", "average_drop_pct", "Grad-CAM")]
    assert c["paper"] == 83.8 and c["difference"] == pytest.approx(c["value"] - 83.8)
    assert comp[(6, "Input", "energy_proportion", "FG-Score-CAMD")]["paper"] == 0.66983
    assert comp[(6, "Input", "mask_energy", "LRP")]["paper"] is None
    import csv

    with open(tmp_path / "summary.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert list(csv_rows[0]) == ["table", "layer", "metric", "method", "value", "ci_low", "ci_high", "n_images",
                                 "at_bound", "saturated_column", "profile", "protocol"]
    assert len(csv_rows) == len(s)
    with open(tmp_path / "comparison.csv") as f:
        assert "paper" in next(csv.reader(f))
    md = (tmp_path / "summary.md").read_text()
    for t in range(1, 7):
        assert f"### Table {t}:" in md
    assert "| Grad-CAM |" in md and "(83.80)" in md
