"""The decode-attention kernel (yfpo.engine.attn_kernel, backend "fast-attn"): it computes SDPA's result for one
query position over a cache (grouped heads, masks, strided views), the fast loop uses it for its decode steps only and
restores the model's attention setting after, greedy outputs equal the HF reference on a tiny model, and where it
cannot run (no compiler) or disagrees with SDPA, decoding falls back to SDPA."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import torch
from conftest import QUESTIONS

from yfpo.engine import attn_kernel, backends
from yfpo.engine.generate import generate
from yfpo.engine.prompts import build_prompt
from yfpo.models.tiny import tiny_model


def _no_toolchain() -> str | None:
    """Why this machine cannot build the kernel at all (off Linux, no C compiler, a torch without OpenMP), else None."""
    if sys.platform != "linux":
        return f"built only on Linux (here: {sys.platform})"
    if not torch._C.has_openmp:
        return "this torch build has no OpenMP"
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc or not shutil.which(cc):
        return "no C compiler"
    return None


@pytest.fixture(scope="module")
def kernel():
    """The kernel. Skipped only where it cannot be built (off Linux, no compiler); a kernel that fails to compile,
    to load or its self-test against SDPA on a machine that can build it is a failure, not a skip: those are the
    regressions these tests guard (`auto` would quietly fall back to another backend)."""
    why_not = _no_toolchain()
    if why_not:
        pytest.skip(f"the decode-attention kernel cannot be built here: {why_not}")
    k = attn_kernel.get()
    assert k is not None, f"the decode-attention kernel did not build or disagrees with SDPA: {attn_kernel.why()}"
    return k


@pytest.fixture(scope="module")
def tiny64():
    """A tiny llama with 64-dim heads (4 query heads over 2 KV heads), which the kernel serves."""
    return tiny_model(head_dim=64)


def _sdpa(q, k, v, mask, scale):
    b, hq, _, d = q.shape
    hkv = k.shape[1]
    return (
        torch.nn.functional.scaled_dot_product_attention(
            q.view(b, hkv, hq // hkv, d), k, v, attn_mask=mask, scale=scale
        )
        .reshape(b, hq, d)
        .unsqueeze(1)
    )


@pytest.mark.parametrize(
    "b,hkv,g,d,n",
    [(1, 1, 1, 64, 1), (3, 2, 3, 64, 50), (2, 3, 4, 128, 33), (2, 1, 12, 64, 20), (5, 2, 1, 128, 7)],
)
def test_kernel_equals_sdpa(kernel, b, hkv, g, d, n):
    gen = torch.Generator().manual_seed(b * 100 + n)
    cache_k = torch.randn((b, hkv, n + 11, d), generator=gen)  # a reserved buffer: the cache is a strided view
    cache_v = torch.randn((b, hkv, n + 11, d), generator=gen)
    k, v = cache_k[:, :, :n], cache_v[:, :, :n]
    q = torch.randn((b, hkv * g, 1, d), generator=gen)
    mask = torch.rand((b, 1, 1, n), generator=gen) > 0.4
    mask[..., -1] = True  # the new token itself is always attended
    for m in (mask, None, mask[:1].expand(b, 1, 1, n)):
        got = kernel.attend(q, k, v, m, 0.17)
        assert got is not None and got.shape == (b, 1, hkv * g, d)
        torch.testing.assert_close(got, _sdpa(q, k, v, m, 0.17), rtol=1e-4, atol=1e-5)


def test_kernel_declines_what_it_does_not_serve(kernel):
    q, k = torch.randn(2, 4, 1, 64), torch.randn(2, 2, 9, 64)
    assert kernel.attend(torch.randn(2, 4, 2, 64), k, k, None, 0.1) is None  # a prefill (2 query positions)
    assert kernel.attend(torch.randn(2, 4, 1, 16), k[..., :16], k[..., :16], None, 0.1) is None  # head dim 16
    assert kernel.attend(q.double(), k.double(), k.double(), None, 0.1) is None  # not float32
    assert kernel.attend(q, k, k, torch.zeros(2, 1, 1, 9), 0.1) is None  # an additive float mask
    assert kernel.attend(torch.randn(2, 3, 1, 64), k, k, None, 0.1) is None  # 3 query heads over 2 KV heads


def _prompts(tok):
    return [build_prompt(tok, q) for q in QUESTIONS]


def test_fast_attn_greedy_equals_hf_and_uses_the_kernel(kernel, tiny64, monkeypatch):
    model, tok = tiny64
    assert backends.resolve("auto", model).name == "fast-attn"
    calls = []
    real = attn_kernel.Kernel.attend

    def counting(self, *a, **k):
        out = real(self, *a, **k)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(attn_kernel.Kernel, "attend", counting)
    ps = _prompts(tok) * 2
    ref = generate(model, tok, ps, max_new_tokens=16, batch_size=4, backend="hf", progress=False)
    got = generate(model, tok, ps, max_new_tokens=16, batch_size=1, backend="fast-attn", progress=False)
    assert got == ref
    cfg = model.config.get_text_config(decoder=True)
    assert sum(calls) >= cfg.num_hidden_layers * 10  # decode steps of every layer went through the kernel
    assert model.config._attn_implementation == "sdpa"  # restored after the batch
    stop = generate(model, tok, ps, max_new_tokens=16, backend="fast-attn", stop=["a"], progress=False)
    assert stop == generate(model, tok, ps, max_new_tokens=16, backend="hf", stop=["a"], progress=False)


def test_a_kernel_that_disagrees_is_dropped(kernel, tiny64, monkeypatch):
    model, tok = tiny64
    monkeypatch.setattr(attn_kernel, "_STATE", dict(attn_kernel._STATE))
    monkeypatch.setattr(attn_kernel.Kernel, "attend", lambda self, q, *a: torch.zeros(q.shape[0], 1, *q.shape[1:2], 64))
    ps = _prompts(tok)
    ref = generate(model, tok, ps, max_new_tokens=8, backend="fast", progress=False)
    with pytest.warns(UserWarning, match="decode-attention kernel dropped"):
        got = generate(model, tok, ps, max_new_tokens=8, backend="fast-attn", progress=False)
    assert got == ref
    assert attn_kernel.get() is None and "differed from SDPA" in attn_kernel.why()
    assert backends.resolve("auto", model).name == "fast"


def test_no_compiler_means_fast_without_the_kernel(tiny64, monkeypatch, tmp_path):
    model, tok = tiny64
    monkeypatch.setattr(attn_kernel, "_STATE", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("YFPO_CACHE", str(tmp_path))
    assert "no C compiler" in attn_kernel.why()
    assert backends.resolve("auto", model).name == "fast"
    with pytest.raises(RuntimeError, match="backend 'fast-attn' cannot run here: no C compiler"):
        backends.resolve("fast-attn", model)
    assert not (tmp_path / "kernels").exists() or not any((tmp_path / "kernels").iterdir())


def test_build_is_cached_per_source(kernel, monkeypatch, tmp_path):
    monkeypatch.setattr(attn_kernel, "_STATE", {})
    monkeypatch.setenv("YFPO_CACHE", str(tmp_path))
    assert attn_kernel.get() is not None
    built = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].startswith("decode_attn-") and built[0].endswith(".so")  # no temp files left
    monkeypatch.setattr(attn_kernel, "_STATE", {})
    monkeypatch.setattr(attn_kernel, "SOURCE", attn_kernel.SOURCE + "\n/* changed */\n")
    assert attn_kernel.get() is not None
    assert len(list((tmp_path / "kernels").iterdir())) == 2  # another source: another build, the first one kept


def test_models_the_kernel_does_not_serve():
    model, _ = tiny_model()  # 16-dim heads
    assert "head dim 16" in attn_kernel.usable(model)
    assert backends.resolve("auto", model).name == "fast"


def test_the_kernel_shares_torchs_openmp_runtime(kernel):
    """Loaded, the kernel added no OpenMP runtime of its own: the process maps one (torch's)."""
    runtimes = attn_kernel._openmp_runtimes()
    if not runtimes:
        pytest.skip("no OpenMP runtime visible in /proc/self/maps")
    assert len(runtimes) == 1, runtimes
