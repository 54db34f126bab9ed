"""`yfpo run CONFIG [--key value ...]`."""

from __future__ import annotations

import argparse


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
    p.set_defaults(func=_run, accepts_overrides=True)


def _run(args) -> int:
    import sys

    from yfpo.run import StageFailed, load_run_config, make_plan, run_pipeline

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
        path = run_pipeline(rc)
    except (StageFailed, ValueError, FileNotFoundError) as e:
        if args.debug:
            raise
        msg = str(e)
        if args.config and str(args.config) not in msg and not isinstance(e, StageFailed):
            msg = f"{args.config}: {msg}"  # name the file the bad value came from
        print(f"yfpo run: error: {msg}", file=sys.stderr)
        return 1
    print(
        f"[yfpo run] finished. Report: {path}" + (f" (and {path.with_suffix('.md')})" if path.suffix == ".html" else "")
    )
    return 0
