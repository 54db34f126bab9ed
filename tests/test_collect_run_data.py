"""scripts/collect_run_data.py on a faked run: the finished stages' small outputs, whichever process ran them."""

from __future__ import annotations

import json

from conftest import load_script
from test_run_pipeline import Fakes, _rc, run_pipeline


def _mod():
    return load_script("collect_run_data")


def test_collects_slim_items_metrics_and_stage_times(tmp_path):
    rc = _rc(tmp_path, methods={"dpo": {"gamma": 0}, "yfpo": {"gamma": 1}})
    rc.eval.mmlu = 2
    run_pipeline(rc, runners=Fakes().runners(), log=lambda m: None)
    run = tmp_path / "runs" / "t"
    # a stage that is not finished (no done.json) is left out; a long output becomes a hash
    items = next(run.glob("eval/yfpo-s0-*/gsm8k/items.jsonl"))
    rows = [json.loads(x) for x in items.read_text().splitlines()]
    rows[0].update(prompt="p" * 1000, output="the answer is 4")
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    unfinished = next(run.glob("eval/dpo-s0-*/svamp"))
    (unfinished / "done.json").unlink()
    out = tmp_path / "data"
    assert _mod().main([str(run), str(out)]) == 0
    got = [json.loads(x) for x in (out / "yfpo-s0.gsm8k.items.jsonl").read_text().splitlines()]
    assert len(got) == len(rows) and "prompt" not in got[0] and "output" not in got[0]
    assert len(got[0]["output_sha1"]) == 16 and got[0]["correct"] == rows[0]["correct"]
    assert not (out / "dpo-s0.svamp.items.jsonl").exists() and (out / "dpo-s0.gsm8k.items.jsonl").exists()
    assert (out / "base.mmlu.json").exists() and (out / "yfpo-s0.discrimination.json").exists()
    assert (out / "dpo-s0.metrics.jsonl").exists() and (out / "pairs.summary.json").exists()
    names = {t["name"] for t in json.loads((out / "stage_times.json").read_text())}
    assert {"neurons", "pairs", "train/yfpo-s0", "eval/base/gsm8k"} <= names and "eval/dpo-s0/svamp" not in names
    assert _mod().main([str(tmp_path / "nowhere"), str(out)]) == 2
