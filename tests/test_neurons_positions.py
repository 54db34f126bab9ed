"""Stage 1's activation statistics and stage 3's phi use the same positions (the response tokens);
the NeuronSet file records it (v2), v1 files load with a warning; sigma is floored at 0.1 x the median."""

import json
import warnings

import pytest
import torch

import yfpo.neurons.relevance as R
from yfpo.data.corpora import math_corpus
from yfpo.models import arch
from yfpo.models.tiny import tiny_model
from yfpo.neurons.capture import NeuronCapture
from yfpo.neurons.neuronset import FORMAT, NeuronSet, floor_sigma


def _one_record():
    model, tok = tiny_model("llama", seed=3)
    model.eval()
    rec = math_corpus(1, seed=5)[0]
    enc = R.encode_record(tok, rec.prompt, rec.response, 64, rec.id)
    return model, tok, rec, enc


def test_response_mask_marks_the_response_tokens_themselves():
    model, tok, rec, enc = _one_record()
    b = R.collate([enc], tok.pad_token_id)
    ids = b["input_ids"][0]
    resp_ids = ids[b["response_mask"][0]].tolist()
    assert resp_ids == enc.input_ids[enc.start + 1 : enc.end + 1]
    assert tok.decode(resp_ids).startswith(tok.decode(tok(rec.response[:12], add_special_tokens=False)["input_ids"]))
    # the target positions are the same span one to the left
    assert b["target_mask"][0].nonzero().flatten().add(1).tolist() == b["response_mask"][0].nonzero().flatten().tolist()


def test_stage1_stats_standardise_exactly_what_phi_averages():
    """Stats from one sequence, then phi of that same sequence over the response mask (the trainer's
    completion-mask convention): each neuron's mean z over the response tokens is 0, so phi is 0. Stats
    taken one position to the left (the v1 convention) would leave a non-zero phi."""
    model, tok, rec, enc = _one_record()
    stats = R.corpus_relevance(model, tok, [rec], method="forward", batch_size=1, max_length=64, progress=False)
    L, W = arch.neuron_shape(model)
    layers = torch.arange(L).repeat_interleave(4)
    indices = torch.arange(4).repeat(L)
    ns = NeuronSet(
        layers,
        indices,
        torch.ones(len(layers)),
        stats.act_mean[layers, indices],
        stats.act_std[layers, indices].clamp_min(1e-6),
        {"num_layers": L, "intermediate_size": W},
    )
    b = R.collate([enc], tok.pad_token_id)
    cap = NeuronCapture(model, ns)
    try:
        with torch.no_grad(), cap.window("policy"):
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        phi_resp = cap.phi("policy", b["response_mask"])
        phi_target = cap.phi("policy", b["target_mask"])
    finally:
        cap.remove()
    assert abs(float(phi_resp[0])) < 1e-4
    assert abs(float(phi_target[0])) > 1e-3  # the other convention is visibly different
    assert stats.n_tokens == int(b["response_mask"].sum())


def _prov(**kw):
    return {"num_layers": 2, "intermediate_size": 8, **kw}


def test_sigma_floor_relative_to_median(tmp_path):
    std = torch.tensor([1e-6, 0.5, 1.0, 2.0, 4.0])
    ns = NeuronSet([0, 0, 1, 1, 1], [0, 1, 2, 3, 4], [1.0] * 5, [0.0] * 5, std, _prov())
    assert float(ns.std[0]) == pytest.approx(0.1)  # median 1.0
    assert torch.equal(ns.std[1:], std[1:])
    assert torch.equal(floor_sigma(ns.std), ns.std)  # idempotent
    f = ns.sigma_floor()
    assert f["n_floored"] == 1 and f["floor"] == pytest.approx(0.1) and f["median_std"] == pytest.approx(1.0)
    back = NeuronSet.load(ns.save(tmp_path / "n.json"))
    assert torch.equal(back.std_raw, std) and torch.equal(back.std, ns.std)  # the file keeps the raw std
    d = json.loads((tmp_path / "n.json").read_text())
    assert d["format"] == FORMAT == "yfpo.neuronset/v2" and d["provenance"]["sigma_floor"]["n_floored"] == 1


def test_v1_file_loads_with_a_warning(tmp_path):
    ns = NeuronSet([0, 1], [1, 2], [0.3, 0.1], [0.0, 0.0], [1.0, 1.0], _prov())
    d = ns.to_dict()
    d["format"] = "yfpo.neuronset/v1"
    p = tmp_path / "old.json"
    p.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="one position left"):
        old = NeuronSet.load(p)
    assert old.provenance["positions"].startswith("target_positions") and len(old) == 2
    ns.save(tmp_path / "new.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NeuronSet.load(tmp_path / "new.json")
    d["format"] = "yfpo.neuronset/v0"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="format"):
        NeuronSet.load(p)
