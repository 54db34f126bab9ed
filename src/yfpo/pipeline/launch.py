"""`launch:` in a run config: every training stage through `accelerate launch` (DDP, FSDP, DeepSpeed) with the
configured global batch, so stage hashes, the cache and the results do not depend on it."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

from yfpo.config import save_config

LAUNCH_KEYS = ("config_file", "num_processes", "main_process_port")


def check_launch(launch: dict | None) -> None:
    """Refuse a bad `launch:` section before any stage runs."""
    if launch is None:
        return
    unknown = sorted(set(launch) - set(LAUNCH_KEYS))
    if unknown:
        raise ValueError(f"run config: launch: unknown key(s) {', '.join(unknown)}; expected {', '.join(LAUNCH_KEYS)}")
    try:
        n = int(launch.get("num_processes", 0))
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(
            f"run config: launch.num_processes: expected an integer >= 1, got {launch.get('num_processes')!r}"
        )
    cf = launch.get("config_file")
    if not cf or not Path(cf).is_file():
        raise ValueError(f"run config: launch.config_file: {cf!r} is not a file (an accelerate config YAML)")


def launch_training(cfg, launch: dict, command: str = "train") -> Path:
    """One training (`yfpo train` / `yfpo grpo`) on launch.num_processes processes through `accelerate launch
    --config_file launch.config_file`; each process gets batch_size / num_processes examples a step, so the global
    batch (and with it every logged loss, up to float rounding) is the one-process run's. Returns the run dir."""
    n = int(launch["num_processes"])
    # TrainConfig (a DPOConfig) names the per-process batch per_device_train_batch_size; GRPORunConfig batch_size
    key = "per_device_train_batch_size" if hasattr(cfg, "per_device_train_batch_size") else "batch_size"
    batch = getattr(cfg, key)
    if batch % n:
        raise ValueError(
            f"launch.num_processes {n}: the training's batch_size {batch} does not split into {n} equal "
            "per-process batches (the global batch must stay the configured one)"
        )
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_process = dataclasses.replace(cfg, **{key: batch // n})
    save_config(per_process, out / "launch_config.yaml")
    port = launch.get("main_process_port")
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(launch["config_file"]),
        "--num_processes",
        str(n),
        "--main_process_port",
        str(port),
        "-m",
        "yfpo.cli",
        command,
        str(out / "launch_config.yaml"),
        "--out",
        str(out),
    ]
    with open(out / "launch.log", "a") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = (out / "launch.log").read_text()[-1500:]
        raise RuntimeError(f"accelerate launch of {out} exited {r.returncode} (log: {out / 'launch.log'}): ...{tail}")
    return out
