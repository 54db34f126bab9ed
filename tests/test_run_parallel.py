"""Two `yfpo run` on one run dir share the work: stage locks, deferral of held units, nothing done twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_run_pipeline import Fakes, _rc, run_pipeline
from trl import DPOConfig  # noqa: F401  (TRL's lazy imports race in threads; real workers are processes)


class SlowFakes(Fakes):
    def train(self, cfg):
        time.sleep(0.3)
        return super().train(cfg)

    def eval(self, model_path, bench, **kw):
        time.sleep(0.05)
        return super().eval(model_path, bench, **kw)


def _beside_a_holder(tmp_path, holder: Fakes, started: threading.Event, **rc) -> tuple[Fakes, list[str]]:
    """Run the pipeline in a thread with `holder`'s runners until it sets `started` (it then holds a stage), run
    a second pipeline on the same run dir meanwhile, wait for both: (the second's fakes, its log lines). `rc`:
    RunConfig fields for both."""
    t = threading.Thread(target=lambda: run_pipeline(_rc(tmp_path, **rc), runners=holder.runners(), log=lambda m: None))
    t.start()
    assert started.wait(20)
    f = Fakes()
    logs: list[str] = []
    run_pipeline(_rc(tmp_path, **rc), runners=f.runners(), log=logs.append)
    t.join(30)
    return f, logs


def test_two_processes_split_trainings_and_evals_without_repeating_any(tmp_path):
    fakes = [SlowFakes(), SlowFakes()]
    logs: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            if i:
                time.sleep(0.1)  # the second starts while the first works on neurons
            run_pipeline(_rc(tmp_path), runners=fakes[i].runners(), log=logs[i].append)
        except BaseException as e:  # noqa: BLE001 (re-raised below, in the test's thread)
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    total = fakes[0].calls + fakes[1].calls
    assert total["neurons"] == total["neurons:attnlrp"] == 1 and total["pairs"] == 1
    assert total["train"] == 5 and all(total[f"train:{m}-s0"] == 1 for m in ("dpo", "yfpo", "yfpo_fdt"))
    assert total["eval"] == 6 * 2 and total["disc"] == 6  # every unit exactly once, whoever ran it
    assert fakes[0].calls["train"] > 0 and fakes[1].calls["train"] > 0  # both worked
    assert any("another process is on it" in m for m in logs[0] + logs[1])
    run = tmp_path / "runs" / "t"
    assert (run / "report" / "report.html").exists()
    assert not list(run.rglob(".*.tmp*"))


def test_a_held_training_is_deferred_then_waited_for(tmp_path):
    """While another process trains dpo-s0, this one does the other trainings first, then waits for dpo-s0
    and reuses it instead of training it again."""
    started = threading.Event()

    class Holder(Fakes):
        def train(self, cfg):
            if Path(cfg.output_dir).name.startswith("dpo-s0"):
                started.set()
                time.sleep(1.0)
                return super().train(cfg)
            time.sleep(0.2)
            return super().train(cfg)

    holder = Holder()
    f, logs = _beside_a_holder(tmp_path, holder, started)
    assert f.calls["train:dpo-s0"] == 0 and holder.calls["train:dpo-s0"] == 1
    i_defer = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] train/dpo-s0: another process"))
    i_other = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] train/") and "dpo-s0" not in m)
    i_reuse = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] train/dpo-s0: done before"))
    assert i_defer < i_other < i_reuse  # deferred, went on with other trainings, came back and reused it
    i_eval = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] eval/"))
    assert i_eval < i_reuse  # and evaluated the models it had before waiting for the held training


def test_workers_flag_starts_helpers_on_the_same_config_and_reports_their_failure(tmp_path, monkeypatch, capsys):
    """`yfpo run CONFIG --workers 2`: one helper `yfpo run` with the same config and overrides (and --worker: it
    writes no report), cores/2 torch threads each; a failing helper is named with its log; when the main process
    fails, its helpers are stopped; a bad config stops before any helper starts."""
    import subprocess

    import torch
    from test_run_pipeline import _write

    import yfpo.pipeline as run_mod
    import yfpo.pipeline.cli as run_cli
    from yfpo.cli import main

    started, calls = [], []

    class P:
        def __init__(self, cmd, env, stdout, stderr):
            started.append((cmd, env))
            self.code, self.terminated = 3, False

        def poll(self):
            return None

        def terminate(self):
            self.terminated = True

        def wait(self):
            return self.code

    monkeypatch.setattr(subprocess, "Popen", P)
    monkeypatch.setattr(run_cli, "_cores", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))

    def fake_pipeline(rc, write_report=True, **kw):
        calls.append(("pipeline", write_report))
        return tmp_path / "report.html"

    monkeypatch.setattr(run_mod, "run_pipeline", fake_pipeline)
    cfg = _write(tmp_path, "methods: {dpo: {gamma: 0}}")
    assert main(["run", str(cfg), "--eval.limit", "3", "--workers", "2"]) == 0
    ((cmd, env),) = started
    assert cmd[-5:] == ["run", str(cfg), "--eval.limit", "3", "--worker"] and env["OMP_NUM_THREADS"] == "1"
    assert calls == [("threads", 1), ("pipeline", True)]
    assert "a helper process exited with 3; see" in capsys.readouterr().err
    assert (tmp_path / "runs" / "t" / "workers" / "worker-1.log").exists()

    calls.clear()
    assert main(["run", str(cfg), "--worker"]) == 0 and calls == [("pipeline", False)]  # a helper: no report

    def failing(rc, write_report=True, **kw):
        raise ValueError("stage failed")

    monkeypatch.setattr(run_mod, "run_pipeline", failing)
    procs = []
    monkeypatch.setattr(run_cli, "_start_workers", lambda *a: procs.append(P([], {}, None, None)) or [(procs[-1], "L")])
    assert main(["run", str(cfg), "--workers", "2"]) == 1 and procs[0].terminated
    started.clear()
    assert main(["run", str(_write(tmp_path, "methods: {dpo: {gamam: 0}}")), "--workers", "2"]) == 1
    assert not started and "gamam" in capsys.readouterr().err


@pytest.mark.slow
def test_workers_two_real_processes_finish_a_tiny_run(tmp_path):
    """`yfpo run CONFIG --workers 2` for real (two processes, a tiny model, the real stages): it finishes with the
    report, the helper logged its share and wrote no report, and no stage ran twice."""
    import json
    import os
    import subprocess
    import sys

    from test_run_pipeline import tiny_model_and_pairs

    model_dir, pairs = tiny_model_and_pairs(tmp_path, n_pairs=6)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
name: wk
model: {model_dir}
out_root: {tmp_path / "runs"}
neurons: {{n_math: 2, n_contrast: 2, k: 4, batch_size: 2, max_length: 32, progress: false}}
pairs_file: {pairs}
train: {{max_length: 768, batch_size: 2, save_steps: 1}}
methods: {{dpo: {{gamma: 0.0}}, yfpo: {{gamma: 1.0}}, yfpo_random: {{gamma: 1.0, neurons: random}}}}
eval: {{benches: [mawps_singleop], limit: 2, max_new_tokens: 8, discrimination: 4, base: true}}
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "yfpo.cli", "run", str(cfg), "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 processes x" in r.stdout and "finished. Report:" in r.stdout
    run = tmp_path / "runs" / "wk"
    helper = (run / "workers" / "worker-1.log").read_text()
    assert "helper finished" in helper and "[yfpo run] neurons" in helper
    assert (run / "report" / "report.html").exists()
    ran = [line.split(":")[0] for line in (r.stdout + helper).splitlines() if ": running -> " in line]
    assert len(ran) == len(set(ran)) and len(ran) == len(json.loads((run / "run.json").read_text())["stages"])


def test_while_another_process_finds_the_neurons_this_one_samples_pairs_and_evaluates_the_base_model(tmp_path):
    """Neurons and pairs need only the model: a second process does not wait for the held neurons stage but
    samples the pairs and evaluates the base model (needing neither) first, then waits for the neurons and
    reuses them."""
    started = threading.Event()

    class SlowNeurons(Fakes):
        def neurons(self, cfg):
            started.set()
            time.sleep(1.0)
            return super().neurons(cfg)

    holder = SlowNeurons()
    f, logs = _beside_a_holder(tmp_path, holder, started)
    assert f.calls["neurons"] == 0 and holder.calls["neurons"] == 1  # found once, by the holder
    assert f.calls["pairs"] == 1 and holder.calls["pairs"] == 0  # sampled by this one meanwhile

    def first(prefix: str) -> int:
        return next(i for i, m in enumerate(logs) if m.startswith(prefix))

    i_held = first("[yfpo run] neurons: another process is on it")
    assert i_held < first("[yfpo run] pairs: running") < first("[yfpo run] eval/base/")
    assert first("[yfpo run] eval/base/") < first("[yfpo run] neurons: done before")  # then came back for them
    total = f.calls + holder.calls
    assert total["eval"] == 6 * 2 and total["disc"] == 6 and total["train"] == 5  # nothing twice


def test_a_process_waiting_for_the_held_reference_evaluates_the_base_model_first(tmp_path):
    started = threading.Event()

    class SlowReference(Fakes):
        def reference(self, cfg, neurons, out_dir):
            started.set()
            time.sleep(1.0)
            return super().reference(cfg, neurons, out_dir)

    holder = SlowReference()
    f, logs = _beside_a_holder(tmp_path, holder, started)
    assert f.calls["reference"] == 0 and holder.calls["reference"] == 1
    i_held = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] reference: another process is on it"))
    i_base = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] eval/base/") and "running" in m)
    i_reuse = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] reference: done before"))
    assert i_held < i_base < i_reuse
    assert f.calls["train"] + holder.calls["train"] == 5


def test_trainings_of_a_finished_reference_group_start_while_another_group_is_held(tmp_path):
    """Two reference groups (two max lengths): while another process computes one group's log-probs, this one
    trains (and evaluates) the members of the other group instead of waiting, then waits for the held group
    and trains its member; nothing runs twice."""
    started = threading.Event()

    class SlowLongReference(Fakes):
        def reference(self, cfg, neurons, out_dir):
            if cfg.max_length == 512:
                started.set()
                time.sleep(1.0)
            return super().reference(cfg, neurons, out_dir)

    methods = {"dpo": {"gamma": 0.0}, "yfpo": {"gamma": 1.0}, "yfpo_long": {"gamma": 1.0, "max_length": 512}}
    holder = SlowLongReference()
    f, logs = _beside_a_holder(tmp_path, holder, started, methods=methods)

    def first(cond) -> int:
        return next(i for i, m in enumerate(logs) if cond(m))

    i_held = first(lambda m: m.startswith("[yfpo run] reference/") and "another process is on it" in m)
    held_name = logs[i_held].split(":")[0]
    i_train = first(lambda m: m.startswith("[yfpo run] train/") and "long" not in m)
    i_back = first(lambda m: m.startswith(held_name + ": done before"))
    assert i_held < i_train < i_back  # trained the other group's members before waiting for the held group
    assert first(lambda m: m.startswith("[yfpo run] eval/")) < i_back
    total = f.calls + holder.calls
    assert total["reference"] == 2 and total["train"] == 3 and total["train:yfpo_long-s0"] == 1
    assert total["eval"] == 4 * 2 and total["disc"] == 4  # base + 3 models, each once
