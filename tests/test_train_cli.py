"""`yfpo train` on a tiny model writes the run directory; a bad override is a clear error; `plot-train` writes a PNG."""

from __future__ import annotations

import json

import pytest
from test_train_common import pair_rows, write_jsonl, write_neuronset

from yfpo.cli import main
from yfpo.models.tiny import save_tiny, tiny_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model_dir = save_tiny(d / "tiny", family="llama", seed=0)
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(d / "n.json", model)
    pairs = write_jsonl(d / "pairs.jsonl", pair_rows(4))
    cfg = d / "train.yaml"
    cfg.write_text(
        f"train:\n  model: {model_dir}\n  pairs: {pairs}\n  lora: true\n  lora_r: 4\n  batch_size: 2\n"
        f"  max_steps: 2\n  max_length: 96\n  device: cpu\n  save_steps: 1\n"
    )
    return d, cfg


def test_cli_train_writes_run_dir_and_plot(setup, capsys):
    from yfpo.models import load_model

    d, cfg = setup
    out = d / "run"
    rc = main(["train", str(cfg), "--out", str(out), "--gamma", "0.5", "--neurons", str(d / "n.json")])
    assert rc == 0, capsys.readouterr().err
    for name in (
        "config.yaml",
        "versions.json",
        "metrics.jsonl",
        "train_done.json",
        "config.hash.json",
        "final/adapter_config.json",  # a LoRA run keeps its adapter (merge_final: false, the default)
    ):
        assert (out / name).exists(), name
    assert not (out / "final" / "config.json").exists()
    assert not (out / "checkpoints").exists()  # pruned once the run finished (keep_checkpoints: false)
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["gamma"] == 0.5 and saved["fdt"] is False and saved["lora_r"] == 4
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for k in (
        "neuron/chosen",
        "neuron/rejected",
        "neuron/margin",
        "neuron/accuracy",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
    ):
        assert k in steps[0], k
    vers = json.loads((out / "versions.json").read_text())
    assert {"torch", "transformers", "trl", "peft"} <= set(vers)
    model, tok = load_model(str(out / "final"))  # the adapter, loaded on its base model and merged
    assert not any("lora" in n for n, _ in model.named_parameters())
    # a rerun of the same command finds the run done and leaves it alone
    assert main(["train", str(cfg), "--out", str(out), "--gamma", "0.5", "--neurons", str(d / "n.json")]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(rows)
    # curves
    assert main(["plot-train", str(out)]) == 0
    png = out / "curves.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--gamma", "abc"], "gamma"),
        (["--gama", "1"], "unknown config key"),
        (["--loss_type", "nope"], "loss_type"),
        (["--gamma", "1.0"], "NeuronSet"),
        (["--variant", "sideways"], "variant"),
        (["--fdt", "true"], "LoRA keeps the output layer frozen"),  # the config trains LoRA
    ],
)
def test_cli_bad_override_is_a_clear_error(setup, capsys, args, msg):
    d, cfg = setup
    out = d / ("bad" + args[0])
    rc = main(["train", str(cfg), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 1
    assert "yfpo train: error:" in err and msg in err, err
    assert not out.exists()  # nothing was written


def test_cli_keys_lists_defaults(capsys):
    assert main(["train", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "gamma" in out and "fdt" in out and "variant" in out


def test_cli_precompute_ref_then_train_with_it_and_eval_pairs(setup, capsys):
    d, cfg = setup
    ref = d / "ref.json"
    rc = main(["precompute-ref", str(cfg), "--ref-out", str(ref), "--neurons", str(d / "n.json")])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(ref.read_text())
    assert data["n_pairs"] == 4 and "run" in data["m_ref"] and data["key_inputs"]["pairs_sha256"]
    out = d / "run_ref"
    rc = main(
        [
            "train",
            str(cfg),
            "--out",
            str(out),
            "--gamma",
            "1",
            "--neurons",
            str(d / "n.json"),
            "--ref-logps",
            str(ref),
            "--variant",
            "yoked_ref",
            "--eval_pairs",
            str(d / "pairs.jsonl"),
            "--eval_steps",
            "1",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["m_ref_source"] == str(ref) and cal["n_pairs"] == 4
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    for k in ("neuron/gamma_eff", "neuron/logit_share", "neuron/grad_share", "neuron/margin_vs_ref"):
        assert k in steps[0], k
    evals = [r for r in rows if "eval_loss" in r]
    assert len(evals) == 2 and "eval_neuron/margin" in evals[0] and "eval_rewards/accuracies" in evals[0]
    # another pairs file: the reference file is refused with a one-line reason
    other = write_jsonl(d / "other.jsonl", pair_rows(5))
    capsys.readouterr()
    rc = main(["train", str(cfg), "--out", str(d / "run_bad"), "--pairs", str(other), "--ref-logps", str(ref)])
    err = capsys.readouterr().err
    assert rc == 1 and "pairs_sha256" in err and "precompute-ref" in err, err
    assert not (d / "run_bad" / "done.json").exists() and not (d / "run_bad" / "metrics.jsonl").exists()
