"""`yfpo report RUN_DIR`."""

from __future__ import annotations

from yfpo.log import get_logger

logger = get_logger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="turn a `yfpo run` directory into report.md + a self-contained report.html",
        description="Reads RUN_DIR/run.json and the stage folders; writes RUN_DIR/report/ "
        "(report.md, report.html with inlined PNGs, the PNGs, comparison.json).",
    )
    p.add_argument("run_dir", help="a run directory written by `yfpo run` (holds run.json)")
    p.add_argument("--out", help="output folder (default RUN_DIR/report)")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from yfpo.report.build import build_report

    path = build_report(args.run_dir, args.out)
    logger.info(f"report: {path} (and {path.with_suffix('.md')})")
    return 0
