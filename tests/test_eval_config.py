"""EvalConfig: one definition of an evaluation's settings, validated before any model loads (CLI, run_eval,
run_evals, the pipeline's plan)."""

from __future__ import annotations

import dataclasses

import pytest

import yfpo.eval.bench as bench_mod
import yfpo.models as models_mod
from yfpo.eval.config import EvalConfig, field_names


def _no_model(*a, **k):
    raise AssertionError("a model was loaded before the settings were checked")


@pytest.mark.parametrize(
    "changes, msg",
    [
        ({"benches": ["gsm8kk"]}, r"unknown benchmark 'gsm8kk' \(did you mean 'gsm8k'\?\)"),
        ({"benches": ["svmap"]}, r"did you mean 'svamp'"),
        ({"limit": 0}, r"limit must be an integer >= 1 \(or null for all items\), got 0"),
        ({"limit": "5"}, r"limit must be an integer >= 1"),
        ({"max_new_tokens": 0}, r"max_new_tokens must be an integer >= 1"),
        ({"shots": -1}, r"shots must be an integer >= 0"),
        ({"samples": 0}, r"samples must be an integer >= 1"),
        ({"samples": 4}, r"greedy samples are identical"),
        ({"top_p": 0.0, "temperature": 0.7}, r"top_p in \(0, 1\]"),
        ({"protocol": "nope-v9"}, r"protocol: unknown protocol 'nope-v9'"),
        ({"backend": "fastt"}, r"unknown backend 'fastt' \(did you mean 'fast'\?\)"),
        ({"dtype": "fp8"}, r"dtype: expected one of"),
        ({"shots_file": "/nonexistent/shots.jsonl"}, r"shots_file: /nonexistent/shots.jsonl does not exist"),
        ({"tasks": ["/nonexistent/spec.yaml"]}, r"tasks: task spec /nonexistent/spec.yaml does not exist"),
        ({"data_dir": "/nonexistent/data"}, r"data_dir: folder /nonexistent/data does not exist"),
    ],
)
def test_validate_one_line_per_mistake(changes, msg):
    with pytest.raises((ValueError, FileNotFoundError), match=msg) as e:
        EvalConfig(**changes).validate()
    assert "\n" not in str(e.value)


def test_validate_names_keys_as_the_caller_spells_them(tmp_path):
    with pytest.raises(ValueError, match=r"^--max-new-tokens must be"):
        EvalConfig(max_new_tokens=0).validate(prefix="--")
    with pytest.raises(ValueError, match=r"^eval\.max_new_tokens must be"):
        EvalConfig(max_new_tokens=0).validate(prefix="eval.")
    EvalConfig(benches=["gsm8k", "mmlu"]).validate(extra_benches=("mmlu",))  # a name the caller handles
    # a task spec whose data file is missing, and two specs with one name
    spec = tmp_path / "t.yaml"
    spec.write_text("file: missing.jsonl\n")
    with pytest.raises(FileNotFoundError, match=r"its file .*missing.jsonl does not exist"):
        EvalConfig(tasks=[str(spec)]).validate()
    (tmp_path / "gsm8k.jsonl").write_text('{"question": "q", "answer": "1"}\n')
    spec.write_text("file: gsm8k.jsonl\n")
    with pytest.raises(ValueError, match="gsm8k named twice"):
        EvalConfig(benches=["gsm8k"], tasks=[str(spec)]).validate()
    assert set(EvalConfig(tasks=[str(spec)]).task_specs()) == {"gsm8k"}


def test_missing_benchmark_data_is_refused(tmp_path, monkeypatch):
    import yfpo.data.problems as problems

    monkeypatch.setattr(problems, "candidate_data_dirs", lambda data_dir=None: [tmp_path / "nodata"])
    monkeypatch.delenv("YFPO_HUB", raising=False)
    with pytest.raises(FileNotFoundError, match=r"benchmark 'svamp' has no data file \(looked in .*nodata"):
        EvalConfig(benches=["svamp"]).validate()
    EvalConfig(benches=["svamp"]).validate(data=False)  # names only
    EvalConfig(benches=["gsm8k"], hub=True).validate()  # fetched from the Hub when asked for


def test_replace_refuses_unknown_settings():
    cfg = EvalConfig().replace(limit=3, temperature=0.5)
    assert (cfg.limit, cfg.temperature, cfg.sampled) == (3, 0.5, True)
    with pytest.raises(TypeError, match=r"unexpected setting 'max_new_token' \(did you mean 'max_new_tokens'\?\)"):
        EvalConfig().replace(max_new_token=3)


def test_run_eval_and_run_evals_check_before_loading(monkeypatch):
    """Bad settings and unknown benchmarks fail before the model named by a string is loaded."""
    monkeypatch.setattr(models_mod, "load_model", _no_model)
    with pytest.raises(ValueError, match="did you mean 'gsm8k'"):
        bench_mod.run_eval("some/model", "gsm8kk")
    with pytest.raises(ValueError, match="limit must be"):
        bench_mod.run_eval("some/model", "gsm8k", limit=0)
    with pytest.raises(ValueError, match="did you mean 'svamp'"):
        bench_mod.run_evals("some/model", [{"bench": "gsm8k", "out_dir": None}, {"bench": "svamb", "out_dir": None}])
    with pytest.raises(TypeError, match="unexpected setting 'nope'"):
        bench_mod.run_eval("some/model", "gsm8k", nope=1)
    # a config and keyword settings on top of it
    with pytest.raises(ValueError, match="greedy samples are identical"):
        bench_mod.run_eval("some/model", "gsm8k", config=EvalConfig(samples=4))


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--bench", "gsm8k,svmap"], "--bench: unknown benchmark 'svmap' (did you mean 'svamp'?)"),
        (["--limit", "0"], "--limit must be an integer >= 1"),
        (["--samples", "4"], "--samples is 4 at temperature 0"),
        (["--shots-file", "/nonexistent/s.jsonl"], "--shots-file: /nonexistent/s.jsonl does not exist"),
        (["--bench-file", "/nonexistent/b.jsonl"], "--bench-file: /nonexistent/b.jsonl does not exist"),
        (["--task", "/nonexistent/t.yaml"], "cannot read task spec"),
        (["--task-file", "/nonexistent/t.jsonl"], "benchmark file /nonexistent/t.jsonl does not exist"),
    ],
)
def test_eval_cli_refuses_before_the_model_loads(argv, msg, monkeypatch, capsys):
    """`yfpo eval` with a benchmark typo, a bad limit or a missing file: one line, exit 1, no model loaded."""
    from yfpo.cli import main

    monkeypatch.setattr(models_mod, "load_model", _no_model)
    assert main(["eval", "--model", "Qwen/Qwen2.5-0.5B-Instruct", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1, err


def test_pipeline_eval_section_is_an_eval_config():
    from yfpo.pipeline import EvalSection

    assert issubclass(EvalSection, EvalConfig)
    assert set(field_names(EvalConfig)) <= {f.name for f in dataclasses.fields(EvalSection)}
    assert EvalSection().limit == 50 and EvalSection().top_p == EvalConfig().top_p  # one definition of top_p


def test_pipeline_plan_validates_the_eval_section(tmp_path):
    from yfpo.pipeline import EvalSection, RunConfig, make_plan

    with pytest.raises(ValueError, match=r"eval\.dtype is set by the run"):
        make_plan(RunConfig(out_root=str(tmp_path), eval=EvalSection(dtype="bfloat16")))
    with pytest.raises(
        ValueError, match=r"run config: eval\.benches: unknown benchmark 'mawsp' \(did you mean 'mawps'\?\)"
    ):
        make_plan(RunConfig(out_root=str(tmp_path), eval=EvalSection(benches=["mawsp"])))
