"""Inputs refused, not guessed: mixed pair formats, prompts that leave no completion, NeuronSet types,
duplicates and weights, benchmark provenance, and the Hub only when asked for."""

from __future__ import annotations

import json

import pytest
from test_train_common import cfg_for, one_thread, pair_rows, write_jsonl, write_neuronset  # noqa: F401

import yfpo.data.problems as problems_mod
import yfpo.eval.bench as bench_mod
from yfpo.data.pairs import load_pairs
from yfpo.data.problems import DataFormatError, DataNotFoundError, load_benchmark
from yfpo.engine.common import Generation
from yfpo.models.loading import state_hash
from yfpo.models.tiny import save_tiny, tiny_model
from yfpo.neurons.neuronset import NeuronSet, NeuronSetError

PLAIN = {"prompt": "q", "chosen": "a", "rejected": "b"}
STEP = {"prompt": "q", "initial_reason_steps": "s1\n", "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize("rows,bad_line", [([PLAIN, PLAIN, STEP], 3), ([STEP, PLAIN], 2)])
def test_mixed_pair_formats_refused_at_file_line(tmp_path, rows, bad_line):
    p = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(DataFormatError, match=rf"mixed.jsonl:{bad_line}: a .* pair in a file whose line 1 is"):
        load_pairs(p)


# ----------------------------------------------------------------------------- NeuronSet


def _ns_file(tmp_path, model, **row_changes):
    path = tmp_path / "n.json"
    write_neuronset(path, model, k_per_layer=2)
    d = json.loads(path.read_text())
    for k, v in row_changes.items():
        if k == "duplicate":
            d["neurons"][1].update(layer=d["neurons"][0]["layer"], index=d["neurons"][0]["index"])
        else:
            d["neurons"][0][k] = v
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize(
    "change,msg",
    [
        ({"layer": True}, r"neurons\[0\]\.layer must be an integer, got True"),
        ({"index": 3.7}, r"neurons\[0\]\.index must be an integer, got 3.7"),
        ({"index": 3.0}, r"neurons\[0\]\.index must be an integer, got 3.0"),
        ({"score": False}, r"neurons\[0\]\.score must be a finite number, got False"),
        ({"std": "1"}, r"neurons\[0\]\.std must be a finite number"),
        ({"duplicate": True}, r"neurons\[1\] = \(layer \d+, index \d+\) repeats neurons\[0\]"),
    ],
)
def test_neuronset_types_and_duplicates_refused(tmp_path, change, msg):
    model, _ = tiny_model("llama", seed=0)
    with pytest.raises(NeuronSetError, match=msg):
        NeuronSet.load(_ns_file(tmp_path, model, **change))


def test_neuronset_weight_hash_compared_with_the_model(tmp_path):
    model, _ = tiny_model("llama", seed=0)
    other, _ = tiny_model("llama", seed=1)  # same shape, other weights
    ns = write_neuronset(tmp_path / "n.json", model)
    ns.provenance.update(weight_hash=state_hash(model), config={"dtype": "float32"})
    ns.save(tmp_path / "n.json")
    NeuronSet.load(tmp_path / "n.json", model)  # the weights it was found on
    with pytest.raises(NeuronSetError, match="found on weights .* --allow-other-weights"):
        NeuronSet.load(tmp_path / "n.json", other)
    assert len(NeuronSet.load(tmp_path / "n.json", other, allow_other_weights=True)) == len(ns)


# ----------------------------------------------------------------------------- training: prompts too long


def test_prompts_longer_than_max_length_are_counted_and_dropped(tmp_path):
    from yfpo.train.trainer import train

    model_dir = save_tiny(tmp_path / "tiny", family="llama", seed=0)
    rows = pair_rows(4)
    rows[1] = {**rows[1], "prompt": "word " * 400}  # > max_length tokens on its own
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = cfg_for(tmp_path, pairs, model=str(model_dir), max_length=64, max_steps=1)
    with pytest.warns(UserWarning, match="1 of 4 train pairs dropped"):
        out = train(cfg)
    done = json.loads((out / "train_done.json").read_text())
    assert done["pairs_dropped_prompt_too_long"] == 1 and done["pairs_used"] == 3
    all_long = write_jsonl(tmp_path / "long.jsonl", [{**r, "prompt": "word " * 400} for r in pair_rows(2)])
    with pytest.raises(ValueError, match="all 2 pairs have a prompt of >= max_length=64"):
        train(cfg_for(tmp_path / "b", all_long, model=str(model_dir), max_length=64, max_steps=1))


# ----------------------------------------------------------------------------- eval provenance, the Hub


def test_eval_summary_records_benchmark_path_and_sha256(tmp_path, monkeypatch):
    from yfpo.utils import sha256_file

    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    monkeypatch.setattr(
        bench_mod,
        "generate",
        lambda m, t, prompts, **kw: [Generation("The answer is 2.", 4, False, "eos") for _ in prompts],
    )
    model, tok = tiny_model()
    s = bench_mod.run_eval(model, "gsm8k", tokenizer=tok, bench_file=str(f), out_dir=tmp_path / "ev", progress=False)
    assert s["data"] == [{"path": str(f.resolve()), "sha256": sha256_file(f)}]
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["data"] == s["data"]
    f.write_text(json.dumps({"question": "2+2?", "answer": "2+2=4\n#### 4"}) + "\n")  # the file changed: refused
    with pytest.raises(ValueError, match="made by another eval config"):
        bench_mod.run_eval(model, "gsm8k", tokenizer=tok, bench_file=str(f), out_dir=tmp_path / "ev", progress=False)


def test_hub_used_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(problems_mod, "find_data_file", lambda rel, data_dir=None: None)
    monkeypatch.setattr(problems_mod, "_from_hub", lambda b, name: calls.append(name) or [])
    monkeypatch.delenv("YFPO_HUB", raising=False)
    with pytest.raises(DataNotFoundError, match="was not asked for .*--hub"):
        load_benchmark("gsm8k")
    assert calls == []
    load_benchmark("gsm8k", hub=True)
    monkeypatch.setenv("YFPO_HUB", "1")
    load_benchmark("gsm8k")
    assert calls == ["gsm8k", "gsm8k"]
