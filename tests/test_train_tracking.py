"""report_to: TensorBoard event files (read back with TensorBoard's own reader) hold the DPO and neuron metrics;
wandb runs offline when installed; TRL options once hard-coded by yfpo can be set in both trainers' configs."""

from __future__ import annotations

import importlib.util
import os

import pytest
from test_train_common import pair_rows, write_jsonl, write_neuronset

from yfpo.cli import main
from yfpo.config import from_dict
from yfpo.models.tiny import save_tiny, tiny_model
from yfpo.train.config import TrainConfig
from yfpo.utils import read_jsonl_resume


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("track")
    model_dir = save_tiny(d / "tiny", family="llama", seed=0)
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(d / "n.json", model)
    pairs = write_jsonl(d / "pairs.jsonl", pair_rows(4))
    common = ["--model", str(model_dir), "--pairs", str(pairs), "--lora_r", "4", "--batch_size", "2"]
    common += ["--max_steps", "2", "--max_length", "96", "--device", "cpu", "--save_steps", "1"]
    return d, common


def test_tensorboard_event_files_hold_the_neuron_and_dpo_metrics(setup, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d, common = setup
    out = d / "tb"
    args = ["train", *common, "--out", str(out), "--gamma", "0.5", "--neurons", str(d / "n.json")]
    rc = main([*args, "--report_to", "tensorboard", "--disable_tqdm", "true"])
    assert rc == 0, capsys.readouterr().err
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, sorted(p.name for p in out.rglob("*"))
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "train/neuron/logit_share",
        "train/neuron/margin",
        "train/neuron/gamma_eff",
        "train/rewards/accuracies",
        "train/rewards/margins",
        "train/logps/chosen",
        "train/loss",
    ):
        assert tag in tags, (tag, sorted(tags))
    logged = [r for r in read_jsonl_resume(out / "metrics.jsonl") if "loss" in r]  # the same rows as metrics.jsonl
    for tag in ("neuron/logit_share", "neuron/margin", "rewards/margins"):
        got = [(e.step, e.value) for e in acc.Scalars(f"train/{tag}")]
        assert [s for s, _ in got] == [1, 2]
        assert [v for _, v in got] == pytest.approx([r[tag] for r in logged], rel=1e-5, abs=1e-7)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (an optional tracker)")
def test_wandb_runs_offline_into_the_run_dir(setup, capsys, monkeypatch):
    d, common = setup
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    out = d / "wb"
    assert main(["train", *common, "--out", str(out), "--report_to", "wandb"]) == 0, capsys.readouterr().err
    assert list((out / "wandb").glob("offline-run-*")), sorted(p.name for p in out.iterdir())
    os.environ.pop("WANDB_DIR", None)


@pytest.mark.parametrize(
    "key, value", [("save_strategy", "no"), ("disable_tqdm", True), ("save_only_model", True), ("report_to", "none")]
)
def test_options_yfpo_once_hard_coded_can_be_set(key, value):
    cfg = from_dict(TrainConfig, {key: value})
    got = getattr(cfg, key)
    assert (getattr(got, "value", got) == value) or (key == "report_to" and got == [])


def test_a_tracker_that_is_not_installed_is_one_line():
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    absent = next(
        t for t in ("wandb", "mlflow", "comet_ml", "neptune") if t not in get_available_reporting_integrations()
    )
    with pytest.raises(
        ValueError, match=f"report_to {absent}: its package is not installed \\(pip install {absent}\\)"
    ):
        from_dict(TrainConfig, {"report_to": absent}).validate()
