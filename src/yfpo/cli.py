"""The `yfpo` command: one entry point; each subcommand is a thin shell over one stage function.

Each stage package registers its own subcommands through a `register(subparsers)` function in its
`cli.py` module (yfpo.models.cli, yfpo.eval.cli, yfpo.neurons.cli, yfpo.pairs.cli, yfpo.train.cli,
yfpo.report.cli, yfpo.run); this file only wires them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

STAGE_CLIS = [
    "yfpo.models.cli",
    "yfpo.data.cli",
    "yfpo.eval.cli",
    "yfpo.neurons.cli",
    "yfpo.pairs.cli",
    "yfpo.train.cli",
    "yfpo.train.grpo_cli",
    "yfpo.report.cli",
    "yfpo.pipeline.cli",
]


def build_parser() -> argparse.ArgumentParser:
    from yfpo.version import __version__

    p = argparse.ArgumentParser(
        prog="yfpo",
        description="Neuron-guided preference optimization for math reasoning: find math neurons (AttnLRP), "
        "build preference pairs from the model's own samples, train (DPO family + YFPO neuron reward + FDT), "
        "evaluate on GSM8K & co., and report with statistics.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `yfpo COMMAND --help` for a command's options. The default model is the embedded "
        "SmolLM2-135M-Instruct (`yfpo models prepare`).",
    )
    p.add_argument("--version", action="version", version=f"yfpo {__version__}")
    g = p.add_argument_group("output (anywhere on the command line, before or after COMMAND)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more messages (-vv: debug); env YFPO_LOG_LEVEL")
    g.add_argument("-q", "--quiet", action="count", default=0, help="warnings and errors only (-qq: errors only)")
    g.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars, ours or the libraries' (transformers, TRL, datasets, huggingface_hub); "
        "env YFPO_NO_PROGRESS=1",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in STAGE_CLIS:
        importlib.import_module(mod_name).register(sub)
    return p


def output_flags(argv: list[str]) -> tuple[list[str], int, int, bool]:
    """(argv without them, -v count, -q count, --no-progress) for the output flags wherever they stand: they belong
    to `yfpo` itself, so `yfpo eval -q ...` works like `yfpo -q eval ...`."""
    rest, verbose, quiet, no_progress = [], 0, 0, False
    for i, a in enumerate(argv):
        if a == "--":
            rest += argv[i:]
            break
        if a == "--verbose" or (a.startswith("-v") and set(a[1:]) == {"v"}):
            verbose += 1 if a == "--verbose" else len(a) - 1
        elif a == "--quiet" or (a.startswith("-q") and set(a[1:]) == {"q"}):
            quiet += 1 if a == "--quiet" else len(a) - 1
        elif a == "--no-progress":
            no_progress = True
        else:
            rest.append(a)
    return rest, verbose, quiet, no_progress


def main(argv: list[str] | None = None) -> int:
    from yfpo import log

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    argv, verbose, quiet, no_progress = output_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        log.configure(verbose, quiet, no_progress)
    except ValueError as e:  # a bad YFPO_LOG_LEVEL
        print(f"yfpo: error: {e}", file=sys.stderr)
        return 2
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "accepts_overrides", False):
        args.overrides = extra
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("\n[yfpo] interrupted; finished work is kept on disk and a rerun resumes.", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as e:
        if os.environ.get("YFPO_DEBUG"):
            raise
        print(f"yfpo {args.command}: error: {e}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
