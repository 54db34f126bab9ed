"""`yfpo train CONFIG [--key value ...]` and `yfpo plot-train RUN_DIR ...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from yfpo.log import get_logger

logger = get_logger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="preference training: DPO-family loss + YFPO neuron reward + FDT (TRL DPOTrainer), full or LoRA",
        description="Train on a pairs JSONL. CONFIG is a YAML file (keys of TrainConfig, or a `train:` section); any key "
        "can be overridden: --gamma 1.0 --fdt true --loss_type ipo --lora false --neurons N.json --pairs P.jsonl. "
        "gamma=0 is plain DPO (or the chosen loss_type); variant yoked|yoked_ref|aux. The run directory gets "
        "config.yaml, versions.json, metrics.jsonl, checkpoints/ and final/ (loadable by `yfpo eval --model`). "
        "A rerun of the same command resumes from the last checkpoint. `--keys` lists every key and its default.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config", nargs="?", default=None, help="YAML config (optional; every key can be given as --key value)"
    )
    p.add_argument("--out", default=None, help="run directory (default: output_dir of the config)")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints (start over in a new --out)")
    p.add_argument("--overwrite", action="store_true", help="empty --out first (it was made by another config)")
    p.add_argument(
        "--allow-other-weights",
        action="store_true",
        help="use a NeuronSet found on other weights of the same shape (its weight_hash differs)",
    )
    p.add_argument("--keys", action="store_true", help="list the config keys with their defaults and exit")
    _add_config_keys(p)
    p.set_defaults(func=_train, accepts_overrides=True)

    r = sub.add_parser(
        "precompute-ref",
        help="compute the reference log-probs (and m_ref per NeuronSet) of a training config once, to a file",
        description="Runs the reference model once over the config's pairs, tokenized exactly as `yfpo train` does, and "
        "writes a JSON file keyed by the model weights, the pairs file and the tokenization settings. "
        "`yfpo train CONFIG --ref_logps FILE` then trains without recomputing the reference (a file for "
        "another model / pairs / tokenization is refused). Same CONFIG and --key value overrides as `yfpo train`.",
    )
    r.add_argument("config", nargs="?", default=None, help="YAML config (keys of TrainConfig, or a `train:` section)")
    r.add_argument("--ref-out", required=True, help="output file (JSON)")
    r.add_argument(
        "--neuronset",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a NeuronSet whose reference margin m_ref rides on the pass (repeatable; default: the config's "
        "neurons as 'run')",
    )
    _add_config_keys(r)
    r.set_defaults(func=_precompute_ref, accepts_overrides=True)

    q = sub.add_parser(
        "plot-train", help="plot training curves (loss, reward margin, neuron margin, accuracies) to PNG"
    )
    q.add_argument("runs", nargs="+", help="training run directories (with metrics.jsonl); several are overlaid")
    q.add_argument("--out", default=None, help="PNG path (default: RUN/curves.png for one run, curves.png otherwise)")
    q.set_defaults(func=_plot)


_PREFIX = "cfg__"


def _add_config_keys(p) -> None:
    """Every TrainConfig key as a known option, so `yfpo train --model M --pairs P` (no CONFIG) parses: were they
    unknown, argparse would take M as the optional positional CONFIG."""
    import dataclasses

    from yfpo.train.config import TrainConfig

    g = p.add_argument_group("config keys (any TrainConfig key; overrides CONFIG; `--keys` lists the defaults)")
    for f in dataclasses.fields(TrainConfig):
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


def _train(args) -> int:
    import dataclasses

    from yfpo.train.config import TrainConfig
    from yfpo.train.trainer import train

    if args.keys:
        for f in dataclasses.fields(TrainConfig):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            print(f"{f.name:24s} {default!r}")
        return 0
    cfg = _load_cfg(args)
    out = train(cfg, resume=not args.no_resume, overwrite=args.overwrite, allow_other_weights=args.allow_other_weights)
    logger.info(f"run directory: {out}  (final model: {out / 'final'})")
    return 0


def _precompute_ref(args) -> int:
    from yfpo.neurons.neuronset import NeuronSet
    from yfpo.train.precompute import compute_reference

    cfg = _load_cfg(args)
    sets = {}
    for spec in args.neuronset:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--neuronset {spec!r}: expected NAME=PATH")
        sets[name] = NeuronSet.load(path)
    if not sets and cfg.neurons:
        sets["run"] = NeuronSet.load(cfg.neurons)
    path = compute_reference(cfg, sets, args.ref_out)
    logger.info(f"wrote {path}")
    return 0


def _load_cfg(args):

    from yfpo.config import load_config
    from yfpo.train.config import TrainConfig

    section = None
    if args.config is not None and not Path(args.config).is_file():
        unknown = [a.split("=")[0] for a in (args.overrides or []) if a.startswith("--")]
        hint = f"; unknown option(s) {', '.join(unknown)} (`yfpo train --keys` lists the keys)" if unknown else ""
        raise ValueError(f"CONFIG {args.config!r} is not a YAML file{hint}")
    if args.config:
        from yfpo.config import read_yaml

        data = read_yaml(args.config)
        section = "train" if isinstance(data, dict) and isinstance(data.get("train"), dict) else None
    overrides = [f"--{k[len(_PREFIX) :]}={v}" for k, v in vars(args).items() if k.startswith(_PREFIX)]
    overrides += list(args.overrides or [])  # unknown keys: load_config names them
    if getattr(args, "out", None):
        overrides += ["--output_dir", args.out]
    try:
        return load_config(TrainConfig, args.config, overrides, section=section).validate()
    except ValueError as e:  # name the file the bad value came from
        if args.config and str(args.config) not in str(e):
            raise ValueError(f"{args.config}: {e}") from e
        raise


def _plot(args) -> int:
    from yfpo.report.train_plots import plot_runs

    path = plot_runs(args.runs, args.out)
    logger.info(f"wrote {path}")
    return 0
