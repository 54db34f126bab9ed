"""Two `yfpo run` on one run dir share the work: stage locks, deferral of held units, nothing done twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from test_run_pipeline import Fakes, _rc
from trl import DPOConfig  # noqa: F401  (TRL's lazy imports race in threads; real workers are processes)

from yfpo.run import run_pipeline


class SlowFakes(Fakes):
    def train(self, cfg):
        time.sleep(0.3)
        return super().train(cfg)

    def eval(self, model_path, bench, **kw):
        time.sleep(0.05)
        return super().eval(model_path, bench, **kw)


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
    rc = _rc(tmp_path)
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
    t = threading.Thread(target=lambda: run_pipeline(_rc(tmp_path), runners=holder.runners(), log=lambda m: None))
    t.start()
    assert started.wait(20)
    f = Fakes()
    logs: list[str] = []
    run_pipeline(rc, runners=f.runners(), log=logs.append)
    t.join(30)
    assert f.calls["train:dpo-s0"] == 0 and holder.calls["train:dpo-s0"] == 1
    i_defer = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] train/dpo-s0: another process"))
    i_other = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] train/") and "dpo-s0" not in m)
    i_reuse = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] train/dpo-s0: done before"))
    assert i_defer < i_other < i_reuse  # deferred, went on with other trainings, came back and reused it
    i_eval = next(i for i, m in enumerate(logs) if m.startswith("[yfpo run] eval/"))
    assert i_eval < i_reuse  # and evaluated the models it had before waiting for the held training
