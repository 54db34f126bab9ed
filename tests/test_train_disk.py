"""What a finished training keeps on disk: a LoRA run's final/ is its adapter (merge_final: false, the default) and
loads to the same model as the merged final/ of merge_final: true; checkpoints/ is deleted once final/ is written
(unless keep_checkpoints); neither key changes a stage's hash (the weights are the same); a backend that reads a
model folder gets a merged copy of an adapter, not its base model."""

from __future__ import annotations

from pathlib import Path

import torch
from test_train_common import cfg_for, pair_rows, write_jsonl

from yfpo.engine.common import model_dir as _model_dir
from yfpo.models import load_model
from yfpo.models.loading import is_adapter_dir
from yfpo.models.tiny import save_tiny
from yfpo.pipeline import stage_hash
from yfpo.train.trainer import train


def _size(p):
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def test_adapter_final_loads_like_merged_and_checkpoints_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("YFPO_CACHE", str(tmp_path / "cache"))
    model_dir = save_tiny(tmp_path / "tiny", family="llama", seed=0)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    common = dict(model=str(model_dir), lora=True, lora_r=4, lora_alpha=8, max_steps=2, save_steps=1, lr=5e-3)
    a = train(cfg_for(tmp_path / "a", pairs, **common))  # defaults: adapter, checkpoints pruned
    b = train(cfg_for(tmp_path / "b", pairs, merge_final=True, keep_checkpoints=True, **common))
    assert is_adapter_dir(a / "final") and not (a / "checkpoints").exists()
    assert (b / "final" / "config.json").exists() and (b / "checkpoints" / "checkpoint-2").exists()
    assert _size(a / "final") < _size(b / "final") / 2  # the adapter, not a second copy of the model
    ids = torch.arange(3, 40).reshape(1, -1)
    ma, _ = load_model(str(a / "final"))
    mb, _ = load_model(str(b / "final"))
    with torch.no_grad():
        la, lb = ma(ids).logits, mb(ids).logits
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-6)  # the same model, whichever form final/ holds
    base, _ = load_model(str(model_dir))
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, la, atol=1e-4)  # and it is the trained one
    # ctranslate2 / llama.cpp / vLLM read a folder: they get a merged copy (once), never the base model's folder
    folder = _model_dir(ma)
    assert folder and folder != str(model_dir) and (tmp_path / "cache") in Path(folder).parents
    assert _model_dir(ma) == folder
    mc, _ = load_model(folder)
    with torch.no_grad():
        torch.testing.assert_close(mc(ids).logits, la, rtol=0, atol=0)
    # a rerun finds the run done, and prunes what a kill during pruning left
    (a / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    assert train(cfg_for(tmp_path / "a", pairs, **common)) == a and not (a / "checkpoints").exists()


def test_storage_keys_do_not_change_the_train_stage_hash():
    cfg = {"lr": 1e-5, "lora": True, "merge_final": True, "keep_checkpoints": False}
    h = stage_hash("train", cfg, {"model": "m"})
    assert stage_hash("train", {**cfg, "merge_final": False}, {"model": "m"}) == h
    assert stage_hash("train", {**cfg, "keep_checkpoints": True}, {"model": "m"}) == h
    assert stage_hash("train", {**cfg, "lr": 2e-5}, {"model": "m"}) != h
