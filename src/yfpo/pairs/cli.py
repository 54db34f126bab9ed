"""`yfpo pairs build`."""

from __future__ import annotations

import argparse

from yfpo.log import get_logger

logger = get_logger(__name__)


def register(sub) -> None:
    p = sub.add_parser("pairs", help="build preference pairs from the model's own graded samples")
    s = p.add_subparsers(dest="pairs_cmd", metavar="ACTION")
    b = s.add_parser(
        "build",
        help="sample k solutions per training question, grade, pair correct with incorrect",
        description="Config keys (PairsConfig) as --key value: model, out_dir, bench, bench_file, limit, offset, k, "
        "temperature, top_p, seed, max_new_tokens, batch_size, max_pairs_per_question, gold_fallback, "
        "step_pairs, step_rollouts, step_max_steps, step_max_new_tokens, step_samples_per_question, "
        "step_threshold, mode (default | onpolicy), data_dir, backend, dtype, device. Resumable: rerun the same command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--config", help="YAML file (section `pairs` or top level)")
    b.add_argument("--overwrite", action="store_true", help="empty out_dir first (it was made by another config)")
    b.set_defaults(func=_build, accepts_overrides=True)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _build(args) -> int:
    import json

    from yfpo.config import load_config
    from yfpo.pairs.build import SUMMARY, build_pairs
    from yfpo.pairs.config import PairsConfig

    section = None
    if args.config:
        from yfpo.config import read_yaml

        data = read_yaml(args.config)
        section = "pairs" if isinstance(data, dict) and "pairs" in data else None
    cfg = load_config(PairsConfig, args.config, args.overrides, section=section)
    path = build_pairs(cfg, overwrite=args.overwrite)
    s = json.loads((path.parent / SUMMARY).read_text())
    acc = s["sample_accuracy"]
    print(
        f"{s['questions']} questions, {s['samples']} samples, sample accuracy "
        f"{'n/a' if acc is None else f'{acc:.1%}'}, dropped {s['dropped']}; "
        f"{s['pairs']} pairs by source {s['pairs_by_source']}"
        + (f", {s['step_pairs']} step pairs" if cfg.step_pairs else "")
    )
    logger.info(f"wrote {path}")
    return 0
