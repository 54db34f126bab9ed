"""`yfpo grpo CONFIG [--key value ...]`: online RL (TRL GRPOTrainer) with the accuracy reward and the neuron signal."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from yfpo.log import get_logger

logger = get_logger(__name__)

_PREFIX = "grpo__"


def register(sub) -> None:
    from yfpo.train.grpo_config import GRPORunConfig

    p = sub.add_parser(
        "grpo",
        help="online RL: TRL GRPOTrainer + verifiable accuracy reward + neuron reward (a) or neuron loss term (b)",
        description="GRPO on benchmark questions (--questions gsm8k_train | mawps_singleop | ...). CONFIG is a YAML "
        "file (keys of GRPORunConfig, or a `grpo:` section); any key can be overridden: --num_generations 4 "
        "--max_new_tokens 96 --neurons N.json --neuron_reward_weight 0.5 --neuron_loss_weight 0.1. Any other "
        "trl.GRPOConfig option goes under `trl:` (--trl.report_to=tensorboard --trl.save_strategy=no). "
        "Both neuron weights 0 is plain TRL GRPO. A rerun resumes from the last checkpoint. "
        "`--keys` lists every key and its default.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config", nargs="?", default=None, help="YAML config (optional; every key can be given as --key value)"
    )
    p.add_argument("--out", default=None, help="run directory (default: output_dir of the config)")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="empty an output folder made by another config (otherwise refused, naming the keys that differ)",
    )
    p.add_argument("--keys", action="store_true", help="list the config keys with their defaults and exit")
    g = p.add_argument_group("config keys (any GRPORunConfig key; overrides CONFIG)")
    for f in dataclasses.fields(GRPORunConfig):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        is_bool = f.type in (bool, "bool")
        g.add_argument(
            *flags,
            dest=_PREFIX + f.name,
            default=argparse.SUPPRESS,
            metavar="V",
            nargs="?" if is_bool else None,
            const="true" if is_bool else None,
            help=argparse.SUPPRESS,
        )
    p.set_defaults(func=_grpo, accepts_overrides=True)


def _grpo(args) -> int:

    from yfpo.config import load_config
    from yfpo.train.grpo import grpo
    from yfpo.train.grpo_config import GRPORunConfig
    from yfpo.train.run_dir import end_distributed

    if args.keys:
        for f in dataclasses.fields(GRPORunConfig):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            print(f"{f.name:24s} {default!r}")
        return 0
    extra = list(args.overrides or [])
    dangling = [a for i, a in enumerate(extra) if a.startswith("--trl.") and "=" not in a and i + 1 == len(extra)]
    dangling += [a for a, b in zip(extra, extra[1:]) if a.startswith("--trl.") and "=" not in a and b.startswith("--")]
    if dangling:  # argparse does not know --trl.KEY, so the value after it would land in CONFIG's place
        raise ValueError(f"{dangling[0]}: give a trl option as {dangling[0]}=VALUE (one word)")
    if args.config is not None and not Path(args.config).is_file():
        raise ValueError(f"CONFIG {args.config!r} is not a YAML file (`yfpo grpo --keys` lists the keys)")
    section = None
    if args.config:
        from yfpo.config import read_yaml

        data = read_yaml(args.config)
        section = "grpo" if isinstance(data, dict) and isinstance(data.get("grpo"), dict) else None
    overrides = [f"--{k[len(_PREFIX) :]}={v}" for k, v in vars(args).items() if k.startswith(_PREFIX)]
    overrides += list(args.overrides or [])
    if args.out:
        overrides += ["--output_dir", args.out]
    cfg = load_config(GRPORunConfig, args.config, overrides, section=section)
    out = grpo(cfg, resume=not args.no_resume, overwrite=args.overwrite)
    end_distributed()
    logger.info(f"run directory: {out}  (final model: {out / 'final'})")
    return 0
