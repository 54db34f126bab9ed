"""A quick-run-shaped `yfpo run` on the tiny random test model, in a few minutes of one CPU core: every stage a
quick run has (neurons, causal check, DPO / YFPO / YFPO on random neurons x 2 seeds, two benchmarks, pair
discrimination, the base model), so its report shows every section and plot. A random model scores 0: the numbers
mean nothing; docs/screenshots/quick_tiny/ shows this report in a browser.

    OMP_NUM_THREADS=1 python scripts/tiny_report_run.py OUT      # then: python scripts/check_report.py \\
                                                                 #   OUT/runs/tiny_quick/report/report.html --shots S
"""

from __future__ import annotations

import sys
from pathlib import Path

from yfpo.data.pairs import load_solution_pairs, write_pairs
from yfpo.engine.prompts import format_user_message
from yfpo.models.tiny import save_tiny
from yfpo.pipeline import load_run_config, run_pipeline


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    model_dir = save_tiny(root / "tiny")
    pairs_file = root / "pairs.jsonl"
    write_pairs(
        pairs_file,
        [
            {"prompt": format_user_message(o["question"]), "chosen": o["chosen"][:120], "rejected": o["rejected"][:120]}
            for o in load_solution_pairs(limit=8)
        ],
    )
    config = root / "tiny_quick.yaml"
    config.write_text(f"""
name: tiny_quick
model: {model_dir}
out_root: {root / "runs"}
seeds: [0, 1]
neurons: {{n_math: 4, n_contrast: 4, k: 8, batch_size: 4, max_length: 48, progress: false}}
check: {{n_random: 1, n_math: 4, n_contrast: 4, n_eval: 0, max_length: 48, progress: false}}
pairs_file: {pairs_file}
train: {{lora: true, epochs: 2, batch_size: 2, max_length: 768}}
methods: {{dpo: {{gamma: 0.0}}, yfpo: {{gamma: 1.0}}, yfpo_random: {{gamma: 1.0, neurons: random}}}}
eval: {{benches: [gsm8k, mawps_singleop], limit: 8, max_new_tokens: 16, batch_size: 8, discrimination: 8}}
""")
    print(run_pipeline(load_run_config(config), log=print))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
