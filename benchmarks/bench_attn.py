"""One decode step's attention for one layer: yfpo.engine.attn_kernel's compiled kernel against PyTorch's SDPA (what
transformers runs for the "fast" backend: query heads packed per KV head, a bool padding mask), on random data of the
default model's shapes (3 KV heads x 3 query heads of 64 dims) at the fast loop's batch widths and cache lengths.

    .venv/bin/python benchmarks/bench_attn.py                      # 64/128/256 rows x 200/300/400 positions
    .venv/bin/python benchmarks/bench_attn.py --rows 256 --positions 300 --repeats 100 --json out.json

The cache is a view of a wider reserved buffer, as in the fast loop, and a quarter of each row's positions is
masked (padding of shorter prompts). Reports ms per call (median of --rounds), the speed-up, the bytes of K and V
of the cached positions per second of kernel time (masked positions counted, though the kernel skips them), and the
largest difference from SDPA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _machine import cpu as machine_cpu


def _cpu() -> str:
    name, flags = machine_cpu()
    return f"{name} ({', '.join(flags)})"


def _time(fn, repeats: int, rounds: int) -> float:
    fn()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        per.append((time.perf_counter() - t0) / repeats * 1e3)
    return statistics.median(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="64,128,256", help="comma list of batch rows")
    ap.add_argument("--positions", default="200,300,400", help="comma list of cached positions")
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--group", type=int, default=3, help="query heads per KV head")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from yfpo.engine import attn_kernel

    kernel = attn_kernel.get()
    if kernel is None:
        raise SystemExit(f"the kernel cannot run here: {attn_kernel.why()}")
    h, g, d = args.kv_heads, args.group, args.head_dim
    print(f"CPU {_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; {h} KV heads x {g} x {d}")
    print("| rows | positions | SDPA (ms) | kernel (ms) | speed-up | cache bytes / kernel time (GB/s) | max diff |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    out = []
    gen = torch.Generator().manual_seed(0)
    for rows in map(int, args.rows.split(",")):
        for n in map(int, args.positions.split(",")):
            kbuf = torch.randn((rows, h, n + 64, d), generator=gen)
            vbuf = torch.randn((rows, h, n + 64, d), generator=gen)
            k, v = kbuf[:, :, :n], vbuf[:, :, :n]
            q = torch.randn((rows, h * g, 1, d), generator=gen)
            mask = torch.ones((rows, 1, 1, n), dtype=torch.bool)
            mask[:, :, :, 24 : 24 + n // 4] = False  # padding between a shared prefix and each row's own tokens
            qp = q.view(rows, h, g, d)

            def sdpa():
                return torch.nn.functional.scaled_dot_product_attention(qp, k, v, attn_mask=mask, scale=d**-0.5)

            def mine():
                return kernel.attend(q, k, v, mask, d**-0.5)

            diff = (mine().view(rows, h, g, d) - sdpa()).abs().max().item()
            ts, tk = _time(sdpa, args.repeats, args.rounds), _time(mine, args.repeats, args.rounds)
            gbs = 2 * rows * h * n * d * 4 / tk / 1e6
            row = dict(rows=rows, positions=n, sdpa_ms=ts, kernel_ms=tk, speedup=ts / tk, gb_s=gbs, max_diff=diff)
            out.append(row)
            print(f"| {rows} | {n} | {ts:.2f} | {tk:.2f} | {ts / tk:.2f}x | {gbs:.1f} | {diff:.1e} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": _cpu(), "threads": torch.get_num_threads(), "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
