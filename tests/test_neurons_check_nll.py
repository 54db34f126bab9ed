"""The causal check's NLL (neurons/check.response_nll) applies the LM head to response positions only, NLL_CHUNK at a
time, instead of materialising (batch x length x vocab) logits: same values as the model's full forward, and the
head never sees more than NLL_CHUNK rows (issue 31: a 151,936-token vocabulary made the full logits of a 0.5B
model's check batch the largest tensor of the stage)."""

from __future__ import annotations

import torch

from yfpo.data.corpora import TextRecord
from yfpo.models.tiny import tiny_model
from yfpo.neurons import check
from yfpo.neurons.relevance import _batches, collate, encode_record


def _records(n=5):
    return [
        TextRecord(f"r{i}", f"What is {i} + {2 * i}?", f"{i} + {2 * i} = {3 * i}. " * (1 + i % 3), "test")
        for i in range(n)
    ]


def _full_nll(model, tok, recs, batch_size):
    """The former computation: the model's full logits, cross entropy everywhere, masked mean."""
    enc = [encode_record(tok, r.prompt, r.response, 256, r.id) for r in recs]
    out = [0.0] * len(enc)
    for bidx in _batches(enc, batch_size):
        b = collate([enc[i] for i in bidx], tok.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), b["gold"], reduction="none")
        per = (nll * b["target_mask"]).sum(1) / b["target_mask"].sum(1)
        for j, i in enumerate(bidx):
            out[i] = float(per[j])
    return out


def test_response_nll_equals_the_full_forward_and_chunks_the_head(monkeypatch):
    model, tok = tiny_model("qwen2", seed=0)
    recs = _records()
    want = _full_nll(model, tok, recs, batch_size=3)
    rows = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    monkeypatch.setattr(check, "NLL_CHUNK", 7)
    got = check.response_nll(model, tok, recs, batch_size=3, max_length=256, progress=False)
    handle.remove()
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-5)
    assert rows and max(rows) <= 7 and len(rows) > 2
