"""TrainConfig is trl.DPOConfig extended: TRL's names and help, older yfpo names as aliases with the stage hashes of
older configs unchanged, `yfpo train --help` listing every key, did-you-mean, and the keys yfpo sets itself refused."""

from __future__ import annotations

import dataclasses

import pytest
from trl import DPOConfig

from yfpo.cli import build_parser, main
from yfpo.config import ConfigError, from_dict, load_config
from yfpo.pipeline import stage_hash
from yfpo.train.config import TrainConfig
from yfpo.utils import stable_hash

# configs in the older flat form, and the train stage hash they had before TrainConfig became a DPOConfig (computed
# by main at 3d58b93: stage_hash("train", to_dict(from_dict(TrainConfig, case)), {})); record() must reproduce them
OLD_CASES = {
    "defaults": ({}, "0f3f2d2e42"),
    "quick_dpo": (
        {
            "lora": True,
            "beta": 0.1,
            "lr": 5e-5,
            "epochs": 1,
            "batch_size": 4,
            "max_length": 256,
            "limit_pairs": 8,
            "warmup_ratio": 0.0,
            "save_steps": 1,
            "dtype": "float32",
            "device": "cpu",
            "gamma": 0.0,
            "seed": 0,
        },
        "31b5d27600",
    ),
    "fdt_full": (
        {
            "gamma": 1.0,
            "fdt": True,
            "lora": False,
            "lr": 5e-6,
            "neurons": "n.json",
            "device": "cpu",
            "grad_accum": 2,
            "lr_scheduler": "linear",
            "precompute_ref": True,
            "num_workers": 1,
            "eval_pairs": "e.jsonl",
            "eval_steps": 3,
        },
        "1c7a44b836",
    ),
    "trl_extra": (
        {
            "loss_type": "ipo",
            "trl": {"truncation_mode": "keep_end", "pad_to_multiple_of": 8},
            "gradient_checkpointing": True,
            "warmup_ratio": 0.05,
            "max_steps": 7,
            "logging_steps": 2,
            "save_total_limit": 1,
            "weight_decay": 0.01,
            "dtype": "bfloat16",
        },
        "433e50bffe",
    ),
}


@pytest.mark.parametrize("name", sorted(OLD_CASES))
def test_older_configs_keep_their_stage_hash(name):
    data, want = OLD_CASES[name]
    cfg = from_dict(TrainConfig, data)
    assert stage_hash("train", cfg.record(), {}) == want


def test_trl_names_and_older_names_are_one_config():
    old = from_dict(TrainConfig, OLD_CASES["fdt_full"][0])
    new = from_dict(
        TrainConfig,
        {
            "gamma": 1.0,
            "fdt": True,
            "lora": False,
            "learning_rate": 5e-6,
            "neurons": "n.json",
            "use_cpu": True,
            "gradient_accumulation_steps": 2,
            "lr_scheduler_type": "linear",
            "precompute_ref_log_probs": True,
            "dataloader_num_workers": 1,
            "eval_pairs": "e.jsonl",
            "eval_steps": 3,
        },
    )
    assert isinstance(new, DPOConfig)
    assert new.record() == old.record()
    assert new.learning_rate == 5e-6 and new.use_cpu is True and new.eval_strategy.value == "steps"
    # a TRL option set under its own name changes the hash (it reaches TRL: it may change the weights) ...
    other = dataclasses.replace(new, max_grad_norm=0.5)
    assert other.record()["trl"] == {"max_grad_norm": 0.5} and stable_hash(other.record()) != stable_hash(new.record())
    # ... one that only changes what is logged does not
    assert dataclasses.replace(new, report_to="tensorboard").record() == new.record()


def test_warmup_ratio_is_a_ratio_and_device_maps_to_use_cpu():
    assert from_dict(TrainConfig, {"warmup_ratio": 0.2}).warmup_steps == 0.2
    with pytest.raises(ConfigError, match="warmup_ratio: 1.5 is not a ratio in \\[0, 1\\).*warmup_steps: N"):
        from_dict(TrainConfig, {"warmup_ratio": 1.5})
    assert from_dict(TrainConfig, {"warmup_steps": 3}).warmup_steps == 3  # steps, under TRL's name
    assert from_dict(TrainConfig, {"device": "cpu"}).use_cpu is True
    assert from_dict(TrainConfig, {"device": "auto"}).record()["device"] == "auto"
    with pytest.raises(ConfigError, match="device: expected cpu, auto or cuda"):
        from_dict(TrainConfig, {"device": "tpu"})


@pytest.mark.parametrize("key", ["model_init_kwargs", "resume_from_checkpoint", "trust_remote_code"])
def test_keys_yfpo_sets_are_refused_with_the_reason(key):
    with pytest.raises(ConfigError, match=f"{key} is set by yfpo: "):
        from_dict(TrainConfig, {key: "x"})


def test_unknown_key_suggests_the_trl_or_yfpo_name(tmp_path):
    for bad, good in (("lerning_rate", "learning_rate"), ("gama", "gamma"), ("batchsize", "batch_size")):
        with pytest.raises(ConfigError, match=f"{bad}: did you mean '{good}'"):
            from_dict(TrainConfig, {bad: 1})
    p = tmp_path / "c.yaml"
    p.write_text("report_too: tensorboard\n")
    with pytest.raises(ConfigError, match="report_too: did you mean 'report_to'.*--help lists them"):
        load_config(TrainConfig, p)


def test_trl_error_is_one_line():
    with pytest.raises(ConfigError, match="loss_weights.*same length") as e:
        from_dict(TrainConfig, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]})
    assert "\n" not in str(e.value)


def test_help_lists_every_dpoconfig_key_with_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for f in dataclasses.fields(DPOConfig):
        assert f"--{f.name}" in out, f.name
    for f in dataclasses.fields(TrainConfig):
        words = " ".join(f.metadata.get("help", "").split()[:4])
        assert words in out, (f.name, words)
    for title in ("yfpo: neuron reward", "TRL DPOConfig: training", "transformers TrainingArguments", "older yfpo"):
        assert title in out
    assert "--gamma V weight of the neuron margin" in out and "[default: 0.0]" in out


def test_trl_style_flags_never_become_a_file_name(capsys):
    from yfpo.train.cli import _load_cfg

    args, extra = build_parser().parse_known_args(["train", "--learning_rate", "1e-5", "--pairs", "p.jsonl"])
    args.overrides = extra
    assert args.config is None
    assert _load_cfg(args).learning_rate == 1e-5
    rc = main(["train", "--lerning_rate", "1e-5", "--pairs", "p.jsonl"])
    err = capsys.readouterr().err
    assert rc == 1 and "--lerning_rate: did you mean --learning_rate?" in err and "1e-5" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_saved_config_reads_back_to_the_same_record(tmp_path):
    from yfpo.config import save_config

    cfg = from_dict(TrainConfig, {**OLD_CASES["trl_extra"][0], "report_to": "tensorboard"})
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "learning_rate" not in text and "truncation_mode: keep_end" in text  # TRL names, only what is set
    back = load_config(TrainConfig, tmp_path / "config.yaml")
    assert back.record() == cfg.record() and back.report_to == ["tensorboard"]
