"""`yfpo run CONFIG [--key value ...]`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from yfpo.pipeline.executors import EXECUTORS


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="the whole pipeline from one YAML config (cached, resumable): neurons, pairs, train, eval, report",
        description="Runs neurons -> (check) -> pairs -> train (every method x seed) -> eval (base + models) -> "
        "report. Each stage lives in a folder named by the hash of its config and inputs; finished "
        "stages are skipped, an interrupted one resumes. Overrides: --eval.limit 10, --seeds 0,1, "
        "--methods.yfpo.gamma=0.5, --name myrun ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="run config YAML (e.g. configs/quick.yaml)")
    p.add_argument(
        "--check-only",
        action="store_true",
        help="build and validate every stage's config (all methods), print the plan, run nothing",
    )
    p.add_argument("--debug", action="store_true", help="on failure, show the full traceback (not one line)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that share the stages (stage locks: each stage runs once, in one of them), each with "
        "cores/N torch threads; small models scale poorly over threads, so on a 2-core CPU --workers 2 runs "
        "independent trainings and evaluations side by side. Helper logs: RUN/workers/worker-K.log (default 1)",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this process (and --workers helpers); ray: every stage a Ray task with its stage's resources, "
        "the run dir on a folder every Ray node sees (docs/cluster.md). Default local",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --executor ray: the cluster to join ('auto': the one this machine belongs to); none: a local "
        "Ray instance",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a helper started by --workers
    p.set_defaults(func=_run, accepts_overrides=True)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _start_workers(args, run_dir, n: int, threads: int) -> list:
    """n helper `yfpo run` processes on the same config (same overrides), `threads` torch threads each."""
    logs = Path(run_dir) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "yfpo.cli", "run", str(args.config), *args.overrides, "--worker"]
    procs = []
    for k in range(1, n + 1):
        log = open(logs / f"worker-{k}.log", "w")
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), logs / f"worker-{k}.log"))
        log.close()
    return procs


def _run(args) -> int:
    # lazy: yfpo.cli imports every command's cli module to build its parser; the pipeline pulls in torch,
    # transformers and TRL, which `yfpo --help` and the other commands should not wait for
    import torch

    from yfpo.pipeline import StageFailed, load_run_config, make_plan, run_pipeline

    try:
        rc = load_run_config(args.config, args.overrides)
        if args.check_only:
            plan = make_plan(rc)
            for m, keys in plan.methods.items():
                if keys.get("trainer") == "grpo":
                    w = {k: keys.get(k, 0) for k in ("neuron_reward_weight", "neuron_loss_weight")}
                    print(f"{m}: grpo, {', '.join(f'{k} {v}' for k, v in w.items())}, neurons {keys['neurons']}")
                else:
                    print(f"{m}: gamma {keys['gamma']}, neurons {keys['neurons']}")
            print(
                f"[yfpo run] {args.config}: every stage's config is valid "
                f"({len(plan.train)} trainings, {len(rc.eval.benches)} benchmarks)"
            )
            return 0
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        procs = []
        if args.workers > 1 and args.executor != "local":
            raise ValueError("--workers shares stages between local processes; with --executor ray, Ray does")
        if args.workers > 1 and not args.worker:
            make_plan(rc)  # a config error stops here, before any helper starts
            threads = max(1, _cores() // args.workers)
            torch.set_num_threads(threads)
            procs = _start_workers(args, f"{rc.out_root}/{rc.name}", args.workers - 1, threads)
            print(
                f"[yfpo run] {args.workers} processes x {threads} torch thread(s); helper logs in "
                f"{rc.out_root}/{rc.name}/workers/"
            )
        ok = False
        try:
            path = run_pipeline(rc, executor=args.executor, address=args.address, write_report=not args.worker)
            ok = True
        finally:
            for proc, log in procs:
                stopped = not ok and proc.poll() is None
                if stopped:
                    proc.terminate()  # the main process failed: its helpers stop too (finished stages are kept)
                code = proc.wait()
                if code != 0 and not stopped:
                    print(f"[yfpo run] a helper process exited with {code}; see {log}", file=sys.stderr)
    except (StageFailed, ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        msg = str(e)
        if args.config and str(args.config) not in msg and not isinstance(e, StageFailed):
            msg = f"{args.config}: {msg}"  # name the file the bad value came from
        print(f"yfpo run: error: {msg}", file=sys.stderr)
        return 1
    if args.worker:
        print(f"[yfpo run] helper finished (the main process writes the report); run record: {path}")
        return 0
    print(
        f"[yfpo run] finished. Report: {path}" + (f" (and {path.with_suffix('.md')})" if path.suffix == ".html" else "")
    )
    return 0
