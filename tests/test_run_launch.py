"""`yfpo run` with `launch:` trains every method through `accelerate launch` (configs/accelerate/ddp.yaml, here 2 CPU
processes with gloo): DPO, YFPO and YFPO+FDT log the same losses (to 1e-5), neuron margins and calibration as the
same run in one process with the same global batch; the stage folders (hashes) are the same, so the cache does not
depend on how a training was launched. A bad `launch:` section is refused before any stage runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_run_pipeline import run_pipeline
from test_train_common import pair_rows, write_jsonl, write_neuronset

from yfpo.models.tiny import save_tiny, tiny_model
from yfpo.pipeline import load_run_config
from yfpo.pipeline.launch import check_launch

ROOT = Path(__file__).resolve().parents[1]
DDP = ROOT / "configs" / "accelerate" / "ddp.yaml"


def _rc(tmp_path: Path, out: str, launch: dict | None):
    model_dir = save_tiny(tmp_path / "tiny", family="llama", seed=0)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    return load_run_config(
        None,
        {
            "name": "launch",
            "model": str(model_dir),
            "out_root": str(tmp_path / out),
            "dtype": "float32",
            "device": "cpu",
            "pairs_file": str(pairs),
            "neurons": {"n_math": 2, "n_contrast": 2},
            "train": {
                "lora": False,
                "batch_size": 2,  # the global batch: 1 pair per process on 2 processes
                "max_steps": 2,
                "lr": 1.0e-2,
                "lr_scheduler": "constant",
                "warmup_ratio": 0.0,
                "max_length": 96,
                "save_steps": 100,
            },
            "methods": {
                "dpo": {"gamma": 0.0},
                "yfpo": {"gamma": 0.5},
                "yfpo_fdt": {"gamma": 0.5, "fdt": True},
            },
            "eval": {"benches": ["gsm8k"], "limit": 1, "discrimination": 0, "base": False},
            "launch": launch,
            "report": False,
        },
    )


class _Fakes:
    """The stages around training, in-process and cheap: the neurons (a hand-made set for the tiny model) and eval."""

    def __init__(self, model):
        self.model = model

    def neurons(self, cfg) -> Path:
        write_neuronset(Path(cfg.out), self.model)
        return Path(cfg.out)

    def evals(self, model_path, jobs, **kw):
        return [{"n": 1, "primary": "flexible", "accuracy": {"flexible": {"acc": 0.0}}, "time_s": 1.0} for _ in jobs]


def _trainings(run: Path) -> dict[str, tuple[list[dict], dict, dict]]:
    idx = json.loads((run / "run.json").read_text())
    out = {}
    for s in idx["stages"]:
        if s["kind"] == "train":
            d = run / s["dir"]
            rows = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
            cal = json.loads((d / "calibration.json").read_text()) if (d / "calibration.json").exists() else {}
            out[s["name"]] = ([r for r in rows if "loss" in r], cal, s)
    return out


@pytest.mark.slow
def test_run_with_two_launched_processes_matches_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    model, _ = tiny_model("llama", seed=0)
    fakes = _Fakes(model)
    runners = {"neurons": fakes.neurons, "evals": fakes.evals}
    run_pipeline(_rc(tmp_path, "one", None), runners=runners, log=lambda m: None)
    run_pipeline(
        _rc(tmp_path, "two", {"config_file": str(DDP), "num_processes": 2}), runners=runners, log=lambda m: None
    )
    one, two = _trainings(tmp_path / "one" / "launch"), _trainings(tmp_path / "two" / "launch")
    assert set(one) == set(two) == {"train/dpo-s0", "train/yfpo-s0", "train/yfpo_fdt-s0"}
    for name in one:
        (r1, c1, s1), (r2, c2, s2) = one[name], two[name]
        assert s1["dir"] == s2["dir"]  # same stage hash: the launch is not part of what the stage computes
        log = (tmp_path / "two" / "launch" / s2["dir"] / "launch.log").read_text()
        assert log.count("run directory:") == 2, log[-2000:]  # really two processes
        assert [r["step"] for r in r1] == [r["step"] for r in r2] == [1, 2]
        for a, b in zip(r1, r2):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5), name
            if "neuron/margin" in a:
                assert b["neuron/margin"] == pytest.approx(a["neuron/margin"], abs=1e-5), name
        assert r1[1]["loss"] != r1[0]["loss"]  # the first step changed the model (step 2's loss checks its update:
        # for yfpo_fdt the FDT head gradient, synchronised across the processes)
        if c1:
            assert c2["processes"] == 2 and c1["processes"] == 1
            assert c2["std"] == pytest.approx(c1["std"], rel=1e-6)


def test_bad_launch_sections_are_refused(tmp_path):
    check_launch(None)
    check_launch({"config_file": str(DDP), "num_processes": 2})
    with pytest.raises(ValueError, match="launch: unknown key"):
        check_launch({"config_file": str(DDP), "num_processes": 2, "gpus": 2})
    with pytest.raises(ValueError, match="launch.num_processes: expected an integer >= 1"):
        check_launch({"config_file": str(DDP), "num_processes": 0})
    with pytest.raises(ValueError, match="launch.config_file: .* is not a file"):
        check_launch({"config_file": str(tmp_path / "nope.yaml"), "num_processes": 2})
