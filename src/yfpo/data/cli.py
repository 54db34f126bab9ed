"""`yfpo data split`: the deduplicated word-problem split (yfpo.data.splits) as files, with its contamination report."""

from __future__ import annotations

from yfpo.log import get_logger

logger = get_logger(__name__)


def register(sub) -> None:
    from yfpo.data import splits

    p = sub.add_parser("data", help="data preparation: the deduplicated train/val/test word-problem split")
    s = p.add_subparsers(dest="data_cmd", metavar="ACTION")
    b = s.add_parser(
        "split",
        help="write train/val/test.jsonl over MAWPS + ASDiv, cleaned against SVAMP and GSM8K, and contamination.json",
        description=(splits.__doc__ or "").split("\n\n")[1],
    )
    b.add_argument("--out", required=True, help="folder for train.jsonl, val.jsonl, test.jsonl, contamination.json")
    b.add_argument("--data-dir", default=None)
    b.add_argument("--seed", type=int, default=splits.SEED)
    b.add_argument("--n-test", type=int, default=splits.N_TEST)
    b.add_argument("--n-val", type=int, default=splits.N_VAL)
    b.set_defaults(func=_split)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _split(args) -> int:
    from yfpo.data.splits import write_split

    rep = write_split(args.out, args.data_dir, args.seed, args.n_test, args.n_val)
    print(
        f"sizes {rep['sizes']}; dropped {rep['dropped_counts']} (evaluation sets: {rep['dropped_by_evaluation_set']})"
    )
    logger.info(f"wrote {args.out}/{{train,val,test}}.jsonl and contamination.json")
    return 0
