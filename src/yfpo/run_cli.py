"""`yfpo run CONFIG [--key value ...]`."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="the whole pipeline from one YAML config (cached, resumable): neurons, pairs, train, eval, report",
        description="Runs neurons -> (check) -> pairs -> train (every method x seed) -> eval (base + models) -> "
                    "report. Each stage lives in a folder named by the hash of its config and inputs; finished "
                    "stages are skipped, an interrupted one resumes. Overrides: --eval.limit 10, --seeds 0,1, "
                    "--methods.yfpo.gamma=0.5, --name myrun ...",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="run config YAML (e.g. configs/quick.yaml)")
    p.set_defaults(func=_run, accepts_overrides=True)


def _run(args) -> int:
    from yfpo.run import load_run_config, run_pipeline

    rc = load_run_config(args.config, args.overrides)
    path = run_pipeline(rc)
    print(f"[yfpo run] finished. Report: {path}" + (f" (and {path.with_suffix('.md')})" if path.suffix == ".html" else ""))
    return 0
