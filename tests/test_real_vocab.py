"""A one-layer model with Qwen2.5's real vocabulary (151,936 rows, tied) through the stages whose memory grows with the
vocabulary (issue 31): a DPO training step (TRL's fused head), an FDT training step (yfpo's chunked head) and the causal
check's NLL. None of them may hold full-vocabulary logits for more positions than its chunk: every tensor whose last
dimension is the vocabulary is recorded while each runs, and the test's batches are longer than the chunks."""

from __future__ import annotations

import torch
from test_train_common import cfg_for, first_batch, pair_rows, write_jsonl
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import AutoModelForCausalLM

from yfpo.data.corpora import TextRecord
from yfpo.models.tiny import tiny_config, tiny_tokenizer
from yfpo.neurons import check
from yfpo.train import fdt as fdt_mod
from yfpo.train.trainer import make_trainer

V = 151_936  # Qwen2.5's vocabulary
HIDDEN = 32


class VocabRows(TorchDispatchMode):
    """The largest number of positions of any tensor whose last dimension is the vocabulary (the (hidden, vocab)
    transposed weight aside)."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == V and t.numel() != HIDDEN * V:
                self.rows = max(self.rows, t.numel() // V)
        return out


def _model():
    tok = tiny_tokenizer()
    cfg = tiny_config("qwen2", vocab_size=V, num_hidden_layers=1, hidden_size=HIDDEN, intermediate_size=64)
    cfg.tie_word_embeddings = True
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg), tok


def test_real_vocabulary_training_and_check_keep_logits_chunked(tmp_path, monkeypatch):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    monkeypatch.setattr(fdt_mod, "CHUNK", 16)
    monkeypatch.setattr(check, "NLL_CHUNK", 16)
    for fdt in (False, True):
        model, tok = _model()
        tr, _ = make_trainer(cfg_for(tmp_path / f"t{fdt}", pairs, batch_size=4, fdt=fdt), model=model, tokenizer=tok)
        batch = first_batch(tr)
        positions = batch["input_ids"].numel()
        rec = VocabRows()
        with rec:
            loss = tr.compute_loss(tr.model, batch)
            loss.backward()
        assert torch.isfinite(loss)
        assert positions > 64  # a batch x length x vocab tensor would show
        # TRL's fused head (DPO) and FDT's head work through chunks of positions, never the whole batch at once
        assert rec.rows < positions, (fdt, rec.rows, positions)
        if fdt:
            assert 0 < rec.rows <= 16
    model, tok = _model()
    recs = [TextRecord(f"r{i}", f"What is {i} + 1?", f"It is {i + 1}. " * 8, "t") for i in range(4)]
    rec = VocabRows()
    with rec:
        nll = check.response_nll(model, tok, recs, batch_size=4, max_length=128, progress=False)
    assert all(torch.isfinite(torch.tensor(nll)))
    assert 0 < rec.rows <= 16
