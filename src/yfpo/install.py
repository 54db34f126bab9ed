"""Which torch build (and extras) `scripts/setup.sh` installs on this machine: the choice as a tested function.

Standard library only: setup.sh runs this file with the system python before the virtual environment exists
(`python3 src/yfpo/install.py plan --mode auto`): it prints the mode, then one shell-quoted pip command per line
(a leading `after` marks one to run after yfpo itself is installed).

  cpu   torch==2.13.0+cpu, the CPU wheel (no CUDA libraries). PyPI's Linux torch wheel is the CUDA build: the CPU
        wheel comes from PyTorch's CPU index, given as YFPO_TORCH_CPU_INDEX (an --extra-index-url), or from a wheel
        folder / mirror pip is already configured with; without either, pip fails at once naming 2.13.0+cpu, which
        is better than 3 GB of CUDA libraries on a machine that cannot use them.
  cuda  torch==2.13.0 from PyPI, the default build (CUDA 13 libraries as pip dependencies); an installed +cpu wheel
        is replaced.
  auto  cuda where `nvidia-smi -L` lists a GPU, else cpu.

The vLLM extra (`--vllm`, or `pip install -e .[vllm]`) is vllm==0.30.0: the newest release whose torch pin is our
torch==2.13.0 and whose transformers range admits our 5.23.0 (checked from the releases' metadata with
`pip install --dry-run --no-deps --report`: 0.33.0/0.34.0 pin torch 2.14.0, 0.31.0/0.32.0 cap transformers below
5.18/5.20). Its wheel runs on CUDA only; with the CPU torch it installs but cannot start an engine.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

TORCH_VERSION = "2.13.0"
VLLM_VERSION = "0.30.0"
MODES = ("auto", "cpu", "cuda")
# installed with vllm so that it moves none of them (this set resolved with vllm==0.30.0 in a dry run); it does move
# numpy below requirements.lock's 2.4.6 (to 2.3.5: vllm's numba caps numpy), so it is not installed under the lock
VLLM_KEEP = (f"torch=={TORCH_VERSION}", "transformers==5.23.0", "trl==1.16.0", "peft==0.21.2", "accelerate==1.15.0")


def gpu_visible(nvidia_smi: str | None = None, run=subprocess.run) -> bool:
    """True when `nvidia-smi -L` exists, exits 0 and lists at least one GPU ("GPU 0: ...")."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        r = run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and any(line.startswith("GPU ") for line in r.stdout.splitlines())


def choose_mode(requested: str, has_gpu: bool) -> str:
    """cpu | cuda: what `requested` (auto | cpu | cuda) means on a machine where a GPU is / is not visible."""
    if requested not in MODES:
        raise ValueError(f"install mode {requested!r}: expected one of {', '.join(MODES)}")
    if requested == "auto":
        return "cuda" if has_gpu else "cpu"
    return requested


def torch_pip_commands(mode: str, installed: str | None = None, env: dict | None = None) -> list[list[str]]:
    """The pip commands (each its argument list, subcommand first) that give the torch build of `mode` (cpu | cuda);
    [] when `installed` (the torch version in the venv, e.g. "2.13.0+cpu", or None) is already it."""
    env = os.environ if env is None else env
    if mode == "cpu":
        want = f"{TORCH_VERSION}+cpu"
        if installed == want:
            return []
        index = env.get("YFPO_TORCH_CPU_INDEX")
        return [["install", f"torch=={want}", *(["--extra-index-url", index] if index else [])]]
    if mode == "cuda":
        if installed is not None and installed.split("+")[0] == TORCH_VERSION and "+cpu" not in installed:
            return []
        # an installed +cpu wheel of the same version would satisfy torch==2.13.0: remove it first
        drop = [["uninstall", "-y", "torch"]] if installed and "+cpu" in installed else []
        return [*drop, ["install", f"torch=={TORCH_VERSION}"]]
    raise ValueError(f"torch build {mode!r}: expected cpu or cuda")


def plan(requested: str = "auto", vllm: bool = False, installed: str | None = None, has_gpu: bool | None = None):
    """(mode, [pip commands]) for setup.sh: torch first; the vLLM extra (asked for) is marked "after": setup.sh
    runs it after yfpo and its locked dependencies."""
    mode = choose_mode(requested, gpu_visible() if has_gpu is None and requested == "auto" else bool(has_gpu))
    steps = []
    steps += torch_pip_commands(mode, installed)
    if vllm:
        if mode == "cpu":
            print(
                f"[setup] note: vllm=={VLLM_VERSION} runs on CUDA GPUs only; with the CPU torch it installs "
                "but cannot start (yfpo's `auto` backend then keeps the CPU backends)",
                file=sys.stderr,
            )
        steps.append(["after", "install", f"vllm=={VLLM_VERSION}", *VLLM_KEEP])
    return mode, steps


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="install.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="print the mode, then one shell-quoted pip command per line")
    p.add_argument("--mode", default="auto", choices=MODES)
    p.add_argument("--vllm", action="store_true")
    p.add_argument("--installed", default=None, help="the torch version now in the venv (empty: none)")
    a = ap.parse_args(argv)
    mode, steps = plan(a.mode, vllm=a.vllm, installed=a.installed or None)
    print(mode)
    for s in steps:
        print(shlex.join(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
