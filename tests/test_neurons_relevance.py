"""Batched relevance: per-sample, masked, normalised, resumable; the target is the gold-logit sum."""

import torch

import yfpo.neurons.relevance as R
from yfpo.data.corpora import contrast_corpus, math_corpus
from yfpo.models.tiny import tiny_model


def _setup(n=5, family="llama"):
    model, tok = tiny_model(family, seed=1)
    model.eval()
    recs = math_corpus(n - 2, seed=2) + contrast_corpus(2, seed=2)
    enc = [R.encode_record(tok, r.prompt, r.response, 64, r.id) for r in recs]
    return model, tok, recs, enc


def test_encode_marks_response_positions():
    model, tok, recs, enc = _setup(3)
    e = enc[0]
    ids = e.input_ids
    # the first target position predicts the first response token; the last predicts the last token
    resp = tok.decode(ids[e.start + 1 : e.end + 1])
    assert recs[0].response[:20] in resp
    assert "<|im_start|>assistant" in tok.decode(ids[: e.start + 1])
    assert "<|im_start|>assistant" not in resp


def test_batch_equals_individual_and_padding_is_masked():
    model, tok, recs, enc = _setup(4, "qwen2")
    batch = R.collate(enc, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 4
    assert not batch["target_mask"][batch["attention_mask"] == 0].any()
    rec, target = R.batch_relevance(model, batch, "attnlrp")
    for i in range(4):
        one, t1 = R.batch_relevance(model, R.collate([enc[i]], tok.pad_token_id), "attnlrp")
        torch.testing.assert_close(one.relevance[0], rec.relevance[i], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(t1[0], target[i], rtol=1e-5, atol=1e-6)
    # the target is the sum of the gold next-token logits of the full model
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref = (logits.gather(-1, batch["gold"].unsqueeze(-1)).squeeze(-1) * batch["target_mask"]).sum(1)
    torch.testing.assert_close(target, ref, rtol=1e-5, atol=1e-5)
    # activation stats count exactly the target tokens
    assert rec.n_tokens == int(batch["target_mask"].sum())


def test_normalise():
    x = torch.tensor([[[1.0, -3.0]], [[0.0, 0.0]]])
    n = R.normalise(x)
    torch.testing.assert_close(n[0].abs().sum(), torch.tensor(1.0))
    assert torch.equal(n[1], torch.zeros(1, 2))
    torch.testing.assert_close(n[0, 0], torch.tensor([0.25, -0.75]))


def test_corpus_relevance_resumes(tmp_path, monkeypatch):
    model, tok, recs, _ = _setup(5)
    a = R.corpus_relevance(
        model, tok, recs, method="attnlrp", batch_size=2, max_length=64, work_dir=tmp_path, progress=False
    )
    files = sorted(tmp_path.glob("batch_*.pt"))
    assert len(files) == 3
    files[1].unlink()  # as if interrupted before this batch
    calls = []
    real = R.batch_relevance
    monkeypatch.setattr(R, "batch_relevance", lambda *a, **k: calls.append(1) or real(*a, **k))
    b = R.corpus_relevance(
        model, tok, recs, method="attnlrp", batch_size=2, max_length=64, work_dir=tmp_path, progress=False
    )
    assert len(calls) == 1  # only the missing batch was recomputed
    torch.testing.assert_close(a.relevance_mean, b.relevance_mean)
    torch.testing.assert_close(a.act_mean, b.act_mean)
    assert a.n_samples == 5 and a.relevance_mean.shape == (2, 128)
    # a different plan (other batch size) does not reuse stale files
    c = R.corpus_relevance(
        model, tok, recs, method="attnlrp", batch_size=5, max_length=64, work_dir=tmp_path, progress=False
    )
    assert len(list(tmp_path.glob("batch_*.pt"))) == 1
    torch.testing.assert_close(a.relevance_mean, c.relevance_mean, rtol=1e-4, atol=1e-7)


def test_methods_differ_and_forward_pass_has_no_relevance():
    model, tok, recs, _ = _setup(3)
    lrp = R.corpus_relevance(model, tok, recs, method="attnlrp", batch_size=3, max_length=64, progress=False)
    ag = R.corpus_relevance(model, tok, recs, method="actgrad", batch_size=3, max_length=64, progress=False)
    fw = R.corpus_relevance(model, tok, recs, method="forward", batch_size=3, max_length=64, progress=False)
    assert not torch.allclose(lrp.relevance_mean, ag.relevance_mean)
    assert fw.relevance_mean is None
    torch.testing.assert_close(fw.act_mean, lrp.act_mean)
    assert ((fw.act_prob >= 0) & (fw.act_prob <= 1)).all()
    # parameters are left as they were (requires_grad restored, no grads accumulated)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


import pytest  # noqa: E402


@pytest.mark.parametrize("family", ["qwen3", "gemma3", "gpt2"])
def test_all_families_target_and_relevance(family):
    model, tok, recs, enc = _setup(3, family)
    batch = R.collate(enc, tok.pad_token_id)
    rec, target = R.batch_relevance(model, batch, "attnlrp")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref = (logits.gather(-1, batch["gold"].unsqueeze(-1)).squeeze(-1) * batch["target_mask"]).sum(1)
    torch.testing.assert_close(target, ref, rtol=1e-4, atol=1e-4)
    assert rec.relevance.shape == (3, 2, 128) and rec.relevance.abs().sum() > 0
