"""A decode-attention kernel for the fast loop on CPU (the "fast-attn" backend): one query position against the KV
cache, grouped-query heads, float32, compiled here with the C compiler at first use.

Why: at 256 rows a decode step's attention is a batch of 768 tiny products per layer (3 query heads of one KV head x
~300 cached positions x 64 dims). PyTorch's CPU SDPA kernel (and `bmm`, and inductor's code) runs them at ~13 GB/s
where the cache could be read at ~45 GB/s: per (row, head) it pays two small MKL GEMM calls with M=3 and their fixed
costs. This kernel does the same arithmetic in one pass per (row, KV head): the scores of all its query heads from each
cached key, a softmax, and the weighted values, skipping masked (padding) positions; the compiler vectorizes the loops
for this CPU (-march=native). Measured on a 2-core Zen 4, 256 rows x 300 positions x 3x3 heads: 4.4 ms vs SDPA's 9.1
ms a layer (benchmarks/RESULTS.md, tenth session).

It is the same float32 math in another summation order (and glibc's vector expf), so its outputs differ from SDPA's in
the last bits, as SDPA's own do between batch shapes; how often greedy outputs stay identical is measured, not assumed.
Every batch checks the kernel once against SDPA (first call, first layer); a kernel that disagrees is dropped for the
process with a warning.

Built with `$CC` (else gcc / cc) `-O3 -march=native -ffast-math -fopenmp`, cached in $YFPO_CACHE/kernels (default
~/.cache/yfpo) under a key of the source, the flags, the compiler's version and this CPU's flags. It runs its loop on
PyTorch's own OpenMP threads: linked by soname, the library resolves to the libgomp torch loaded, and it is refused
when loading it brings any other OpenMP runtime into the process (two runtimes spinning on two cores cost more than
they save).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTN_NAME = "yfpo_decode"  # the attention implementation name registered with transformers
DIMS = (64, 128)  # head dims the kernel is built for
MAX_GROUP = 16  # query heads per KV head

SOURCE = r"""
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define MAXG 16

/* One (row, KV head): q [G, DIM] contiguous; keys / values of position j at kb + j*ksn, vb + j*vsn (dims
   contiguous); m[j] != 0 where position j is attended; out [G, DIM]; s: scratch of G*n floats. GG: G fixed at
   compile time (0: the runtime G_). No infinities are made (the code is built with -ffast-math): masked positions
   get weight 0 and never enter the maximum. */
#define DEFINE_BH(DIM, GG)                                                                                      \
static void bh_##DIM##_##GG(const float *restrict qb, const float *restrict kb, const float *restrict vb,     \
                            const uint8_t *restrict m, float *restrict ob, float *restrict s, int64_t G_,    \
                            int64_t n, int64_t ksn, int64_t vsn, float scale) {                              \
  const int64_t G = GG ? GG : G_;                                                                           \
  float mx[MAXG], inv[MAXG];                                                                                \
  for (int64_t g = 0; g < G; ++g) mx[g] = -FLT_MAX;                                                         \
  for (int64_t j = 0; j < n; ++j) {                                                                         \
    if (!m[j]) { for (int64_t g = 0; g < G; ++g) s[g * n + j] = 0.f; continue; }                            \
    const float *restrict kr = kb + j * ksn;                                                                \
    for (int64_t g = 0; g < G; ++g) {                                                                       \
      const float *restrict qg = qb + g * DIM;                                                              \
      float acc = 0.f;                                                                                      \
      _Pragma("omp simd reduction(+:acc)")                                                                  \
      for (int64_t d = 0; d < DIM; ++d) acc += qg[d] * kr[d];                                               \
      acc *= scale;                                                                                         \
      s[g * n + j] = acc;                                                                                   \
      mx[g] = acc > mx[g] ? acc : mx[g];                                                                    \
    }                                                                                                       \
  }                                                                                                         \
  for (int64_t g = 0; g < G; ++g) {                                                                         \
    float *restrict sg = s + g * n;                                                                         \
    const float top = mx[g];                                                                                \
    float sum = 0.f;                                                                                        \
    _Pragma("omp simd reduction(+:sum)")                                                                    \
    for (int64_t j = 0; j < n; ++j) { float e = m[j] ? expf(sg[j] - top) : 0.f; sg[j] = e; sum += e; }      \
    inv[g] = sum > 0.f ? 1.f / sum : 0.f;                                                                   \
  }                                                                                                         \
  float acc[MAXG][DIM] __attribute__((aligned(64)));                                                        \
  for (int64_t g = 0; g < G; ++g) for (int64_t d = 0; d < DIM; ++d) acc[g][d] = 0.f;                        \
  for (int64_t j = 0; j < n; ++j) {                                                                         \
    if (!m[j]) continue;                                                                                    \
    const float *restrict vr = vb + j * vsn;                                                                \
    for (int64_t g = 0; g < G; ++g) {                                                                       \
      const float p = s[g * n + j];                                                                         \
      _Pragma("omp simd")                                                                                   \
      for (int64_t d = 0; d < DIM; ++d) acc[g][d] += p * vr[d];                                             \
    }                                                                                                       \
  }                                                                                                         \
  for (int64_t g = 0; g < G; ++g) for (int64_t d = 0; d < DIM; ++d) ob[g * DIM + d] = acc[g][d] * inv[g];   \
}

#define DEFINE_DIM(DIM) \
  DEFINE_BH(DIM, 0) DEFINE_BH(DIM, 1) DEFINE_BH(DIM, 2) DEFINE_BH(DIM, 3) DEFINE_BH(DIM, 4) \
  DEFINE_BH(DIM, 5) DEFINE_BH(DIM, 6) DEFINE_BH(DIM, 7) DEFINE_BH(DIM, 8)
DEFINE_DIM(64)
DEFINE_DIM(128)

typedef void (*bh_fn)(const float *, const float *, const float *, const uint8_t *, float *, float *, int64_t,
                      int64_t, int64_t, int64_t, float);
static const bh_fn T64[9] = {bh_64_0, bh_64_1, bh_64_2, bh_64_3, bh_64_4, bh_64_5, bh_64_6, bh_64_7, bh_64_8};
static const bh_fn T128[9] = {bh_128_0, bh_128_1, bh_128_2, bh_128_3, bh_128_4, bh_128_5, bh_128_6, bh_128_7,
                              bh_128_8};

/* q [B, H, G, D] contiguous (H: KV heads, G: query heads per KV head); k, v: element strides (row, head,
   position), dims contiguous; valid [B, n] at row stride mstride; out [B, H, G, D]. Returns 0, or 1 for an
   unsupported shape, 2 when scratch memory could not be had. */
int yfpo_decode_attn(const float *q, const float *k, const float *v, const uint8_t *valid, float *out,
                     int64_t B, int64_t H, int64_t G, int64_t D, int64_t n,
                     int64_t ksb, int64_t ksh, int64_t ksn, int64_t vsb, int64_t vsh, int64_t vsn,
                     int64_t mstride, float scale, int threads) {
  if (G < 1 || G > MAXG || (D != 64 && D != 128) || n < 1) return 1;
  const bh_fn f = (D == 64 ? T64 : T128)[G <= 8 ? G : 0];
  int bad = 0;
  #pragma omp parallel num_threads(threads) reduction(|:bad)
  {
    float *s = (float *)malloc(sizeof(float) * G * n);
    if (!s) bad = 1;
    #pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      if (!s) continue;
      const int64_t b = bh / H, h = bh % H;
      f(q + bh * G * D, k + b * ksb + h * ksh, v + b * vsb + h * vsh, valid + b * mstride, out + bh * G * D, s, G,
        n, ksn, vsn, scale);
    }
    free(s);
  }
  return bad ? 2 : 0;
}
"""

FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC"]

_LOCK = threading.Lock()
_STATE: dict = {}  # "kernel": the loaded Kernel, or "why": why there is none (decided once per process)
_LOCAL = threading.local()  # the decode loop's active cache while a batch decodes with the kernel


def _cache_root() -> Path:
    return Path(os.environ.get("YFPO_CACHE", Path.home() / ".cache" / "yfpo")) / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _openmp_runtimes() -> set[str]:
    """The OpenMP runtime libraries mapped into this process (GNU libgomp, Intel libiomp5, LLVM libomp)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return set()
    names = ("libgomp", "libiomp", "libomp")
    return {line.split()[-1] for line in maps if line.rsplit("/", 1)[-1].startswith(names)}


def _build() -> tuple[ctypes.CDLL | None, str | None]:
    if sys.platform != "linux":
        return None, f"built only on Linux (here: {sys.platform})"
    if not torch._C.has_openmp:
        return None, "this torch build has no OpenMP"
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc or not shutil.which(cc):
        return None, "no C compiler found (set CC, or install gcc)"
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"the C compiler {cc} does not run: {e}"
    key = hashlib.sha256("\0".join([SOURCE, *FLAGS, version, _cpu_flags()]).encode()).hexdigest()[:16]
    root = _cache_root()
    lib_path = root / f"decode_attn-{key}.so"
    if not lib_path.exists():
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                src = Path(tmp) / "decode_attn.c"
                src.write_text(SOURCE)
                out = Path(tmp) / lib_path.name
                r = subprocess.run(
                    [cc, *FLAGS, str(src), "-o", str(out), "-lm"], capture_output=True, text=True, timeout=300
                )
                if r.returncode != 0:
                    last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
                    return None, f"compiling the kernel with {cc} failed: {last}"
                os.replace(out, lib_path)  # atomic: a concurrent build or a reader never sees half a file
        except (OSError, subprocess.SubprocessError) as e:
            return None, f"building the kernel in {root} failed: {e}"
    before = _openmp_runtimes()
    try:
        lib = ctypes.CDLL(str(lib_path))
    except OSError as e:
        return None, f"loading {lib_path} failed: {e}"
    added = _openmp_runtimes() - before
    if added:
        return None, f"the kernel brought another OpenMP runtime into the process ({', '.join(sorted(added))})"
    fn = lib.yfpo_decode_attn
    p, i = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [p, p, p, p, p] + [i] * 5 + [i] * 6 + [i, ctypes.c_float, ctypes.c_int]
    fn.restype = ctypes.c_int
    return lib, None


class Kernel:
    def __init__(self, lib: ctypes.CDLL):
        self._fn = lib.yfpo_decode_attn

    def attend(self, query, key, value, mask, scale: float) -> torch.Tensor | None:
        """Attention of one query position: query [B, Hq, 1, D], key/value [B, Hkv, n, D] (any strides with the dims
        contiguous), mask None or bool [B, 1, 1, n] (True: attend). Returns [B, 1, Hq, D] (SDPA's layout after its
        transpose), or None where the kernel does not apply (the caller then runs SDPA)."""
        if query.dim() != 4 or query.shape[2] != 1 or key.dim() != 4 or value.shape[:3] != key.shape[:3]:
            return None
        b, hq, _, d = query.shape
        hkv, n = key.shape[1], key.shape[2]
        if d not in DIMS or key.shape[-1] != d or value.shape[-1] != d or hkv < 1 or hq % hkv or n < 1:
            return None
        if hq // hkv > MAX_GROUP or key.shape[0] != b:
            return None
        if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in (query, key, value)):
            return None
        if key.stride(-1) != 1 or value.stride(-1) != 1 or query.requires_grad:
            return None
        if mask is None:
            valid = torch.ones((b, n), dtype=torch.uint8)
        else:
            if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1:3] != (1, 1) or mask.shape[-1] != n:
                return None
            if mask.shape[0] not in (1, b):
                return None
            valid = mask[:, 0, 0, :]
            if valid.stride(-1) != 1:
                valid = valid.contiguous()
            valid = valid.view(torch.uint8)
        mstride = valid.stride(0) if valid.shape[0] == b else 0
        q = query.reshape(b, hq, d).contiguous()
        out = torch.empty((b, hq, d), dtype=torch.float32)
        rc = self._fn(
            q.data_ptr(),
            key.data_ptr(),
            value.data_ptr(),
            valid.data_ptr(),
            out.data_ptr(),
            b,
            hkv,
            hq // hkv,
            d,
            n,
            key.stride(0),
            key.stride(1),
            key.stride(2),
            value.stride(0),
            value.stride(1),
            value.stride(2),
            mstride,
            float(scale),
            max(1, torch.get_num_threads()),
        )
        if rc != 0:
            return None
        return out.view(b, 1, hq, d)


def _self_test(kernel: Kernel) -> str | None:
    """The kernel against SDPA on a few random problems (masked, grouped, strided); None when they agree."""
    gen = torch.Generator().manual_seed(0)
    for b, hkv, g, d, n in ((3, 2, 3, 64, 37), (2, 1, 1, 128, 5), (4, 3, 12, 64, 70)):
        buf = torch.randn((b, hkv, n + 9, d), generator=gen)
        k, v = buf[:, :, :n], torch.randn((b, hkv, n, d), generator=gen)
        q = torch.randn((b, hkv * g, 1, d), generator=gen)
        mask = torch.rand((b, 1, 1, n), generator=gen) > 0.3
        mask[..., -1] = True
        got = kernel.attend(q, k, v, mask, d**-0.5)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q.view(b, hkv, g, d), k, v, attn_mask=mask, scale=d**-0.5
        ).reshape(b, 1, hkv * g, d)
        if got is None or not torch.allclose(got, ref, rtol=1e-4, atol=1e-5):
            err = "no result" if got is None else f"max difference {(got - ref).abs().max().item():.2e}"
            return f"the compiled kernel disagrees with SDPA ({err})"
    return None


def get() -> Kernel | None:
    """The kernel, built and checked once per process; None when it cannot run here (`why()` says why)."""
    with _LOCK:
        if "kernel" not in _STATE:
            lib, why = _build()
            kernel = Kernel(lib) if lib is not None else None
            if kernel is not None:
                why = _self_test(kernel)
                if why:
                    kernel = None
            _STATE.update(kernel=kernel, why=why)
        return _STATE["kernel"]


def why() -> str | None:
    """Why the kernel cannot run here (None when it can); builds it if not tried yet."""
    get()
    return _STATE.get("why")


def _drop(reason: str) -> None:
    with _LOCK:
        _STATE.update(kernel=None, why=reason)
    warnings.warn(f"decode-attention kernel dropped for this process: {reason}; decoding goes on with SDPA")


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """The attention function registered as ATTN_NAME: the kernel for a decode step of the fast loop's own cache, SDPA
    for everything else (prefill, other caches, features the kernel lacks)."""
    active = getattr(_LOCAL, "active", None)
    kernel = _STATE.get("kernel")
    out = None
    if (
        active is not None
        and kernel is not None
        and not dropout
        and kwargs.get("softcap") is None
        and kwargs.get("sliding_window") is None
        and kwargs.get("s_aux") is None
        and getattr(module, "sinks", None) is None
        and not torch.is_grad_enabled()
    ):
        layers, idx = active["layers"], getattr(module, "layer_idx", None)
        mine = isinstance(idx, int) and 0 <= idx < len(layers) and getattr(layers[idx], "keys", None) is key
        if mine:
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            out = kernel.attend(query, key, value, attention_mask, scale)
            if out is not None and not active["checked"]:
                active["checked"] = True
                ref, _ = sdpa_attention_forward(
                    module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
                )
                if not torch.allclose(out, ref, rtol=1e-4, atol=1e-5):
                    _drop(f"a decode step differed from SDPA by {(out - ref).abs().max().item():.2e}")
                    return ref, None
    if out is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    return out, None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if ATTN_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_NAME, _attention)
    if ATTN_NAME not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_NAME, sdpa_mask)


def usable(model) -> str | None:
    """Why the kernel cannot serve `model`'s decoding (None when it can)."""
    cfg = model.config
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return f"the model runs attention {getattr(cfg, '_attn_implementation', None)!r}, the kernel replaces 'sdpa'"
    text = cfg.get_text_config(decoder=True)
    heads = text.num_attention_heads
    kv = getattr(text, "num_key_value_heads", None) or heads
    d = getattr(text, "head_dim", None) or text.hidden_size // heads
    if d not in DIMS:
        return f"head dim {d}: the kernel is built for {', '.join(map(str, DIMS))}"
    if heads % kv or heads // kv > MAX_GROUP:
        return f"{heads} query heads over {kv} KV heads: the kernel takes up to {MAX_GROUP} per KV head"
    if getattr(text, "sliding_window", None) or getattr(text, "attn_logit_softcapping", None):
        return "the model uses sliding-window attention or soft-capping, which the kernel lacks"
    p = next(model.parameters())
    if p.dtype != torch.float32 or p.device.type != "cpu":
        return f"the kernel runs float32 on CPU (model: {p.dtype} on {p.device.type})"
    return why()


@contextlib.contextmanager
def decoding(model, cache):
    """For the block: `model` runs its attention through `_attention`, which uses the kernel for decode steps over
    `cache` (a DynamicCache of the fast loop) and SDPA for anything else; the model's setting is restored after."""
    if get() is None or getattr(model.config, "_attn_implementation", None) != "sdpa":
        yield
        return
    _register()
    _LOCAL.active = {"layers": cache.layers, "checked": False}
    model.config._attn_implementation = ATTN_NAME
    try:
        yield
    finally:
        model.config._attn_implementation = "sdpa"
        _LOCAL.active = None
