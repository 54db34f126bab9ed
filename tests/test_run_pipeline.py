"""`yfpo run` orchestration: hashing, caching, resume after a kill, rerun only what changed (fake stages),
and, when the train/eval stages are installed, the real pipeline end to end on a tiny model."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from yfpo.neurons.neuronset import NeuronSet
from yfpo.run import EvalSection, RunConfig, load_run_config, run_pipeline, stage_hash


@dataclass
class FakeTrainConfig:
    model: str = ""
    pairs: str = ""
    neurons: str = ""
    out_dir: str = ""
    seed: int = 0
    gamma: float = 0.0
    fdt: bool = False
    lora: bool = True
    lr: float = 1e-4
    progress: bool = True


class Fakes:
    """Stage functions writing files in the documented schemas, counting their calls."""

    def __init__(self, kill_train: str | None = None):
        self.calls: Counter = Counter()
        self.kill_train = kill_train
        self.resumed: list[str] = []

    def runners(self):
        return {"neurons": self.neurons, "pairs": self.pairs, "train": self.train, "eval": self.eval,
                "discrimination": self.disc}

    def neurons(self, cfg):
        self.calls["neurons"] += 1
        NeuronSet([0, 1], [1, 2], [0.3, 0.1], [0, 0], [1, 1],
                  {"num_layers": 2, "intermediate_size": 8, "model": cfg.model, "method": cfg.method}).save(cfg.out)
        return Path(cfg.out)

    def pairs(self, cfg):
        self.calls["pairs"] += 1
        out = Path(cfg.out_dir)
        (out / "pairs.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
        (out / "summary.json").write_text(json.dumps({"questions": cfg.limit, "samples": cfg.limit * cfg.k,
                                                      "sample_accuracy": 0.5, "pairs": 1, "pairs_by_source": {"self": 1}}))
        return out / "pairs.jsonl"

    def train(self, cfg):
        tag = f"{Path(cfg.out_dir).name.rsplit('-', 1)[0]}"
        self.calls["train"] += 1
        self.calls[f"train:{tag}"] += 1
        out = Path(cfg.out_dir)
        ck = out / "checkpoint-1"
        if ck.exists():
            self.resumed.append(tag)
        ck.mkdir(exist_ok=True)
        if self.kill_train == tag:
            self.kill_train = None
            raise KeyboardInterrupt("killed mid-training")
        with open(out / "metrics.jsonl", "w") as f:
            for s in (1, 2):
                f.write(json.dumps({"step": s, "loss": 0.7 - 0.1 * s, "rewards/margins": 0.1 * s,
                                    "neuron/margin": cfg.gamma * s, "rewards/accuracies": 0.5}) + "\n")
        (out / "final").mkdir(exist_ok=True)
        (out / "done.json").write_text("{}")
        return out

    def eval(self, model_path, bench, *, limit, out_dir, **kw):
        self.calls["eval"] += 1
        assert Path(model_path).name == "final" or model_path == "tiny-model"
        n = limit
        corr = [i % 2 == 0 for i in range(n)]
        with open(Path(out_dir) / "items.jsonl", "w") as f:
            for i, c in enumerate(corr):
                f.write(json.dumps({"id": f"{bench}-{i}", "correct": {"flexible": c}}) + "\n")
        s = {"bench": bench, "n": n, "primary": "flexible",
             "accuracy": {"flexible": {"acc": sum(corr) / n, "lo": 0, "hi": 1, "n_correct": sum(corr)}},
             "protocol": {"shots": 0}}
        (Path(out_dir) / "summary.json").write_text(json.dumps(s))
        return s

    def disc(self, model_path, *, limit, out_dir, **kw):
        self.calls["disc"] += 1
        d = {"n": limit, "accuracy": 0.55}
        (Path(out_dir) / "discrimination.json").write_text(json.dumps(d))
        return d


def _rc(tmp_path, **kw):
    rc = RunConfig(name="t", model="tiny-model", out_root=str(tmp_path / "runs"), pairs={"limit": 4, "k": 2},
                   eval=EvalSection(benches=["gsm8k", "svamp"], limit=6, discrimination=10), **kw)
    return rc


def _done_mtimes(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("done.json")}


def test_kill_mid_training_then_rerun_resumes_and_skips_finished(tmp_path):
    fakes = Fakes(kill_train="yfpo-s0")
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_rc(tmp_path), runners=fakes.runners(), train_config_cls=FakeTrainConfig, log=logs.append)
    run = tmp_path / "runs" / "t"
    before = _done_mtimes(run)
    assert any(k.startswith("stages/neurons-") for k in before) and any(k.startswith("stages/pairs-") for k in before)
    assert any(k.startswith("train/dpo-s0-") and k.count("/") == 2 for k in before)
    assert not any(k.startswith("train/yfpo-s0-") and k.count("/") == 2 for k in before)
    idx = json.loads((run / "run.json").read_text())
    assert {s["name"]: s["status"] for s in idx["stages"]}["train/yfpo-s0"] == "running"

    again = Fakes()
    logs = []
    report = run_pipeline(_rc(tmp_path), runners=again.runners(), train_config_cls=FakeTrainConfig, log=logs.append)
    assert report.name == "report.html" and report.exists()
    assert again.calls["neurons"] == 0 and again.calls["pairs"] == 0 and again.calls["train:dpo-s0"] == 0
    assert again.calls["train"] == 3 and again.resumed == ["yfpo-s0"]  # resumed in the same folder
    assert again.calls["eval"] == 5 * 2 and again.calls["disc"] == 5  # base + 4 methods
    after = _done_mtimes(run)
    assert all(after[k] == v for k, v in before.items())  # finished stages untouched
    assert any("resuming" in m and "train/yfpo-s0" in m for m in logs)

    third = Fakes()
    run_pipeline(_rc(tmp_path), runners=third.runners(), train_config_cls=FakeTrainConfig, log=lambda m: None)
    assert sum(third.calls.values()) == 0
    md = (run / "report" / "report.md").read_text()
    assert "YFPO vs DPO on gsm8k" in md and "not significant" in md


def test_changes_rerun_only_dependent_stages(tmp_path):
    run_pipeline(_rc(tmp_path), runners=Fakes().runners(), train_config_cls=FakeTrainConfig, log=lambda m: None)
    f = Fakes()  # eval setting changed: only eval reruns
    rc = _rc(tmp_path)
    rc.eval.limit = 4
    run_pipeline(rc, runners=f.runners(), train_config_cls=FakeTrainConfig, log=lambda m: None)
    assert f.calls["neurons"] == f.calls["pairs"] == f.calls["train"] == 0 and f.calls["eval"] == 10
    assert f.calls["disc"] == 5  # discrimination hash includes the eval group (limit): reruns too
    f = Fakes()  # one method's loss setting changed: that method's train + eval only
    rc = _rc(tmp_path)
    rc.methods["yfpo"] = {"gamma": 2.0}
    run_pipeline(rc, runners=f.runners(), train_config_cls=FakeTrainConfig, log=lambda m: None)
    assert f.calls["train"] == 1 and f.calls["train:yfpo-s0"] == 1 and f.calls["eval"] == 2 and f.calls["pairs"] == 0
    f = Fakes()  # pairs changed: pairs, every train and eval rerun; neurons kept
    rc = _rc(tmp_path)
    rc.pairs["k"] = 3
    run_pipeline(rc, runners=f.runners(), train_config_cls=FakeTrainConfig, log=lambda m: None)
    assert f.calls["neurons"] == 0 and f.calls["pairs"] == 1 and f.calls["train"] == 4 and f.calls["eval"] == 8
    f = Fakes()  # a second seed: only the new seed's stages
    rc = _rc(tmp_path, seeds=[0, 1])
    rc.pairs["k"] = 3
    run_pipeline(rc, runners=f.runners(), train_config_cls=FakeTrainConfig, log=lambda m: None)
    assert f.calls["train"] == 4 and all(f.calls[f"train:{m}-s1"] == 1 for m in ("dpo", "yfpo", "dpo_fdt", "yfpo_fdt"))


def test_stage_hash_ignores_locations_but_not_settings():
    a = stage_hash("pairs", {"k": 2, "out_dir": "/a", "progress": True}, {"model": {"name": "m"}})
    assert a == stage_hash("pairs", {"k": 2, "out_dir": "/b", "progress": False}, {"model": {"name": "m"}})
    assert a != stage_hash("pairs", {"k": 3, "out_dir": "/a"}, {"model": {"name": "m"}})
    assert a != stage_hash("pairs", {"k": 2}, {"model": {"name": "other"}})


def test_run_config_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nseeds: [0, 1]\npairs: {k: 4}\neval: {benches: [gsm8k], limit: 30}\n"
                 "methods: {dpo: {gamma: 0}, yfpo: {gamma: 1.0}}\n")
    rc = load_run_config(p, ["--eval.limit", "10", "--pairs.k=2", "--methods.yfpo.gamma", "0.5"])
    assert rc.eval.limit == 10 and rc.seeds == [0, 1] and rc.pairs["k"] == "2" and rc.methods["yfpo"]["gamma"] == "0.5"
    from yfpo.config import ConfigError

    with pytest.raises(ConfigError, match="evals"):
        load_run_config(p, ["--evals.limit", "3"])


def test_shipped_configs_parse():
    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("quick.yaml", "paper.yaml"):
        rc = load_run_config(root / name)
        assert {"dpo", "yfpo", "dpo_fdt", "yfpo_fdt"} <= set(rc.methods)
        from yfpo.config import from_dict
        from yfpo.neurons.config import NeuronsConfig
        from yfpo.pairs.config import PairsConfig

        from_dict(NeuronsConfig, rc.neurons)
        from_dict(PairsConfig, rc.pairs)
        from yfpo.train.config import TrainConfig  # (every shipped config is validated in test_configs_valid.py)

        for m, over in rc.methods.items():
            from_dict(TrainConfig, {**rc.train, **over})


@pytest.mark.slow
def test_real_pipeline_tiny_model_end_to_end_with_resume(tmp_path):
    """The real stages on a saved tiny model with tiny budgets; a kill before the second training reruns
    nothing finished."""
    from yfpo.models.tiny import save_tiny

    from yfpo.data.pairs import load_solution_pairs, write_pairs
    from yfpo.engine.prompts import format_user_message

    model_dir = save_tiny(tmp_path / "tiny")
    # a random tiny model never finishes a solution within a few tokens, so self-sampled pairs would be
    # empty: the run reads a pairs file (the pairs stage on a real model is tested in test_pairs_build)
    pairs_file = tmp_path / "pairs.jsonl"
    write_pairs(pairs_file, [{"prompt": format_user_message(o["question"]), "chosen": o["chosen"][:120],
                              "rejected": o["rejected"][:120]} for o in load_solution_pairs(limit=4)])
    p = tmp_path / "c.yaml"
    p.write_text(f"""
name: e2e
model: {model_dir}
out_root: {tmp_path / 'runs'}
neurons: {{n_math: 4, n_contrast: 4, k: 8, batch_size: 4, max_length: 48, progress: false}}
check: {{n_random: 1, n_math: 4, n_contrast: 4, n_eval: 0, max_length: 48, progress: false}}
pairs_file: {pairs_file}
train: {{lora: true, epochs: 1, batch_size: 2, max_length: 768}}
methods: {{dpo: {{gamma: 0.0}}, yfpo: {{gamma: 1.0}}}}
eval: {{benches: [gsm8k], limit: 3, max_new_tokens: 8, batch_size: 4, discrimination: 4}}
""")

    class Kill(Exception):
        pass

    def hook(name):
        if name == "train/yfpo-s0":
            raise Kill(name)

    with pytest.raises(Kill):
        run_pipeline(load_run_config(p), hook=hook, log=lambda m: None)
    run = tmp_path / "runs" / "e2e"
    before = _done_mtimes(run)
    assert len(before) >= 3  # neurons, check, train dpo
    started: list[str] = []
    report = run_pipeline(load_run_config(p), hook=started.append, log=lambda m: None)
    assert not any(s in ("neurons", "check", "train/dpo-s0") for s in started)
    assert "train/yfpo-s0" in started and report.exists()
    assert all(_done_mtimes(run)[k] == v for k, v in before.items())
    md = report.with_suffix(".md").read_text()
    assert "| DPO |" in md and "| YFPO |" in md and "base (untrained)" in md
