"""The machine a benchmark ran on, from `lscpu`: CPU model name and which of the named flags it shows."""

from __future__ import annotations

import subprocess

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def cpu(flags: tuple[str, ...] = FLAGS) -> tuple[str, list[str]]:
    """(lscpu "Model name", the flags of `flags` that appear in lscpu's output)."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")), "?")
    return name, [f for f in flags if f in text]
