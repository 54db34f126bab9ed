"""`yfpo run --executor ray`: every stage a Ray task on a local Ray instance (2 CPUs), the stage functions faked in
the Ray workers (tests/ray_fakes.py) exactly as test_run_pipeline fakes them in-process. The same run through the
local executor and through Ray gives byte-identical stage folders; a Ray worker killed mid-training is recovered by
resuming that stage alone; a rerun does nothing."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import ray
from ray_fakes import calls
from test_run_pipeline import Fakes, _rc, run_pipeline

import yfpo.pipeline

TESTS = Path(__file__).resolve().parent
# fields that say when or for how long a stage ran: they differ between any two runs, whatever the executor
TIMING = ("time_s", "started", "finished")


@contextlib.contextmanager
def ray_with_fakes(tmp_path: Path, kill_train: str = ""):
    """A local Ray instance whose workers run tests/ray_fakes.install; yields the folder their calls go to."""
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]),
        "YFPO_TEST_CALLS": str(calls_dir),
        "YFPO_TEST_KILL_TRAIN": kill_train,
        "OMP_NUM_THREADS": "1",
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": "ray_fakes.install", "env_vars": env},
    )
    try:
        yield calls_dir
    finally:
        ray.shutdown()


def stage_files(run: Path) -> dict[str, bytes]:
    """Every file of the run's stage folders, JSON records without their timing fields (TIMING; a NeuronSet's
    provenance.date), the run folder's own path written as <run> (the two runs live in two folders, and a control
    NeuronSet records its source's path). Left out: run.json (the index: timestamps, and entries in the order the
    processes wrote them), .locks/ (empty lock files), config.yaml (it records out_root, the runs' folder)."""
    out = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run).as_posix()
        if not p.is_file() or rel in ("run.json", "config.yaml") or rel.startswith(".locks/"):
            continue
        data = p.read_bytes().replace(str(run).encode(), b"<run>")
        if p.name in ("done.json", "stage.json"):
            rec = {k: v for k, v in json.loads(data).items() if k not in TIMING}
            data = json.dumps(rec, sort_keys=True).encode()
        elif p.name == "neurons.json":
            rec = json.loads(data)
            rec.get("provenance", {}).pop("date", None)
            data = json.dumps(rec, sort_keys=True).encode()
        out[rel] = data
    return out


def test_local_and_ray_executors_write_byte_identical_stages(tmp_path):
    local = _rc(tmp_path / "local", report=False)
    run_pipeline(local, runners=Fakes().runners(), log=lambda m: None)
    with ray_with_fakes(tmp_path) as calls_dir:
        remote = _rc(tmp_path / "ray", report=False)
        yfpo.pipeline.run_pipeline(remote, executor="ray", log=lambda m: None)
    a, b = stage_files(tmp_path / "local" / "runs" / "t"), stage_files(tmp_path / "ray" / "runs" / "t")
    assert len(a) > 60 and sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    n = calls(calls_dir)
    assert n["neurons"] == 1 and n["pairs"] == 1 and n["train"] == 5 and n["eval"] == 6 and n["discrimination"] == 6
    idx = json.loads((tmp_path / "ray" / "runs" / "t" / "run.json").read_text())
    assert len(idx["stages"]) == len(json.loads((tmp_path / "local" / "runs" / "t" / "run.json").read_text())["stages"])
    assert all(s["status"] == "done" for s in idx["stages"])


def test_a_killed_ray_worker_reruns_only_what_it_lost(tmp_path):
    with ray_with_fakes(tmp_path, kill_train="yfpo-s0") as calls_dir:
        rc = _rc(tmp_path, report=False)
        yfpo.pipeline.run_pipeline(rc, executor="ray", log=lambda m: None)
        assert (tmp_path / "killed").exists()  # the worker died mid-training (after its checkpoint)...
        n = calls(calls_dir)
        assert n["train:yfpo-s0"] == 2 and n["train"] == 6  # ...and only that training ran again (Ray's retry)
        assert n["neurons"] == 1 and n["pairs"] == 1 and n["eval"] == 6 and n["discrimination"] == 6
        run = tmp_path / "runs" / "t"
        (final,) = run.glob("train/yfpo-s0-*/final")
        assert (final.parent / "checkpoint-1").exists() and len(list(run.rglob("done.json"))) > 20
        for p in calls_dir.iterdir():
            p.unlink()
        yfpo.pipeline.run_pipeline(_rc(tmp_path, report=False), executor="ray", log=lambda m: None)
        assert calls(calls_dir) == {}  # everything was finished: nothing runs again
