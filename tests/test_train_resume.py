"""A run killed after a checkpoint and resumed (`train(cfg, resume=True)`) reaches the same weights as an
uninterrupted run; the metrics file keeps one row per step."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train_common import StopAfter, cfg_for, pair_rows, write_jsonl, write_neuronset

from yfpo.models.tiny import save_tiny, tiny_model
from yfpo.train.trainer import train
from yfpo.utils import read_metrics


def _weights(run):
    files = sorted((run / "final").glob("*.safetensors"))
    assert files, list((run / "final").iterdir())
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_matches_uninterrupted(tmp_path, lora):
    model_dir = save_tiny(tmp_path / "tiny", family="llama", seed=0)
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(tmp_path / "n.json", model)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    common = dict(
        model=str(model_dir),
        lora=lora,
        lora_r=4,
        lora_alpha=8,
        max_steps=4,
        save_steps=1,
        lr=5e-3,
        gamma=0.5,
        neurons=str(tmp_path / "n.json"),
        lr_scheduler="linear",
        warmup_ratio=0.25,
        merge_final=True,  # final/ holds full weights (LoRA merged), compared below with the base model's
    )
    a = cfg_for(tmp_path / "a", pairs, **common)
    b = cfg_for(tmp_path / "b", pairs, **common)
    run_a = train(a)
    run_b = train(b, callbacks=[StopAfter(2)])  # "killed" after step 2 (checkpoint-2 saved)
    assert not (run_b / "train_done.json").exists() and not (run_b / "final").exists()
    assert (run_b / "checkpoints" / "checkpoint-2").exists()
    cal_before = (run_b / "calibration.json").read_text()  # default neuron_norm ref_std: measured before step 0
    run_b = train(b, resume=True)
    assert (run_b / "train_done.json").exists()
    assert (run_b / "calibration.json").read_text() == cal_before
    assert json.loads(cal_before)["std"] == pytest.approx(json.loads((run_a / "calibration.json").read_text())["std"])
    wa, wb = _weights(run_a), _weights(run_b)
    assert set(wa) == set(wb)
    start = dict(model.named_parameters())
    moved = 0
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
        if k in start and not torch.allclose(wa[k], start[k].detach()):
            moved += 1
    assert moved > 0  # training changed the weights
    steps = [r["step"] for r in read_metrics(run_b / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4]
    raw = [json.loads(l) for l in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" for r in raw)  # append-only: the pre-kill rows are still there
    la = read_metrics(run_a / "metrics.jsonl")
    lb = read_metrics(run_b / "metrics.jsonl")
    for ra, rb in zip([r for r in la if "loss" in r], [r for r in lb if "loss" in r]):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["neuron/margin"] == pytest.approx(rb["neuron/margin"], rel=1e-4, abs=1e-6)
