"""Strict resume: a stage folder made by one config refuses a rerun with another (yfpo.resume)."""

from __future__ import annotations

import json
import os

import pytest
from test_train_common import cfg_for, one_thread, pair_rows, write_jsonl, write_neuronset  # noqa: F401

from yfpo import resume as strict
from yfpo.models.tiny import save_tiny, tiny_model
from yfpo.train.trainer import train
from yfpo.utils import read_metrics


def test_claim_refuses_other_config_and_names_keys(tmp_path):
    d = tmp_path / "stage"
    strict.claim(d, "pairs", {"k": 4, "seed": 0, "out_dir": "a"})
    strict.claim(d, "pairs", {"k": 4, "seed": 0, "out_dir": "b"})  # location keys do not count
    with pytest.raises(strict.ResumeConflict, match=r"k: 4 -> 8.*new output folder, or --overwrite"):
        strict.claim(d, "pairs", {"k": 8, "seed": 0})
    with pytest.raises(strict.ResumeConflict, match="holds a 'pairs' stage"):
        strict.claim(d, "train", {"k": 4, "seed": 0})
    (d / "junk.txt").write_text("x")
    strict.claim(d, "pairs", {"k": 8, "seed": 0}, overwrite=True)
    assert not (d / "junk.txt").exists()
    assert json.loads((d / strict.RECORD).read_text())["config"] == {"k": 8, "seed": 0}


def test_train_gamma_sweep_into_one_folder_is_refused(tmp_path):
    """The issue's reproduction: --gamma 0 then --gamma 5 --neurons N into the same --out."""
    model_dir = save_tiny(tmp_path / "tiny", family="llama", seed=0)
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(tmp_path / "n.json", model)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    out = tmp_path / "D"
    a = cfg_for(tmp_path, pairs, model=str(model_dir), output_dir=str(out), gamma=0.0, max_steps=1)
    train(a)
    assert (out / "train_done.json").exists() and (out / "config.hash.json").exists()
    assert not (out / "done.json").exists()  # that name is the pipeline's stage record
    b = cfg_for(
        tmp_path,
        pairs,
        model=str(model_dir),
        output_dir=str(out),
        gamma=5.0,
        neurons=str(tmp_path / "n.json"),
        max_steps=1,
    )
    with pytest.raises(strict.ResumeConflict, match=r"gamma: 0\.0 -> 5\.0.*neurons: None -> "):
        train(b)
    assert train(a) == out  # the same config: finished, returned at once
    train(b, overwrite=True)
    assert json.loads((out / "config.hash.json").read_text())["config"]["gamma"] == 5.0


def test_read_metrics_applies_resume_marker_and_cuts_torn_tail(tmp_path):
    p = tmp_path / "metrics.jsonl"
    rows = [
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 0.9},
        {"step": 3, "loss": 0.8},
        {"event": "resume", "step": 2},
        {"step": 3, "loss": 0.7},
        {"train_runtime": 1.0, "step": 3},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')
    got = read_metrics(p)
    assert [(r["step"], r["loss"]) for r in got] == [(1, 1.0), (2, 0.9), (3, 0.7)]
    assert p.read_text().endswith("}\n")  # torn line removed, so the next append starts clean


def test_resume_from_a_checkpoint_of_another_config_is_refused(tmp_path):
    from test_train_common import StopAfter

    model_dir = save_tiny(tmp_path / "tiny", family="llama", seed=0)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    a = cfg_for(tmp_path, pairs, model=str(model_dir), max_steps=3, save_steps=1, lr=1e-3)
    out = train(a, callbacks=[StopAfter(1)])  # "killed" after checkpoint-1
    assert (out / "checkpoints" / "checkpoint-1").exists() and not (out / "train_done.json").exists()
    b = cfg_for(tmp_path, pairs, model=str(model_dir), max_steps=3, save_steps=1, lr=5e-3)
    with pytest.raises(strict.ResumeConflict, match=r"lr: 0\.001 -> 0\.005"):
        train(b)
    assert train(a).joinpath("train_done.json").exists()  # its own config resumes and finishes


def test_neurons_find_refuses_other_config(tmp_path):
    from yfpo.neurons.config import NeuronsConfig
    from yfpo.neurons.find import find_neurons

    tiny_dir = str(save_tiny(tmp_path / "tiny", family="llama", seed=0))
    kw = dict(
        model=tiny_dir,
        out=str(tmp_path / "n.json"),
        method="random",
        n_math=4,
        n_contrast=4,
        k=8,
        max_length=48,
        batch_size=4,
        progress=False,
    )
    find_neurons(NeuronsConfig(**kw))
    with pytest.raises(strict.ResumeConflict, match=r"seed: 0 -> 1"):
        find_neurons(NeuronsConfig(**{**kw, "seed": 1}))
    find_neurons(NeuronsConfig(**{**kw, "seed": 1}), overwrite=True)


def test_folder_from_before_the_record_is_checked_against_its_config_yaml(tmp_path):
    import yaml

    d = tmp_path / "old"
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"k": 4, "seed": 0, "out_dir": "x"}))
    strict.check(d, "pairs", {"k": 4, "seed": 0, "out_dir": "y"})
    with pytest.raises(strict.ResumeConflict, match=r"k: 4 -> 2.*from its config.yaml"):
        strict.check(d, "pairs", {"k": 2, "seed": 0})


def test_identities_are_by_content_not_location(tmp_path):
    import shutil

    a = save_tiny(tmp_path / "a" / "final", family="llama", seed=0)
    b = save_tiny(tmp_path / "b" / "final", family="llama", seed=1)  # same shape and name, other weights
    shutil.copytree(a, tmp_path / "moved" / "final")
    assert strict.model_identity(str(a)) == strict.model_identity(str(tmp_path / "moved" / "final"))
    assert strict.model_identity(str(a)) != strict.model_identity(str(b))
    assert strict.model_identity("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    for d in "xyz":
        (tmp_path / d).mkdir()
    p1 = write_jsonl(tmp_path / "x" / "pairs.jsonl", pair_rows(2))
    p2 = write_jsonl(tmp_path / "y" / "pairs.jsonl", pair_rows(2))
    assert (
        strict.file_identity(str(p1))
        == strict.file_identity(str(p2))
        != strict.file_identity(str(write_jsonl(tmp_path / "z" / "pairs.jsonl", pair_rows(3))))
    )


def test_stale_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    import subprocess

    from yfpo.utils import remove_stale_tmp

    p = subprocess.Popen(["true"])  # its pid is one whose process has exited
    p.wait()
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f".report.md.tmp{p.pid}", tmp_path / "sub" / f".x.tmp{p.pid}t12.png"]
    live = tmp_path / f".run.json.tmp{os.getpid()}t5"  # this process: a writer in flight
    other = tmp_path / "notes.tmp1"  # not an atomic-write temp name
    for f in [*stale, live, other]:
        f.write_text("partial")
    gone = remove_stale_tmp(tmp_path)
    assert sorted(gone) == sorted(stale) and live.exists() and other.exists()


def test_yaml_syntax_error_names_the_line_where_the_bracket_opened(tmp_path):
    from yfpo.config import ConfigError, read_yaml

    f = tmp_path / "run.yaml"
    f.write_text("name: x\nseeds: [0, 1\nmodel: default\n\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:2: not valid YAML \(while parsing a flow sequence"):
        read_yaml(f)
    f.write_text("a: 1\n  b: 2\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:\d: not valid YAML"):
        read_yaml(f)
