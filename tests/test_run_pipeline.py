"""`yfpo run` orchestration: planning and validation before any work, hashing, caching, resume after a kill,
rerun only what changed, control neuron sets and gamma sweeps (fake stage functions, real configs), and the
real pipeline end to end on a tiny model."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

import yfpo.pipeline
import yfpo.pipeline.stages.check as st_check
import yfpo.pipeline.stages.evaluate as st_eval
import yfpo.pipeline.stages.neurons as st_neurons
import yfpo.pipeline.stages.pairs as st_pairs
import yfpo.pipeline.stages.reference as st_ref
import yfpo.pipeline.stages.train as st_train
from yfpo.neurons.find import work_dir_for
from yfpo.neurons.neuronset import NeuronSet
from yfpo.pipeline import EvalSection, RunConfig, load_run_config, stage_hash


def _one_by_one(run_eval):
    """A run_evals stand-in made of a one-benchmark runner (run_eval's signature)."""

    def run(model_path, jobs, **kw):
        return [run_eval(model_path, j["bench"], **kw, **{k: v for k, v in j.items() if k != "bench"}) for j in jobs]

    return run


# stage kind -> (stage module, the library function it calls, fake runner -> stand-in with that function's signature)
STAGE_FUNCTIONS = {
    "neurons": (st_neurons, "find_neurons", lambda r: r),
    "control": (st_neurons, "derive_control", lambda r: lambda kind, source, out, seed: r(kind, source, out, seed)),
    "check": (st_check, "causal_check", lambda r: r),
    "pairs": (st_pairs, "build_pairs", lambda r: r),
    "reference": (st_ref, "compute_reference", lambda r: lambda cfg, neuron_sets, out: r(cfg, neuron_sets, out.parent)),
    "train": (st_train, "train", lambda r: r),
    "grpo": (st_train, "grpo", lambda r: r),
    "evals": (st_eval, "run_evals", lambda r: r),
    "eval": (st_eval, "run_evals", _one_by_one),
    "discrimination": (st_eval, "run_discrimination", lambda r: lambda model, tok, **kw: r(model, **kw)),
    "mmlu": (st_eval, "run_mmlu", lambda r: lambda model, tok, **kw: r(model, **kw)),
}
_ACTIVE: dict[int, dict] = {}  # thread -> its fake runners by stage kind (two pipelines may run in two threads)
_ORIGINALS: dict[tuple, object] = {}
_PATCH_LOCK = threading.Lock()


def _dispatch(module, attr):
    def call(*a, **kw):
        runners = _ACTIVE.get(threading.get_ident(), {})
        for kind, (m, name, adapt) in STAGE_FUNCTIONS.items():
            if m is module and name == attr and kind in runners:
                return adapt(runners[kind])(*a, **kw)
        if attr == "load_model" and {"discrimination", "mmlu"} & set(runners):
            return a[0], None  # the fake discrimination / MMLU runners take the model path
        return _ORIGINALS[(module, attr)](*a, **kw)

    return call


@contextlib.contextmanager
def fake_stages(runners: dict):
    """The stage modules call `runners[kind]` (signatures as in Fakes) instead of the library functions, in this
    thread only (each thread may have its own); kinds not given run the real functions."""
    targets = {(m, a) for m, a, _ in STAGE_FUNCTIONS.values()} | {(st_eval, "load_model")}
    with _PATCH_LOCK:
        if not _ACTIVE:
            for m, a in targets:
                _ORIGINALS[(m, a)] = getattr(m, a)
                setattr(m, a, _dispatch(m, a))
        _ACTIVE[threading.get_ident()] = runners
    try:
        yield
    finally:
        with _PATCH_LOCK:
            del _ACTIVE[threading.get_ident()]
            if not _ACTIVE:
                for (m, a), f in _ORIGINALS.items():
                    setattr(m, a, f)


def run_pipeline(rc, *, runners: dict | None = None, **kw):
    """yfpo.pipeline.run_pipeline with the stage functions of `runners` faked (fake_stages)."""
    with fake_stages(runners or {}):
        return yfpo.pipeline.run_pipeline(rc, **kw)


METHODS = ("dpo", "yfpo", "yfpo_random", "dpo_fdt", "yfpo_fdt")  # the defaults


class Fakes:
    """Stage functions writing files in the documented schemas, counting their calls."""

    def __init__(self, kill_train: str | None = None):
        self.calls: Counter = Counter()
        self.kill_train = kill_train
        self.resumed: list[str] = []
        self.train_cfgs: dict[str, object] = {}

    def runners(self):
        return {
            "neurons": self.neurons,
            "pairs": self.pairs,
            "reference": self.reference,
            "train": self.train,
            "eval": self.eval,
            "discrimination": self.disc,
            "mmlu": self.mmlu,
        }

    def mmlu(self, model_path, *, per_subject, out_dir, **kw):
        """mmlu.json as yfpo.eval.mmlu writes it: 4 questions, the trained models right on one more."""
        self.calls["mmlu"] += 1
        k = 1 if model_path == "tiny-model" else 2
        res = {"protocol": {"per_subject": per_subject}, "items": {}}
        for part in ("non_math", "redux_ok"):
            items = [{"id": f"{part}/{i}", "subject": "s", "correct": i < k} for i in range(4)]
            res[part] = {"acc": k / 4, "n": 4, "n_correct": k, "lo": 0.0, "hi": 1.0}
            res["items"][part] = items
        (Path(out_dir) / "mmlu.json").write_text(json.dumps(res))
        return res

    def reference(self, cfg, neurons, out_dir):
        self.calls["reference"] += 1
        p = Path(out_dir) / "reference.json"
        p.write_text(json.dumps({"neurons": sorted(neurons)}))
        return p

    def neurons(self, cfg):
        self.calls["neurons"] += 1
        self.calls[f"neurons:{cfg.method}"] += 1
        NeuronSet(
            [0, 1],
            [1, 2],
            [0.3, 0.1],
            [0, 0],
            [1, 1],
            {"num_layers": 2, "intermediate_size": 8, "model": cfg.model, "method": cfg.method},
        ).save(cfg.out)
        wd = work_dir_for(cfg.out)  # the find run's grids, which the random control takes its statistics from
        wd.mkdir(exist_ok=True)
        torch.save({"act_mean_math": torch.zeros(2, 8), "act_std_math": torch.ones(2, 8)}, wd / "grids.pt")
        return Path(cfg.out)

    def pairs(self, cfg):
        self.calls["pairs"] += 1
        out = Path(cfg.out_dir)
        (out / "pairs.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
        (out / "summary.json").write_text(
            json.dumps(
                {
                    "questions": cfg.limit,
                    "samples": cfg.limit * cfg.k,
                    "sample_accuracy": 0.5,
                    "pairs": 1,
                    "pairs_by_source": {"self": 1},
                }
            )
        )
        return out / "pairs.jsonl"

    def train(self, cfg):
        tag = f"{Path(cfg.output_dir).name.rsplit('-', 1)[0]}"
        self.calls["train"] += 1
        self.calls[f"train:{tag}"] += 1
        self.train_cfgs[tag] = cfg
        out = Path(cfg.output_dir)
        ck = out / "checkpoint-1"
        if ck.exists():
            self.resumed.append(tag)
        ck.mkdir(exist_ok=True)
        if self.kill_train == tag:
            self.kill_train = None
            raise KeyboardInterrupt("killed mid-training")
        with open(out / "metrics.jsonl", "w") as f:
            for s in (1, 2):
                f.write(
                    json.dumps(
                        {
                            "step": s,
                            "loss": 0.7 - 0.1 * s,
                            "rewards/margins": 0.1 * s,
                            "neuron/margin": cfg.gamma * s,
                            "rewards/accuracies": 0.5,
                        }
                    )
                    + "\n"
                )
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
        s = {
            "bench": bench,
            "n": n,
            "primary": "flexible",
            "accuracy": {"flexible": {"acc": sum(corr) / n, "lo": 0, "hi": 1, "n_correct": sum(corr)}},
            "protocol": {"shots": 0},
        }
        (Path(out_dir) / "summary.json").write_text(json.dumps(s))
        return s

    def disc(self, model_path, *, limit, out_dir, **kw):
        self.calls["disc"] += 1
        d = {"n": limit, "accuracy": 0.55}
        (Path(out_dir) / "discrimination.json").write_text(json.dumps(d))
        return d


def _rc(tmp_path, **kw):
    rc = RunConfig(
        name="t",
        model="tiny-model",
        out_root=str(tmp_path / "runs"),
        pairs={"limit": 4, "k": 2},
        eval=EvalSection(benches=["gsm8k", "svamp"], limit=6, discrimination=10),
        **kw,
    )
    return rc


def _done_mtimes(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("done.json")}


def test_kill_mid_training_then_rerun_resumes_and_skips_finished(tmp_path):
    fakes = Fakes(kill_train="yfpo-s0")
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_rc(tmp_path), runners=fakes.runners(), log=logs.append)
    run = tmp_path / "runs" / "t"
    before = _done_mtimes(run)
    assert any(k.startswith("stages/neurons-") for k in before) and any(k.startswith("stages/pairs-") for k in before)
    assert any(k.startswith("train/dpo-s0-") and k.count("/") == 2 for k in before)
    assert not any(k.startswith("train/yfpo-s0-") and k.count("/") == 2 for k in before)
    idx = json.loads((run / "run.json").read_text())
    assert {s["name"]: s["status"] for s in idx["stages"]}["train/yfpo-s0"] == "running"

    again = Fakes()
    logs = []
    report = run_pipeline(_rc(tmp_path), runners=again.runners(), log=logs.append)
    assert report.name == "report.html" and report.exists()
    assert again.calls["neurons"] == 0 and again.calls["pairs"] == 0 and again.calls["train:dpo-s0"] == 0
    assert again.calls["train"] == 4 and again.resumed == ["yfpo-s0"]  # resumed in the same folder
    assert again.calls["eval"] == 6 * 2 and again.calls["disc"] == 6  # base + 5 methods
    after = _done_mtimes(run)
    assert all(after[k] == v for k, v in before.items())  # finished stages untouched
    assert any("resuming" in m and "train/yfpo-s0" in m for m in logs)

    third = Fakes()
    run_pipeline(_rc(tmp_path), runners=third.runners(), log=lambda m: None)
    assert sum(third.calls.values()) == 0
    md = (run / "report" / "report.md").read_text()
    assert "YFPO vs DPO on gsm8k" in md and "not significant" in md


def test_changes_rerun_only_dependent_stages(tmp_path):
    run_pipeline(_rc(tmp_path), runners=Fakes().runners(), log=lambda m: None)
    f = Fakes()  # eval setting changed: only eval reruns
    rc = _rc(tmp_path)
    rc.eval.limit = 4
    run_pipeline(rc, runners=f.runners(), log=lambda m: None)
    assert f.calls["neurons"] == f.calls["pairs"] == f.calls["train"] == 0 and f.calls["eval"] == 12
    assert f.calls["disc"] == 6  # discrimination hash includes the eval group (limit): reruns too
    f = Fakes()  # one method's loss setting changed: that method's train + eval only
    rc = _rc(tmp_path)
    rc.methods["yfpo"] = {"gamma": 2.0}
    run_pipeline(rc, runners=f.runners(), log=lambda m: None)
    assert f.calls["train"] == 1 and f.calls["train:yfpo-s0"] == 1 and f.calls["eval"] == 2 and f.calls["pairs"] == 0
    f = Fakes()  # pairs changed: pairs, every train and eval rerun; neurons kept
    rc = _rc(tmp_path)
    rc.pairs["k"] = 3
    run_pipeline(rc, runners=f.runners(), log=lambda m: None)
    assert f.calls["neurons"] == 0 and f.calls["pairs"] == 1 and f.calls["train"] == 5 and f.calls["eval"] == 10
    f = Fakes()  # a second seed: only the new seed's stages
    rc = _rc(tmp_path, seeds=[0, 1])
    rc.pairs["k"] = 3
    run_pipeline(rc, runners=f.runners(), log=lambda m: None)
    assert f.calls["train"] == 5 and all(f.calls[f"train:{m}-s1"] == 1 for m in METHODS)


def test_stage_hash_ignores_locations_but_not_settings():
    a = stage_hash("pairs", {"k": 2, "out_dir": "/a", "progress": True}, {"model": {"name": "m"}})
    assert a == stage_hash("pairs", {"k": 2, "out_dir": "/b", "progress": False}, {"model": {"name": "m"}})
    assert a != stage_hash("pairs", {"k": 3, "out_dir": "/a"}, {"model": {"name": "m"}})
    assert a != stage_hash("pairs", {"k": 2}, {"model": {"name": "other"}})


def test_run_config_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "name: x\nseeds: [0, 1]\npairs: {k: 4}\neval: {benches: [gsm8k], limit: 30}\n"
        "methods: {dpo: {gamma: 0}, yfpo: {gamma: 1.0}}\n"
    )
    rc = load_run_config(p, ["--eval.limit", "10", "--pairs.k=2", "--methods.yfpo.gamma", "0.5"])
    assert rc.eval.limit == 10 and rc.seeds == [0, 1] and rc.pairs["k"] == "2" and rc.methods["yfpo"]["gamma"] == "0.5"
    from yfpo.config import ConfigError

    with pytest.raises(ConfigError, match="evals"):
        load_run_config(p, ["--evals.limit", "3"])


def test_every_shipped_config_validates():
    """Every stage config of every shipped run config is built and validated (nothing runs)."""
    from yfpo.pipeline import make_plan

    root = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert {"quick.yaml", "cpu_result.yaml", "paper.yaml"} <= set(names)
    for name in names:
        plan = make_plan(load_run_config(root / name))
        if all(k.get("trainer") == "grpo" for k in plan.methods.values()):  # GRPO-only configs
            assert "grpo" in plan.methods, name  # the plain method every neuron-aware one is compared with
            if name == "grpo_cpu.yaml":  # GRPO with both forms of the neuron signal
                assert {"grpo_nreward", "grpo_nloss"} <= set(plan.methods), name
                assert all(t.neurons for m, t in plan.train.items() if m[0] != "grpo"), name
            uses_neurons = lambda t: (
                t.neuron_reward_weight
                or t.neuron_loss_weight
                or t.oreal_token_weights == "neuron"
                or (t.intrinsic == "merci" and t.merci_features == "neurons")
            )
            assert all(t.neurons for t in plan.train.values() if uses_neurons(t)), name
            assert any(uses_neurons(t) for t in plan.train.values()), name
            continue
        assert {"dpo", "yfpo", "yfpo_random"} <= set(plan.methods), name
        assert plan.methods["yfpo_random"]["neurons"] == "random" and plan.methods["yfpo"]["neurons"] == "attnlrp"
        assert all(t.neuron_norm == "ref_std" for t in plan.train.values() if hasattr(t, "neuron_norm")), name


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(f"name: t\nmodel: tiny-model\nout_root: {tmp_path / 'runs'}\n" + text)
    return p


@pytest.mark.parametrize(
    "bad, match",
    [
        ("methods: {dpo: {gamma: 0}, yfpo: {gamam: 2}}", "methods.yfpo/train.gamam"),
        ("methods: {dpo: {gamma: 0}, dpo_fdt: {fdt: true}}", "fdt: true with lora: true"),
        ("methods: {dpo: {gamma: 0}, y: {neurons: randon, gamma: 1}}", "methods.y.neurons"),
        ("methods: {y: {gammas: [1, x]}}", "gammas"),
        ("methods: {y: {gamma: 1, gammas: [1, 2]}}", "both gamma and gammas"),
        ("eval: {benches: [gsm8k, gsm9k]}", "unknown benchmark 'gsm9k'"),
        ("pairs_file: /nonexistent/pairs.jsonl", "pairs_file"),
        ("model: /nonexistent/model", "model folder"),
        ("neurons: {methdo: attnlrp}", "neurons.methdo"),
        ("neurons: {contrast_sources: 'dolly,wiki'}", "unknown source 'wiki'"),
        ("neurons: {method: random}", "not a selection"),
        ("check: {n_randon: 2}", "check.n_randon"),
        ("pairs: {kk: 2}", "pairs.kk"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, bad, match):
    """A typo or an invalid setting anywhere fails while planning: no stage runs, no run folder is made. (How long
    that takes is measured by benchmarks, not here: benchmarks/RESULTS.md, the typo check.)"""
    f = Fakes()
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        run_pipeline(load_run_config(_write(tmp_path, bad)), runners=f.runners(), log=lambda m: None)
    assert sum(f.calls.values()) == 0 and not (tmp_path / "runs").exists()


def test_missing_benchmark_data_fails_before_any_work(tmp_path, monkeypatch):
    import yfpo.data.problems as problems

    monkeypatch.setattr(problems, "candidate_data_dirs", lambda data_dir=None: [tmp_path / "nodata"])
    f = Fakes()
    with pytest.raises(FileNotFoundError, match="benchmark 'gsm8k_train' has no data file.*nodata"):
        run_pipeline(load_run_config(_write(tmp_path, "")), runners=f.runners(), log=lambda m: None)
    assert sum(f.calls.values()) == 0 and not (tmp_path / "runs").exists()


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    from yfpo.cli import main

    p = _write(tmp_path, "methods: {dpo: {gamma: 0}, yfpo: {gamam: 2}}")
    assert main(["run", str(p)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gamam" in err and "Traceback" not in err
    assert (
        main(["run", str(_write(tmp_path, "methods: {dpo: {gamma: 0}, yfpo: {gammas: [0.5, 2]}}")), "--check-only"])
        == 0
    )
    out = capsys.readouterr().out
    assert "yfpo_g0.5: gamma 0.5, neurons attnlrp" in out and "valid" in out
    p = _write(tmp_path, "methods: {dpo: {gamma: 0}, yfpo: {gamma: 1}}")
    assert (
        main(
            [
                "run",
                str(p),
                "--check-only",
                "--methods.yfpo.gamma",
                "2",
                "--train.gamma",
                "0.25",
                "--methods.dpo.gamma=0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "yfpo: gamma 2.0, neurons attnlrp" in out and "dpo: gamma 0.0," in out
    assert not (tmp_path / "runs").exists()


def test_failing_stage_is_one_line_naming_its_folder(tmp_path):
    from yfpo.pipeline import StageFailed

    f = Fakes()

    def broken_train(cfg):
        raise RuntimeError("CUDA out of memory\n(long details)")

    runners = {**f.runners(), "train": broken_train}
    with pytest.raises(StageFailed) as e:
        run_pipeline(_rc(tmp_path), runners=runners, log=lambda m: None)
    msg = str(e.value)
    assert "\n" not in msg and "stage train/dpo-s0 failed in" in msg and "CUDA out of memory" in msg
    assert str(tmp_path / "runs" / "t" / "train" / "dpo-s0-") in msg and "rerun" in msg
    idx = json.loads((tmp_path / "runs" / "t" / "run.json").read_text())
    assert {s["name"]: s["status"] for s in idx["stages"]}["train/dpo-s0"] == "failed"


def test_a_models_benchmarks_run_in_one_call_and_each_keeps_its_own_stage(tmp_path):
    """The pending benchmarks of a model go to one `evals` call (one generation pass); each still has its own
    folder and done.json, so a rerun redoes only the one whose record is missing, and a failing pass names
    every benchmark it held."""
    from yfpo.pipeline import StageFailed

    f = Fakes()
    calls: list[tuple[str, list[str]]] = []

    def evals(model_path, jobs, **kw):
        calls.append((Path(model_path).name, [j["bench"] for j in jobs]))
        return [f.eval(model_path, j["bench"], out_dir=j["out_dir"], **kw) for j in jobs]

    runners = {**f.runners(), "evals": evals}
    run_pipeline(_rc(tmp_path), runners=runners, log=lambda m: None)
    assert len(calls) == 6 and all(b == ["gsm8k", "svamp"] for _, b in calls)
    run = tmp_path / "runs" / "t"
    done = sorted(run.glob("eval/*/*/done.json"))
    assert len(done) == 6 * 3  # 2 benchmarks + discrimination per model
    recs = [json.loads(d.read_text()) for d in done if d.parent.name in ("gsm8k", "svamp")]
    assert all(r["time_s"] >= 0 and r["outputs"]["n"] == 6 for r in recs)
    svamp = next(run.glob("eval/base-*/svamp/done.json"))
    svamp.unlink()
    calls.clear()
    run_pipeline(_rc(tmp_path), runners=runners, log=lambda m: None)
    assert calls == [("tiny-model", ["svamp"])] and svamp.exists()

    def broken(model_path, jobs, **kw):
        raise RuntimeError("out of memory\n(details)")

    with pytest.raises(StageFailed) as e:
        run_pipeline(_rc(tmp_path / "b"), runners={**f.runners(), "evals": broken}, log=lambda m: None)
    msg = str(e.value)
    assert "\n" not in msg and "stage eval/base/gsm8k + eval/base/svamp failed in" in msg
    assert "(gsm8k, svamp)" in msg and "out of memory" in msg


def test_neuron_controls_and_gamma_sweep(tmp_path):
    """`neurons:` picks each method's NeuronSet (built as cached stages); `gammas:` expands into a sweep; the
    recorded run config names every method's neurons and gamma."""
    methods = {
        "dpo": {"gamma": 0.0},
        "yfpo": {"gammas": [0.5, 2]},
        "yfpo_random": {"gamma": 1.0, "neurons": "random"},
        "yfpo_flipped": {"gamma": 1.0, "neurons": "flipped"},
        "yfpo_lape": {"gamma": 1.0, "neurons": "lape"},
    }
    f = Fakes()
    run_pipeline(
        _rc(tmp_path, seeds=[0, 1], methods=json.loads(json.dumps(methods))), runners=f.runners(), log=lambda m: None
    )
    run = tmp_path / "runs" / "t"
    assert f.calls["neurons:attnlrp"] == 1 and f.calls["neurons:lape"] == 1  # the lape selection: its own stage
    names = {"dpo", "yfpo_g0.5", "yfpo_g2", "yfpo_random", "yfpo_flipped", "yfpo_lape"}
    assert {t.rsplit("-s", 1)[0] for t in f.train_cfgs} == names and f.calls["train"] == 12
    cfg = {t: c for t, c in f.train_cfgs.items()}
    assert cfg["yfpo_g0.5-s0"].gamma == 0.5 and cfg["yfpo_g2-s1"].gamma == 2.0
    own = NeuronSet.load(cfg["yfpo_g2-s0"].neurons)
    assert cfg["dpo-s0"].neurons == cfg["yfpo_g2-s0"].neurons
    r0, r1 = NeuronSet.load(cfg["yfpo_random-s0"].neurons), NeuronSet.load(cfg["yfpo_random-s1"].neurons)
    assert r0.per_layer_counts() == r1.per_layer_counts() == own.per_layer_counts()
    assert r0.provenance["control"]["seed"] == 0 and r1.provenance["control"]["seed"] == 1
    assert torch.equal(NeuronSet.load(cfg["yfpo_flipped-s0"].neurons).signs, -own.signs)
    assert NeuronSet.load(cfg["yfpo_lape-s0"].neurons).provenance["method"] == "lape"
    import yaml

    for recorded in (
        yaml.safe_load((run / "config.yaml").read_text())["methods"],
        json.loads((run / "run.json").read_text())["config"]["methods"],
    ):
        assert set(recorded) == names
        assert recorded["yfpo_g0.5"] == {"gamma": 0.5, "neurons": "attnlrp"}
        assert recorded["yfpo_random"]["neurons"] == "random" and recorded["dpo"]["neurons"] == "attnlrp"
    stages = {s["name"]: s for s in json.loads((run / "run.json").read_text())["stages"]}
    assert {"neurons", "neurons/lape", "neurons/flipped", "neurons/random-s0", "neurons/random-s1"} <= set(stages)
    assert stages["train/yfpo_random-s1"]["neurons"] == "random" and stages["train/yfpo_g2-s0"]["gamma"] == 2.0
    assert [s["name"] for s in stages.values() if s["kind"] == "neurons"] == ["neurons"]  # the report's own set
    assert (
        stages["neurons/lape"]["kind"] == "neurons_selection" and stages["neurons/flipped"]["kind"] == "neurons_control"
    )
    again = Fakes()  # all cached, including the control sets
    run_pipeline(
        _rc(tmp_path, seeds=[0, 1], methods=json.loads(json.dumps(methods))),
        runners=again.runners(),
        log=lambda m: None,
    )
    assert sum(again.calls.values()) == 0


def test_no_hash_names_only_real_fields():
    from yfpo.neurons.config import CheckConfig, NeuronsConfig
    from yfpo.pairs.config import PairsConfig
    from yfpo.pipeline.node import NO_HASH as _NO_HASH
    from yfpo.train.config import TrainConfig

    def _fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    classes = {
        "neurons": NeuronsConfig,
        "neurons_selection": NeuronsConfig,
        "check": CheckConfig,
        "pairs": PairsConfig,
        "train": TrainConfig,
    }
    assert set(_NO_HASH) == set(classes)
    for kind, names in _NO_HASH.items():
        extra = names - _fields(classes[kind]) - ({"ref_logps"} if kind == "train" else set())
        assert not extra, (kind, extra)


def tiny_model_and_pairs(tmp_path, n_pairs: int = 4) -> tuple[Path, Path]:
    """A saved tiny model and a pairs file for real-stage runs: a random tiny model never finishes a solution
    within a few tokens, so self-sampled pairs would be empty (the pairs stage on a real model is tested in
    test_pairs_build)."""
    from yfpo.data.pairs import load_solution_pairs, write_pairs
    from yfpo.engine.prompts import format_user_message
    from yfpo.models.tiny import save_tiny

    model_dir = save_tiny(tmp_path / "tiny")
    pairs_file = tmp_path / "pairs.jsonl"
    write_pairs(
        pairs_file,
        [
            {"prompt": format_user_message(o["question"]), "chosen": o["chosen"][:120], "rejected": o["rejected"][:120]}
            for o in load_solution_pairs(limit=n_pairs)
        ],
    )
    return model_dir, pairs_file


@pytest.mark.slow
def test_real_pipeline_tiny_model_end_to_end_with_resume(tmp_path):
    """The real stages on a saved tiny model with tiny budgets; a kill before the second training reruns
    nothing finished."""
    model_dir, pairs_file = tiny_model_and_pairs(tmp_path)
    p = tmp_path / "c.yaml"
    p.write_text(f"""
name: e2e
model: {model_dir}
out_root: {tmp_path / "runs"}
neurons: {{n_math: 4, n_contrast: 4, k: 8, batch_size: 4, max_length: 48, progress: false}}
check: {{n_random: 1, n_math: 4, n_contrast: 4, n_eval: 0, max_length: 48, progress: false}}
pairs_file: {pairs_file}
train: {{lora: true, epochs: 1, batch_size: 2, max_length: 768}}
methods: {{dpo: {{gamma: 0.0}}, yfpo: {{gamma: 1.0}}, yfpo_random: {{gamma: 1.0, neurons: random}}}}
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
    assert "train/yfpo-s0" in started and "train/yfpo_random-s0" in started and report.exists()
    idx = json.loads((run / "run.json").read_text())
    ctrl = next(s for s in idx["stages"] if s["name"] == "neurons/random-s0")
    own = NeuronSet.load(run / next(s for s in idx["stages"] if s["name"] == "neurons")["dir"] / "neurons.json")
    rnd = NeuronSet.load(run / ctrl["dir"] / "neurons.json")
    assert rnd.per_layer_counts() == own.per_layer_counts() and rnd.provenance["control"]["kind"] == "random"
    assert all(_done_mtimes(run)[k] == v for k, v in before.items())
    md = report.with_suffix(".md").read_text()
    assert "| DPO |" in md and "| YFPO |" in md and "base (untrained)" in md


def test_reference_stage_once_for_every_method_and_seed(tmp_path, monkeypatch):
    """With a trainer that takes precomputed reference log-probs (TrainConfig.ref_logps), the run computes them
    once per tokenization setting and hands the same file to every method and seed."""
    f = Fakes()
    refs = []

    def reference(cfg, neurons, out_dir):
        refs.append((cfg.max_length, sorted(neurons)))
        p = Path(out_dir) / "reference.pt"
        p.write_text("ref")
        return p

    methods = {
        "dpo": {"gamma": 0.0},
        "yfpo": {"gamma": 1.0},
        "yfpo_random": {"gamma": 1.0, "neurons": "random"},
        "yfpo_long": {"gamma": 1.0, "max_length": 512},
    }
    rc = _rc(tmp_path, seeds=[0, 1], methods=methods)
    run_pipeline(rc, runners={**f.runners(), "reference": reference}, log=lambda m: None)
    assert sorted(refs) == [(384, ["attnlrp", "random-s0", "random-s1"]), (512, ["attnlrp"])]
    paths = {t: c.ref_logps for t, c in f.train_cfgs.items()}
    assert len({paths[t] for t in paths if not t.startswith("yfpo_long")}) == 1
    assert paths["yfpo_long-s0"] == paths["yfpo_long-s1"] != paths["dpo-s0"]
    refs.clear()
    again = Fakes()
    run_pipeline(
        _rc(tmp_path, seeds=[0, 1], methods=methods),
        runners={**again.runners(), "reference": reference},
        log=lambda m: None,
    )
    assert refs == [] and sum(again.calls.values()) == 0


def test_eval_sampling_and_task_specs_flow_to_eval_and_report(tmp_path):
    """eval.samples/temperature/protocol and eval.tasks reach the eval stage; the report shows the sampled and
    per-group tables; at their defaults the new keys leave the stage hashes as before (old runs stay cached)."""
    data = tmp_path / "plus.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "2", "perturbation_type": "digit"}) + "\n")
    spec = tmp_path / "plus.yaml"
    spec.write_text(f"file: {data}\nname: plus_mini\nquestion_field: question\ngroup_field: perturbation_type\n")
    seen: list[dict] = []

    class F(Fakes):
        def eval(self, model_path, bench, **kw):
            seen.append({"bench": bench, **kw})
            s = super().eval(model_path, bench, **kw)
            ci = {"acc": 0.5, "mean": 0.5, "lo": 0.1, "hi": 0.9, "n": kw["limit"]}
            s["sampled"] = {
                "ks": [1, 4],
                "n_samples": 4,
                "by_extractor": {"flexible": {"avg": ci, "pass": {"1": ci, "4": ci}, "maj": {"1": ci, "4": ci}}},
            }
            if "spec" in kw:
                s["by_group"] = {"digit": {"flexible": ci}}
            (Path(kw["out_dir"]) / "summary.json").write_text(json.dumps(s))
            return s

    rc = _rc(tmp_path)
    rc.methods = {"dpo": {"gamma": 0.0}}
    rc.eval.samples, rc.eval.temperature, rc.eval.protocol, rc.eval.tasks = 4, 0.7, "boxed-v1", [str(spec)]
    run_pipeline(rc, runners=F().runners(), log=lambda m: None)
    by = {(d["bench"], d["out_dir"].split("/eval/")[1].split("-")[0]) for d in seen}
    assert ("plus_mini", "base") in by and ("gsm8k", "dpo") in by
    task_calls = [d for d in seen if d["bench"] == "plus_mini"]
    assert all(d["spec"].group_field == "perturbation_type" for d in task_calls)
    assert all(d["samples"] == 4 and d["temperature"] == 0.7 and d["protocol"] == "boxed-v1" for d in seen)
    md = (tmp_path / "runs" / "t" / "report" / "report.md").read_text()
    assert "### Sampled metrics" in md and "maj@4 %" in md and "### Accuracy per group" in md and "digit" in md

    from yfpo.config import to_dict
    from yfpo.pipeline.config import _EVAL_KEY_DEFAULTS

    assert set(_EVAL_KEY_DEFAULTS) <= set(to_dict(EvalSection()))  # every new key, at its default...
    plain = Fakes()
    run_pipeline(_rc(tmp_path / "b"), runners=plain.runners(), log=lambda m: None)
    dirs = {s["dir"] for s in json.loads((tmp_path / "b" / "runs" / "t" / "run.json").read_text())["stages"]}
    # ...is left out of the hash: the folder is the one the code before these keys named (its formula, here)
    from yfpo.pipeline import model_identity
    from yfpo.utils import stable_hash

    ev = to_dict(_rc(tmp_path / "b").eval)
    old = {
        k: v
        for k, v in ev.items()
        if k not in ("benches", "base", "discrimination_batch_size", "mmlu", "mmlu_batch_size", *_EVAL_KEY_DEFAULTS)
    }  # (the mmlu keys came later still and are never in the group hash: MMLU is a unit of its own)
    group = stable_hash({"eval": old, "in": {"model": model_identity("tiny-model")}}, n=10)
    assert f"eval/base-{group}/gsm8k" in dirs


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("samples", 0, "eval.samples must be an integer >= 1"),
        ("samples", 4, "greedy samples are identical"),
        ("protocol", "nope-v9", "eval.protocol: unknown protocol 'nope-v9'"),
        ("tasks", ["/nonexistent/spec.yaml"], "eval.tasks: task spec /nonexistent/spec.yaml does not exist"),
    ],
)
def test_bad_eval_sampling_keys_fail_before_any_stage(tmp_path, key, value, msg):
    from yfpo.pipeline import make_plan

    rc = _rc(tmp_path)
    setattr(rc.eval, key, value)
    with pytest.raises(ValueError, match=msg):
        make_plan(rc)
    assert not (tmp_path / "runs").exists()


def test_grpo_methods_run_in_the_pipeline_and_the_report_compares_them(tmp_path):
    """`trainer: grpo` methods: GRPORunConfig from the grpo section + method keys, no pairs/reference stage
    when no DPO-family method needs them, reward curves and the neuron-vs-plain verdict in the report."""
    from yfpo.train.grpo_config import GRPORunConfig

    class F(Fakes):
        def runners(self):
            return {**super().runners(), "grpo": self.grpo}

        def grpo(self, cfg):
            assert isinstance(cfg, GRPORunConfig) and cfg.questions == "mawps_singleop" and cfg.num_generations == 2
            self.calls["grpo"] += 1
            self.train_cfgs[Path(cfg.output_dir).name] = cfg
            out = Path(cfg.output_dir)
            rows = [{"step": s, "loss": 0.1, "rewards/accuracy/mean": 0.1 * s, "step_time": 90.0} for s in (1, 2)]
            (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (out / "final").mkdir(exist_ok=True)
            return out

    rc = _rc(tmp_path)
    rc.grpo = {"questions": "mawps_singleop", "num_generations": 2, "batch_size": 2, "max_steps": 2}
    rc.methods = {"grpo": {"trainer": "grpo"}, "grpo_nr": {"trainer": "grpo", "neuron_reward_weight": 0.5}}
    f = F()
    run_pipeline(rc, runners=f.runners(), log=lambda m: None)
    assert f.calls["grpo"] == 2 and f.calls["train"] == 0 and f.calls["pairs"] == 0 and f.calls["reference"] == 0
    cfgs = {k.split("-s")[0]: c for k, c in f.train_cfgs.items()}
    assert cfgs["grpo_nr"].neuron_reward_weight == 0.5 and cfgs["grpo"].neuron_reward_weight == 0.0
    assert cfgs["grpo_nr"].neurons.endswith("neurons.json") and cfgs["grpo"].seed == 0
    md = (tmp_path / "runs" / "t" / "report" / "report.md").read_text()
    assert "grpo_nr" in md and " vs " in md and "rewards/accuracy/mean" in md and "step_time" in md
    assert "| grpo-s0 | 2 | 90.0 | 90.0-90.0 | 3.0 | 0.150 |" in md  # GRPO table: all steps, s/step, reward
    assert "No preference pairs: every method is GRPO" in md and "p = exact test against grpo on paired" in md
    from yfpo.report.verdicts import neuron_comparisons

    assert ("grpo_nr", "grpo") in neuron_comparisons(
        json.loads((tmp_path / "runs" / "t" / "run.json").read_text())["config"]["methods"]
    )


@pytest.mark.parametrize(
    "methods,msg",
    [
        ({"g": {"trainer": "grpo", "gamma": 1.0}}, "takes neuron_reward_weight / neuron_loss_weight, not gamma"),
        ({"g": {"trainer": "ppo"}}, "methods.g.trainer must be one of dpo, grpo"),
        ({"g": {"trainer": "grpo", "num_generations": 1}}, "methods.g \\(with the grpo section\\): num_generations"),
        ({"g": {"trainer": "grpo", "num_generatons": 4}}, "num_generatons"),
    ],
)
def test_bad_grpo_methods_fail_at_planning(tmp_path, methods, msg):
    from yfpo.pipeline import make_plan

    rc = _rc(tmp_path)
    rc.methods = methods
    with pytest.raises(ValueError, match=msg):
        make_plan(rc)


@pytest.mark.parametrize("skip,ok", [(0, False), (5, False), (6, True)])
def test_grpo_questions_must_not_overlap_the_eval_slice(tmp_path, skip, ok):
    """GRPO on an eval benchmark's questions: the first skip_questions must cover the eval.limit items."""
    from yfpo.pipeline import make_plan

    rc = _rc(tmp_path)  # eval: gsm8k and svamp, limit 6
    rc.grpo = {"questions": "svamp", "skip_questions": skip, "num_generations": 2, "batch_size": 2}
    rc.methods = {"g": {"trainer": "grpo"}}
    if ok:
        make_plan(rc)
    else:
        with pytest.raises(ValueError, match=r"methods.g \(trainer: grpo\) trains on svamp questions from #"):
            make_plan(rc)
    rc.grpo = {"questions": "mawps_singleop", "num_generations": 2, "batch_size": 2}  # not evaluated: fine
    make_plan(rc)


@pytest.mark.slow
def test_real_grpo_methods_in_a_run_tiny_model(tmp_path):
    """`trainer: grpo` through the real stages (TRL GRPOTrainer, both neuron forms) on a saved tiny model: every
    method trains 2 steps, is evaluated, and the report gives the neuron-vs-plain verdicts and reward columns."""
    from yfpo.models.tiny import save_tiny

    model_dir = save_tiny(tmp_path / "tiny")
    p = tmp_path / "g.yaml"
    p.write_text(f"""
name: g
model: {model_dir}
out_root: {tmp_path / "runs"}
neurons: {{n_math: 2, n_contrast: 2, k: 4, batch_size: 2, max_length: 32, progress: false}}
grpo: {{questions: mawps_singleop, skip_questions: 2, limit_questions: 4, num_generations: 2, batch_size: 2,
        max_new_tokens: 8, max_steps: 2, save_steps: 1}}
methods:
  grpo: {{trainer: grpo}}
  grpo_nr: {{trainer: grpo, neuron_reward_weight: 0.5}}
  grpo_nl: {{trainer: grpo, neuron_loss_weight: 0.5}}
eval: {{benches: [mawps_singleop], limit: 2, max_new_tokens: 8, discrimination: 0, base: true}}
""")
    report = run_pipeline(load_run_config(p), log=lambda m: None)
    run = tmp_path / "runs" / "g"
    done = {d.parent.name.split("-s0")[0]: json.loads(d.read_text()) for d in run.glob("train/*/train_done.json")}
    assert set(done) == {"grpo", "grpo_nr", "grpo_nl"} and all(d["steps"] == 2 for d in done.values())
    assert not list(run.glob("stages/pairs-*"))  # GRPO methods need no preference pairs
    md = report.with_suffix(".md").read_text()
    assert "grpo_nr vs grpo on mawps_singleop" in md and "grpo_nl vs grpo on mawps_singleop" in md
    assert "rewards/accuracy/mean" in md


def test_mmlu_retention_is_an_eval_unit_of_every_model_and_a_bench_in_the_report(tmp_path):
    """eval.mmlu: N runs MMLU retention once per model (cached like any unit), and the report shows its two parts
    as benches with paired tests; a bad value fails before any stage."""
    rc = _rc(tmp_path, methods={"dpo": {"gamma": 0}, "yfpo": {"gamma": 1}})
    rc.eval.mmlu = 2
    f = Fakes()
    report = run_pipeline(rc, runners=f.runners(), log=lambda m: None)
    assert f.calls["mmlu"] == 3  # base, dpo-s0, yfpo-s0
    md = report.with_suffix(".md").read_text()
    assert "mmlu_non_math (n=4)" in md and "mmlu_redux_ok (n=4)" in md
    assert "YFPO vs DPO on mmlu_non_math: 50.0% vs 50.0%" in md
    f2 = Fakes()
    run_pipeline(rc, runners=f2.runners(), log=lambda m: None)
    assert f2.calls["mmlu"] == 0  # cached
    rc.eval.mmlu = -1
    with pytest.raises(ValueError, match="eval.mmlu: expected questions per subject"):
        run_pipeline(rc, runners=Fakes().runners(), log=lambda m: None)
