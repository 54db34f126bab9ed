"""A model that cannot be loaded is one line naming it and what to do, found before any weights are read: an
uncached hub id offline (HF_HUB_OFFLINE, or the hub unreachable), a gated or unknown one, a folder that is not a
model folder."""

from __future__ import annotations

import huggingface_hub
import pytest
import transformers
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from yfpo.models.loading import ModelNotLoadable, check_loadable, load_model

HUB_ID = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def no_weights(monkeypatch):
    """Fail if anything tries to read weights; an empty HF cache (so HUB_ID is not cached)."""

    def refuse(*a, **k):
        raise AssertionError("from_pretrained was called for a model that cannot be loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)


def _hub_error(cls, msg: str) -> Exception:
    """huggingface_hub's HTTP error without an HTTP response (its __init__ reads one)."""
    e = cls.__new__(cls)
    Exception.__init__(e, msg)
    return e


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_offline_uncached_hub_id(no_weights, monkeypatch):
    from huggingface_hub import constants

    def no_network(*a, **k):
        raise AssertionError("the hub was asked although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "auth_check", no_network)
    with pytest.raises(ModelNotLoadable) as e:
        load_model(HUB_ID)
    msg = _one_line(e)
    assert HUB_ID in msg and "HF_HUB_OFFLINE" in msg and f"hf download {HUB_ID}" in msg


@pytest.mark.parametrize(
    "raised, words",
    [
        (ConnectionError("[Errno -2] Name or service not known"), "the hub cannot be reached"),
        (_hub_error(GatedRepoError, "401 gated"), "is gated: accept its terms"),
        (_hub_error(RepositoryNotFoundError, "404"), "was not found on the Hugging Face Hub"),
    ],
)
def test_hub_id_unreachable_gated_or_unknown(no_weights, monkeypatch, raised, words):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def check(repo_id, *a, **k):
        assert repo_id == HUB_ID
        raise raised

    monkeypatch.setattr(huggingface_hub, "auth_check", check)
    with pytest.raises(ModelNotLoadable) as e:
        check_loadable(HUB_ID)
    msg = _one_line(e)
    assert HUB_ID in msg and words in msg


def test_wrong_folder(no_weights, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelNotLoadable, match="not a model folder") as e:
        load_model(str(tmp_path))
    assert str(tmp_path) in _one_line(e)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing" / "final"))
    check_loadable("default")  # an alias needs no check


def test_folder_without_weights_is_one_line(tmp_path):
    """config.json but no weights: transformers' OSError becomes one line naming the model."""
    from yfpo.models.tiny import save_tiny

    d = save_tiny(tmp_path / "tiny")
    for f in d.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelNotLoadable, match=r"cannot be loaded: ") as e:
        load_model(str(d))
    assert str(d) in _one_line(e)


def test_yfpo_eval_offline_hub_id_is_one_line(no_weights, monkeypatch, capsys):
    """`yfpo eval --model Qwen/Qwen2.5-0.5B-Instruct` offline: exit 1 and one line, no traceback, no weights read."""
    from huggingface_hub import constants

    from yfpo.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["eval", "--model", HUB_ID, "--limit", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and HUB_ID in err and "HF_HUB_OFFLINE" in err, err
