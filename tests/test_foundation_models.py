import pytest
import torch

from yfpo.models import arch
from yfpo.models.loading import load_model, state_hash
from yfpo.models.tiny import save_tiny, tiny_model

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3", "gpt2"]


@pytest.mark.parametrize("family", FAMILIES)
def test_arch_finds_parts_and_neuron_input(family):
    model, tok = tiny_model(family)
    L, W = arch.neuron_shape(model)
    assert (L, W) == (2, 128)
    seen = {}

    def pre_hook(mod, args):
        seen["u"] = args[0]

    h = arch.down_proj(model, 1).register_forward_pre_hook(pre_hook)
    ids = tok("Natalia has 48 clips", return_tensors="pt").input_ids
    with torch.no_grad():
        model(ids)
    h.remove()
    assert seen["u"].shape == (1, ids.shape[1], W)
    # u is the MLP's down-projection input: recompute it from the MLP's own parts
    a = arch.get_arch(model)
    mlp = arch.mlp(model, 1)
    captured = {}
    h2 = mlp.register_forward_pre_hook(lambda m, args: captured.setdefault("h", args[0]))
    with torch.no_grad():
        model(ids)
    h2.remove()
    hidden = captured["h"]
    act = getattr(mlp, a.act)
    with torch.no_grad():
        if a.gated:
            u = act(getattr(mlp, a.gate_proj)(hidden)) * getattr(mlp, a.up_proj)(hidden)
        else:
            u = act(getattr(mlp, a.up_proj)(hidden))
    torch.testing.assert_close(u, seen["u"])
    assert arch.lm_head(model).weight.shape[0] == len(tok)
    assert isinstance(arch.final_norm(model), torch.nn.Module)
    assert len(arch.norm_modules(model)) >= 2 * L + 1


def test_unknown_family_is_a_clear_error():
    class Cfg:
        model_type = "mamba"

    with pytest.raises(arch.UnsupportedModelError, match="mamba.*not supported.*known model types"):
        arch.get_arch(Cfg())


def test_tiny_model_is_seeded_and_peft_unwraps():
    m1, _ = tiny_model("llama", seed=1)
    m2, _ = tiny_model("llama", seed=1)
    m3, _ = tiny_model("llama", seed=2)
    assert state_hash(m1) == state_hash(m2) != state_hash(m3)
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(m1, LoraConfig(r=4, target_modules=["down_proj", "q_proj"]))
    assert arch.neuron_shape(pm) == (2, 128)
    assert arch.down_proj(pm, 0) is arch.down_proj(m1, 0)


def test_tokenizer_chat_template_and_specials():
    _, tok = tiny_model("llama")
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    assert tok.decode(tok("The answer is 42.").input_ids) == "The answer is 42."


def test_load_model_from_folder_roundtrip(tmp_path):
    path = save_tiny(tmp_path / "m", "qwen2", seed=3)
    model, tok = load_model(str(path))
    ref, _ = tiny_model("qwen2", seed=3)
    assert state_hash(model) == state_hash(ref)
    assert not model.training


def test_load_model_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


def test_models_cli_list(capsys):
    from yfpo.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "Apache-2.0" in out
