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
        usage="yfpo train [CONFIG] [--KEY VALUE ...] [--out OUT] [--no-resume] [--overwrite] [--allow-other-weights]",
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
    p.__class__ = _KeysOnParse
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
    r.__class__ = _KeysOnParse
    r.set_defaults(func=_precompute_ref, accepts_overrides=True)

    q = sub.add_parser(
        "plot-train", help="plot training curves (loss, reward margin, neuron margin, accuracies) to PNG"
    )
    q.add_argument("runs", nargs="+", help="training run directories (with metrics.jsonl); several are overlaid")
    q.add_argument("--out", default=None, help="PNG path (default: RUN/curves.png for one run, curves.png otherwise)")
    q.set_defaults(func=_plot)


_PREFIX = "cfg__"


class _KeysOnParse(argparse.ArgumentParser):
    """A subcommand whose config keys are added when it is parsed: listing them imports TRL (seconds), which no
    other yfpo command should pay for."""

    def parse_known_args(self, args=None, namespace=None):
        if not getattr(self, "_keys_added", False):
            self._keys_added = True
            _add_config_keys(self)
        return super().parse_known_args(args, namespace)


def _add_config_keys(p) -> None:
    """Every TrainConfig key (TRL's DPOConfig options and yfpo's) as an option with its help and default, grouped
    like TRL's docs, and the older short names; so `yfpo train --learning_rate 1e-5 --pairs P` (no CONFIG) parses:
    were they unknown, argparse would take a value as the optional positional CONFIG."""
    from yfpo.train.config import ALIAS_HELP, ALIASES
    from yfpo.train.keys import key_groups

    seen: set[str] = set()
    for title, fields in key_groups():
        g = p.add_argument_group(title)
        for f, default in fields:
            _add_key(g, f.name, f.type, f.metadata.get("help", ""), default, seen)
    g = p.add_argument_group("older yfpo names (read as the TRL option after the arrow)")
    for old, new in ALIASES.items():
        extra = f"; {ALIAS_HELP[old]}" if old in ALIAS_HELP else ""
        _add_key(g, old, str, f"-> {new}{extra}", argparse.SUPPRESS, seen)
    _add_key(
        g, "trl", dict, "a mapping of TRL options (older configs); set them as keys instead", argparse.SUPPRESS, seen
    )


def _add_key(group, name: str, tp, help: str, default, seen: set[str]) -> None:
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    flags = [f for f in flags if f not in seen]
    seen.update(flags)
    if not flags:
        return
    is_bool = tp in (bool, "bool", "bool | None", "Optional[bool]")
    text = help if default is argparse.SUPPRESS else f"{help} [default: {default!r}]"
    text = text.replace("%", "%%")  # argparse formats help with %
    group.add_argument(
        *flags,
        dest=_PREFIX + name,
        default=argparse.SUPPRESS,
        metavar="V",
        nargs="?" if is_bool else None,
        const="true" if is_bool else None,
        help=text,
    )


def _train(args) -> int:

    from yfpo.train.run_dir import end_distributed
    from yfpo.train.trainer import train

    if args.keys:
        from yfpo.train.keys import key_groups

        for title, fields in key_groups():
            print(f"# {title}")
            for f, default in fields:
                print(f"{f.name:32s} {default!r}")
        return 0
    cfg = _load_cfg(args)
    out = train(cfg, resume=not args.no_resume, overwrite=args.overwrite, allow_other_weights=args.allow_other_weights)
    end_distributed()
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
    unknown = [a.split("=")[0] for a in (args.overrides or []) if a.startswith("--")]
    if unknown:  # before CONFIG: the value after an unknown --key lands in CONFIG's place, and is no file name
        from yfpo.train.keys import did_you_mean

        raise ValueError(
            f"unknown config key(s) {', '.join(unknown)}{did_you_mean(unknown)} (`yfpo train --help` lists every key)"
        )
    if args.config is not None and not Path(args.config).is_file():
        raise ValueError(f"CONFIG {args.config!r} is not a YAML file")
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
