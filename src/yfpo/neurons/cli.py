"""`yfpo neurons find|control|check|show`."""

from __future__ import annotations

import argparse

from yfpo.log import get_logger

logger = get_logger(__name__)


def register(sub) -> None:
    p = sub.add_parser("neurons", help="find math neurons (AttnLRP), check them causally, show a NeuronSet")
    s = p.add_subparsers(dest="neurons_cmd", metavar="ACTION")

    f = s.add_parser(
        "find",
        help="score every neuron on math vs contrast text and write a NeuronSet",
        description="Config keys (NeuronsConfig) as --key value: model, out, method "
        "(attnlrp|actgrad|lape|random), n_math, n_contrast, k (count or fraction), "
        "selection (global|per_layer), criterion (diff|tstat|ratio|exclude_both), exclude_quantile, "
        "match, seed, batch_size, max_length, data_dir.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--config", help="YAML file (section `neurons` or top level)")
    f.add_argument("--overwrite", action="store_true", help="empty the work folder first (made by another config)")
    f.set_defaults(func=_find, accepts_overrides=True)

    k = s.add_parser(
        "control",
        help="a control NeuronSet of a found set: random (same per-layer counts) or flipped signs",
        description="random: neurons drawn with --seed, as many per layer as the source set, none of "
        "its own, statistics from the source's find run; flipped: the same neurons with "
        "every sign reversed. The selection baselines are `neurons find --method actgrad|lape`.",
    )
    k.add_argument("kind", choices=["random", "flipped"])
    k.add_argument("source", help="NeuronSet JSON file written by `yfpo neurons find`")
    k.add_argument("--out", required=True, help="where to write the control NeuronSet")
    k.add_argument("--seed", type=int, default=0)
    k.set_defaults(func=_control)

    c = s.add_parser(
        "check",
        help="ablate the selected neurons vs random ones; math/contrast NLL and accuracy",
        description="Config keys (CheckConfig) as --key value: neurons, model, out_dir, ablation "
        "(zero|mean), n_random, n_math, n_contrast, n_eval, eval_bench (gsm8k, mawps_singleop, ...), "
        "max_new_tokens, seed, batch_size.",
    )
    c.add_argument("--config", help="YAML file (section `check` or top level)")
    c.set_defaults(func=_check, accepts_overrides=True)

    w = s.add_parser("show", help="per-layer counts and the top neurons of a NeuronSet (and a PNG plot)")
    w.add_argument("neurons", help="NeuronSet JSON file")
    w.add_argument("--top", type=int, default=20, help="rows of the top-neuron table")
    w.add_argument("--plot", help="write the per-layer count plot here (PNG); default: beside the file")
    w.add_argument("--no-plot", action="store_true")
    w.set_defaults(func=_show)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _find(args) -> int:
    from yfpo.config import load_config
    from yfpo.neurons.config import NeuronsConfig
    from yfpo.neurons.find import find_neurons

    cfg = load_config(NeuronsConfig, args.config, args.overrides, section="neurons" if args.config else None)
    path = find_neurons(cfg, overwrite=args.overwrite)
    from yfpo.neurons.show import summary_text

    print(summary_text(path, top=10))
    logger.info(f"wrote {path}")
    return 0


def _control(args) -> int:
    from yfpo.neurons.controls import derive_control

    path = derive_control(args.kind, args.source, args.out, seed=args.seed)
    logger.info(f"wrote {path}")
    return 0


def _check(args) -> int:
    from yfpo.config import load_config
    from yfpo.neurons.check import causal_check
    from yfpo.neurons.config import CheckConfig

    cfg = load_config(CheckConfig, args.config, args.overrides, section="check" if args.config else None)
    res = causal_check(cfg)
    print(res["verdict_text"])
    logger.info(f"wrote {res['paths']['json']} and {res['paths']['png']}")
    return 0


def _show(args) -> int:
    from pathlib import Path

    from yfpo.neurons.show import plot_layer_counts, summary_text

    print(summary_text(args.neurons, top=args.top))
    if not args.no_plot:
        png = Path(args.plot) if args.plot else Path(args.neurons).with_suffix(".layers.png")
        plot_layer_counts(args.neurons, png)
        logger.info(f"plot: {png}")
    return 0
