"""Two CPU processes through `accelerate launch` (gloo): 2 processes x 1 pair per step train exactly like one process
x 2 pairs per step: same logged losses and grad norms, and the same final weights (so gradients are synchronised,
also through the neuron reward and the FDT head).

Note: with accelerate 1.15, `accelerate launch --cpu --num_processes 2` starts ONE process (its `--cpu` path is the
simple launcher unless an MPI hostfile is given). Two CPU processes come from the torchrun-based launcher
(`--multi_gpu`), which on a machine without GPUs sets up MULTI_CPU with the gloo backend; the training config's
device=cpu keeps every process on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train_common import pair_rows, write_jsonl, write_neuronset

from yfpo.models.tiny import save_tiny, tiny_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(run):
    return [r for r in (json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
def test_two_process_cpu_run_matches_one_process(tmp_path):
    model_dir = save_tiny(tmp_path / "tiny", family="llama", seed=0)
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(tmp_path / "n.json", model)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(2))  # every step sees both pairs, whatever the order
    common = [
        "train",
        "--model",
        str(model_dir),
        "--pairs",
        str(pairs),
        "--lora",
        "false",
        "--max_steps",
        "2",
        "--lr",
        "1e-2",
        "--lr_scheduler",
        "constant",
        "--warmup_ratio",
        "0",
        "--device",
        "cpu",
        "--gamma",
        "0.5",
        "--neurons",
        str(tmp_path / "n.json"),
        "--fdt",
        "true",
        "--save_steps",
        "100",
        "--max_length",
        "96",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YFPO_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false"}
    one = subprocess.run(
        [sys.executable, "-m", "yfpo.cli", *common, "--batch_size", "2", "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "yfpo.cli",
            *common,
            "--batch_size",
            "1",
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run directory:") == 2  # really two processes
    r1, r2 = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["step"] for r in r1] == [r["step"] for r in r2] == [1, 2]
    for a, b in zip(r1, r2):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["neuron/margin"] == pytest.approx(a["neuron/margin"], abs=1e-5)
    assert r1[1]["loss"] != r1[0]["loss"]  # the first step changed the model
    # the calibrated neuron scale (default neuron_norm ref_std) is one value across the two processes, equal to 1-process
    c1 = json.loads((tmp_path / "one" / "calibration.json").read_text())
    c2 = json.loads((tmp_path / "two" / "calibration.json").read_text())
    assert c2["processes"] == 2 and c1["processes"] == 1
    assert c2["std"] == pytest.approx(c1["std"], rel=1e-6) and c2["m_ref"] == pytest.approx(
        c1["m_ref"], rel=1e-5, abs=1e-7
    )
    w1 = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    # Adam at lr 1e-2 turns rounding-level gradient differences into ~1e-6 weight differences; a missing
    # gradient all-reduce would move weights by ~lr
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=2e-4, msg=lambda m, k=k: f"{k}: {m}")
