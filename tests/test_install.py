"""scripts/setup.sh's choice of torch build (src/yfpo/install.py): CPU wheel without a visible NVIDIA GPU, PyPI's
default CUDA wheel with one, --cpu / --cuda forcing it, an installed build kept or replaced, the vLLM extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from yfpo import install

ROOT = Path(__file__).resolve().parents[1]


class _Smi:
    def __init__(self, rc=0, out="GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\n", exc=None):
        self.rc, self.out, self.exc, self.calls = rc, out, exc, []

    def __call__(self, cmd, **kw):
        self.calls.append(cmd)
        if self.exc:
            raise self.exc
        return subprocess.CompletedProcess(cmd, self.rc, self.out, "")


def test_gpu_visible_reads_nvidia_smi():
    smi = _Smi()
    assert install.gpu_visible("/usr/bin/nvidia-smi", run=smi)
    assert smi.calls == [["/usr/bin/nvidia-smi", "-L"]]
    # installed driver tools but no device, a failing driver, a hung call: no GPU
    assert not install.gpu_visible("/x/nvidia-smi", run=_Smi(out="No devices found.\n"))
    assert not install.gpu_visible("/x/nvidia-smi", run=_Smi(rc=9, out=""))
    assert not install.gpu_visible("/x/nvidia-smi", run=_Smi(exc=subprocess.TimeoutExpired("nvidia-smi", 30)))
    assert not install.gpu_visible("/x/nvidia-smi", run=_Smi(exc=FileNotFoundError()))


def test_gpu_visible_without_nvidia_smi(monkeypatch):
    monkeypatch.setattr(install.shutil, "which", lambda name: None)
    assert not install.gpu_visible()


def test_choose_mode():
    assert install.choose_mode("auto", has_gpu=False) == "cpu"
    assert install.choose_mode("auto", has_gpu=True) == "cuda"
    assert install.choose_mode("cpu", has_gpu=True) == "cpu"  # forced
    assert install.choose_mode("cuda", has_gpu=False) == "cuda"
    with pytest.raises(ValueError, match="install mode 'rocm': expected one of auto, cpu, cuda"):
        install.choose_mode("rocm", has_gpu=False)


def test_torch_commands_cpu():
    assert install.torch_pip_commands("cpu", None, env={}) == [["install", "torch==2.13.0+cpu"]]
    assert install.torch_pip_commands("cpu", "2.13.0+cpu", env={}) == []  # already there
    # a CUDA build installed, CPU forced: the +cpu pin replaces it (pip treats another local version as different)
    assert install.torch_pip_commands("cpu", "2.13.0", env={}) == [["install", "torch==2.13.0+cpu"]]
    idx = "https://example.invalid/whl/cpu"
    assert install.torch_pip_commands("cpu", None, env={"YFPO_TORCH_CPU_INDEX": idx}) == [
        ["install", "torch==2.13.0+cpu", "--extra-index-url", idx]
    ]


def test_torch_commands_cuda():
    assert install.torch_pip_commands("cuda", None, env={}) == [["install", "torch==2.13.0"]]
    assert install.torch_pip_commands("cuda", "2.13.0", env={}) == []
    assert install.torch_pip_commands("cuda", "2.13.0+cu130", env={}) == []
    # the CPU wheel satisfies torch==2.13.0, so it is uninstalled first (else pip keeps it)
    assert install.torch_pip_commands("cuda", "2.13.0+cpu", env={}) == [
        ["uninstall", "-y", "torch"],
        ["install", "torch==2.13.0"],
    ]
    assert install.torch_pip_commands("cuda", "2.12.1", env={}) == [["install", "torch==2.13.0"]]


def test_plan_and_vllm_extra_agree_with_pyproject():
    mode, steps = install.plan("auto", vllm=True, installed=None, has_gpu=True)
    assert mode == "cuda" and steps[-1][:3] == ["after", "install", "vllm==0.30.0"]
    assert "torch==2.13.0" in steps[-1] and "transformers==5.23.0" in steps[-1]  # vllm may not move ours
    mode, steps = install.plan("auto", installed="2.13.0+cpu", has_gpu=False)
    assert (mode, steps) == ("cpu", [])
    text = (ROOT / "pyproject.toml").read_text()
    assert f'vllm = ["vllm=={install.VLLM_VERSION}"]' in text  # pip install -e .[vllm] installs the same release


def test_cli_runs_with_the_standard_library_alone():
    """setup.sh runs the file by path in the fresh venv (yfpo not installed yet): no imports from yfpo or beyond."""
    out = subprocess.run(
        [sys.executable, "-S", str(ROOT / "src" / "yfpo" / "install.py"), "plan", "--mode", "cuda", "--installed", ""],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == ["cuda", "install torch==2.13.0"]
