#!/usr/bin/env python
"""GRPO step time with TRL's generate vs rollouts through yfpo.engine, in the same run: one trainer (same model,
config, questions, LoRA) whose rollout path alternates step by step (odd steps TRL's model.generate, even steps the
engine's rollout_func), so both sides share the machine's load. Reported per side: seconds per step (wall, and this
process's CPU seconds, which one thread makes much less sensitive to other jobs), the generation part of it
(`_generate`), and completion tokens generated.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grpo_rollout.py --steps 6 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from _machine import cpu as machine_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--questions", default="mawps_singleop")
    ap.add_argument("--steps", type=int, default=6, help="steps in all (alternating, TRL first)")
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import torch
    from transformers import TrainerCallback

    from yfpo.train.grpo import make_grpo_trainer
    from yfpo.train.grpo_config import GRPORunConfig

    torch.set_num_threads(a.threads)
    out = tempfile.mkdtemp(prefix="bench_grpo_rollout_")
    cfg = GRPORunConfig(
        model=a.model,
        questions=a.questions,
        limit_questions=40,
        num_generations=a.num_generations,
        batch_size=a.num_generations,
        max_new_tokens=a.max_new_tokens,
        max_steps=a.steps,
        lr=5e-5,
        device="cpu",
        save_steps=10_000,
        output_dir=out,
        rollout="engine",
        rollout_backend=a.backend,
    )
    tr, _ = make_grpo_trainer(cfg, out=out)
    engine_rollout = tr.rollout_func
    rows: list[dict] = []
    gen_clock = {"wall": 0.0, "cpu": 0.0, "tokens": 0}
    orig_generate = tr._generate

    def timed_generate(prompts):
        w, c = time.perf_counter(), time.process_time()
        res = orig_generate(prompts)
        gen_clock["wall"] += time.perf_counter() - w
        gen_clock["cpu"] += time.process_time() - c
        gen_clock["tokens"] += sum(len(x) for x in res[1])
        return res

    tr._generate = timed_generate

    class Alternate(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            side = "trl" if state.global_step % 2 == 0 else "engine"
            tr.rollout_func = None if side == "trl" else engine_rollout
            gen_clock.update(wall=0.0, cpu=0.0, tokens=0)
            self.side, self.w, self.c = side, time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            rows.append(
                {
                    "step": state.global_step,
                    "side": self.side,
                    "wall_s": time.perf_counter() - self.w,
                    "cpu_s": time.process_time() - self.c,
                    "gen_wall_s": gen_clock["wall"],
                    "gen_cpu_s": gen_clock["cpu"],
                    "tokens": gen_clock["tokens"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    tr.add_callback(Alternate())
    tr.train()
    name, flags = machine_cpu()
    summary = {}
    for side in ("trl", "engine"):
        rs = [r for r in rows if r["side"] == side]
        summary[side] = {
            k: sum(r[k] for r in rs) / len(rs) for k in ("wall_s", "cpu_s", "gen_wall_s", "gen_cpu_s", "tokens")
        }
        summary[side]["steps"] = len(rs)
    res = {
        "cpu": name,
        "flags": flags,
        "threads": a.threads,
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
        "config": {
            k: getattr(cfg, k) for k in ("model", "questions", "num_generations", "max_new_tokens", "rollout_backend")
        },
        "steps": rows,
        "mean": summary,
        "speedup_step_cpu": summary["trl"]["cpu_s"] / summary["engine"]["cpu_s"],
        "speedup_generation_cpu": summary["trl"]["gen_cpu_s"] / summary["engine"]["gen_cpu_s"],
    }
    print(json.dumps(res["mean"], indent=1))
    print(f"step (CPU s) TRL/engine {res['speedup_step_cpu']:.2f}x; generation {res['speedup_generation_cpu']:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
