"""scripts/experiment_summary.py on a faked run: output differences per seed, the training table, the MDE."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script
from test_run_pipeline import Fakes, _rc, run_pipeline


def _script():
    return load_script("experiment_summary")


class WithOutputs(Fakes):
    """yfpo's outputs differ from dpo's on items 0 and 3 only; the logit share is logged."""

    def eval(self, model_path, bench, **kw):
        s = super().eval(model_path, bench, **kw)
        method = Path(kw["out_dir"]).parent.name.split("-s")[0]
        items = Path(kw["out_dir"]) / "items.jsonl"
        rows = [json.loads(x) for x in items.read_text().splitlines()]
        for i, r in enumerate(rows):
            r["output"] = f"{'Y' if method == 'yfpo' and i in (0, 3) else 'same'} {i}"
        items.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return s

    def train(self, cfg):
        out = super().train(cfg)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": 3, "loss": 0.3, "neuron/logit_share": 0.5 if cfg.gamma else 0.0}) + "\n")
        return out


def test_summary_counts_differing_outputs_per_seed_and_the_logit_share(tmp_path):
    rc = _rc(tmp_path)
    rc.seeds = [0, 1]
    rc.methods = {"dpo": {"gamma": 0.0}, "yfpo": {"gamma": 1.0}}
    run_pipeline(rc, runners=WithOutputs().runners(), log=lambda m: None)
    run = tmp_path / "runs" / "t"
    assert _script().main([str(run), "--no-margins", "--out", str(tmp_path / "s")]) == 0
    res = json.loads((tmp_path / "s" / "summary.json").read_text())
    d = res["output_diffs"]["dpo vs yfpo / gsm8k"]
    assert d["per_seed"] == {"0": {"n": 6, "differ": 2}, "1": {"n": 6, "differ": 2}} and d["differ"] == 4
    t = res["training"]
    assert t["yfpo-s0"]["logit_share_mean"] == 0.5 and t["dpo-s1"]["logit_share_mean"] == 0.0
    assert set(res["mde"]) == {"gsm8k", "svamp"} and res["mde"]["gsm8k"]["n"] == 6
    md = (tmp_path / "s" / "summary.md").read_text()
    assert "| dpo vs yfpo / gsm8k | 4/12 | 33.3% | s0: 2/6, s1: 2/6 |" in md
