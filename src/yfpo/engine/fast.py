"""The fast path ("fast" backend): the same HF model and forward pass as the reference, driven by a lean decode loop.

What makes it faster than `model.generate` at batch 16 (measured in benchmarks/RESULTS.md, "Generation backends"):
  * batches are filled by tokens, not rows: prompts sorted by length are packed until rows x (longest prompt +
    max_new_tokens) reaches `token_budget` (default: the positions that fit KV_BUDGET_BYTES, at most MAX_ROWS
    rows), so batches are wide (decode is cheaper per token the wider the batch: on the default model a step
    costs ~45 ms plus ~1.7 ms per row, measured on 2 cores);
  * the KV cache is reserved once per batch (`_ReservedLayer`: prompt + max_new_tokens positions per row) and
    each step writes into it, where HF's DynamicCache concatenates a new, larger tensor per layer per step (that
    copy was 80% of a decode step at 128 rows, and it grows with the batch and the length);
  * the prompts are prefilled in slices of at most `PREFILL_POSITIONS` positions, each padded only to its own
    longest prompt, written into that cache (one pass over 128 rows ran at half the speed per position of a
    slice of 32 rows); the prefix every prompt of the batch shares (the chat template's system turn: 24 of the
    eval prompts' ~116 tokens) is run once and its cache copied into every row;
  * the LM head is a packed-weight GEMM (`_PackedHead`: MKL packs the 49152x576 weight once per batch, not on
    every call; ~21 vs ~27 ms a step at 128 rows), used only once its logits equal the model's bit for bit;
  * finished rows leave the batch: the last running rows are moved into their slots (a few rows copied, not the
    whole cache), so late steps only pay for the rows still running;
  * n samples of one prompt share one prefill: the prompt is processed once and its cache repeated n times;
  * no logits processors / stopping-criteria machinery per step: greedy is an argmax, sampling is temperature
    then top-p then a multinomial draw, as in HF; Python's garbage collector is paused for the batch;
  * with `attn_kernel` (the "fast-attn" backend) the decode steps attend through yfpo.engine.attn_kernel's compiled
    kernel instead of SDPA (SDPA's CPU kernel runs a decode step's many tiny grouped-head products far below the
    memory's speed; the kernel did a 256-row layer in half the time on a Zen 4).
Greedy outputs are meant to be identical to the HF reference (same weights, same float32 ops; the only differences
are the padding a row sees, the batch it runs in and the shared prefix run as one row, the same kind of freedom the
reference's own batching has); how often they are is measured, not assumed. The library call this would become:
transformers' continuous batching (`generate_batch`), once it runs well on CPU (measured: see RESULTS.md).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import time

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from yfpo.engine import attn_kernel as ak
from yfpo.engine.common import Generation, PaddingSide, StopWatch, batch_seed, eos_ids, finish_row
from yfpo.utils import progress as bar

KV_BUDGET_BYTES = 6 << 30  # the KV cache one batch may reserve (pages are committed only as positions fill)
# measured on the default model, 256 eval prompts x 256 new tokens: 256 rows 10% faster than 128 on a 2-core AVX2
# EPYC (32 MiB L3), 3% on a 2-core AVX-512 Xeon (benchmarks/RESULTS.md, eighth session); ~2.1 GB more memory
MAX_ROWS = 256
PREFILL_POSITIONS = 2048  # prompt positions per prefill pass
PACKED_HEAD_MIN_ROWS = 64  # batches this wide compute the LM head with a packed weight (0: never)
PACKED_HEAD_MIN_SHARE = 0.75  # ... while at least this share of its rows still runs (padded to all of them)


def default_token_budget(model) -> int:
    """KV positions per batch that fit KV_BUDGET_BYTES for this model: for the 135M default (30 layers, 3 KV heads of
    64, float32: 45 KiB a position) ~140k positions, i.e. 313 rows of a 190-token prompt + 256 new tokens."""
    cfg = model.config.get_text_config(decoder=True)
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_position = 2 * cfg.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()
    return max(1024, KV_BUDGET_BYTES // per_position)


class _ReservedLayer(DynamicLayer):
    """A DynamicLayer whose keys/values live in a buffer reserved up front ([rows, heads, capacity, dim]): `update`
    writes the new positions in place and returns views of the filled part (the same values DynamicLayer's
    concatenation gives, without a new allocation and copy per step). Past the capacity it grows by doubling."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self._k = self._v = None
        self._n = 0

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

    def reserve(self, rows: int, heads: int, k_dim: int, v_dim: int, dtype, device) -> None:
        self.dtype, self.device = dtype, device
        self._k = torch.empty((rows, heads, self.capacity, k_dim), dtype=dtype, device=device)
        self._v = torch.empty((rows, heads, self.capacity, v_dim), dtype=dtype, device=device)
        self._n = 0
        self.is_initialized = True
        self._views()

    def write_rows(self, start: int, keys: torch.Tensor, values: torch.Tensor, length: int, prefix: int = 0) -> None:
        """Put a prefill slice's cache (rows start..) into the buffer of `length` positions: its first `prefix`
        positions (the shared prompt prefix) at the start, the rest right-aligned; the positions between are zeroed
        (masked, but they must not hold NaN garbage)."""
        rows, own = slice(start, start + keys.shape[0]), keys.shape[-2] - prefix
        cut = length - own
        self._n = length
        if prefix:
            self._k[rows, :, :prefix], self._v[rows, :, :prefix] = keys[:, :, :prefix], values[:, :, :prefix]
        self._k[rows, :, cut:length], self._v[rows, :, cut:length] = keys[:, :, prefix:], values[:, :, prefix:]
        if cut > prefix:
            self._k[rows, :, prefix:cut], self._v[rows, :, prefix:cut] = 0, 0
        self._views()

    def update(self, key_states, value_states, *args, **kwargs):
        if self._k is None:
            b, h, _, d = key_states.shape
            self.reserve(b, h, d, value_states.shape[-1], key_states.dtype, key_states.device)
        m = self._n + key_states.shape[-2]
        if m > self._k.shape[-2]:
            grown = max(m, 2 * self._k.shape[-2])
            k = self._k.new_empty(self._k.shape[:2] + (grown, self._k.shape[-1]))
            v = self._v.new_empty(self._v.shape[:2] + (grown, self._v.shape[-1]))
            k[:, :, : self._n], v[:, :, : self._n] = self._k[:, :, : self._n], self._v[:, :, : self._n]
            self._k, self._v = k, v
        self._k[:, :, self._n : m] = key_states
        self._v[:, :, self._n : m] = value_states
        self._n = m
        self._views()
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is not None:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (in that order). When every kept row moves down or stays (indices[j] >= j, no
        repeats: sorted indices, or the decode loop's fill-the-holes order), rows are moved in place and only the
        filled positions of the rows that move are copied; otherwise the buffer is indexed (a copy)."""
        if self._k is None:
            return
        idx = indices.tolist()
        if len(set(idx)) == len(idx) and all(i >= j for j, i in enumerate(idx)):
            for j, i in enumerate(idx):
                if i != j:
                    self._k[j, :, : self._n] = self._k[i, :, : self._n]
                    self._v[j, :, : self._n] = self._v[i, :, : self._n]
            self._k, self._v = self._k[: len(idx)], self._v[: len(idx)]
        else:
            self._k, self._v = self._k[indices], self._v[indices]
        self._views()


def reserved_cache(config, capacity: int) -> DynamicCache:
    """A DynamicCache for `config` whose full-attention layers are `_ReservedLayer`s of `capacity` positions (other
    layer kinds, e.g. sliding-window ones, are kept as transformers makes them)."""
    cache = DynamicCache(config=config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_ReservedLayer(capacity) for _ in cache.layers]
    return cache


class _PackedHead:
    """The LM head as MKL's packed-weight GEMM (`torch.ops.mkl._mkl_linear`, what inductor uses for float32 linear
    layers on CPU): the weight is packed once per batch for its row count instead of on every call (the default
    model's 49152x576 head at 128 rows: ~21 vs ~27 ms a step, bit-identical; the packed copy is ~2x the weight). A
    step with fewer rows is padded to the packed count while at least PACKED_HEAD_MIN_SHARE of them run (still
    faster), else it is a plain linear. `ready` only after the first decode step's logits from it equal the model's
    own bit for bit (a head with a bias, scaling or soft-capping, or another kernel, never gets there)."""

    def __init__(self, model, rows: int):
        head = model.get_output_embeddings()
        self.weight, self.rows = head.weight.detach(), rows
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(self.weight, rows)
        self.decoder = model.get_decoder()
        self.ready = False
        self.seen = None
        self._hook = head.register_forward_hook(self._capture)

    @classmethod
    def maybe(cls, model, rows: int) -> _PackedHead | None:
        if not PACKED_HEAD_MIN_ROWS or rows < PACKED_HEAD_MIN_ROWS or not torch._C.has_mkl:
            return None
        head = getattr(model, "get_output_embeddings", lambda: None)()
        if not isinstance(head, torch.nn.Linear) or head.bias is not None or not hasattr(model, "get_decoder"):
            return None
        if head.weight.dtype != torch.float32 or head.weight.device.type != "cpu":
            return None
        try:
            return cls(model, rows)
        except (RuntimeError, AttributeError, NotImplementedError):
            return None

    def _capture(self, module, args, output):
        self.seen = args[0][:, -1, :]

    def check(self, logits: torch.Tensor) -> None:
        """After a step through the model: use the packed head from now on if it gives exactly the model's logits."""
        self._hook.remove()
        self.ready = self.seen is not None and torch.equal(self(self.seen), logits)
        self.seen = None

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        m = h.shape[0]
        if m == self.rows:
            return torch.ops.mkl._mkl_linear(h.contiguous(), self.packed, self.weight, None, self.rows)
        if m >= PACKED_HEAD_MIN_SHARE * self.rows:
            padded = h.new_zeros((self.rows, h.shape[1]))
            padded[:m] = h
            return torch.ops.mkl._mkl_linear(padded, self.packed, self.weight, None, self.rows)[:m]
        return torch.nn.functional.linear(h, self.weight)

    def close(self) -> None:
        self._hook.remove()
        self.packed = None


def fill_order(done: list[bool]) -> list[int]:
    """The rows to keep when the `done` ones leave, in their new order: a running row stays in its slot, and the
    slots of finished rows are filled by the last running rows (so only those move)."""
    keep = [j for j, d in enumerate(done) if not d]
    k = len(keep)
    movers = [j for j in keep if j >= k]
    order = []
    for j in range(k):
        order.append(j if not done[j] else movers.pop())
    return order


def pack_batches(
    lengths: list[int], max_new_tokens: int, token_budget: int, min_rows: int = 1, max_rows: int | None = None
) -> list[list[int]]:
    """Indices sorted longest-first, cut so each batch has rows x (its longest prompt + max_new_tokens) <= budget.

    A batch always gets at least `min_rows` rows (and one row even when that alone is over the budget)."""
    max_rows = max_rows or MAX_ROWS
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    i = 0
    while i < len(order):
        longest = lengths[order[i]] + max_new_tokens
        rows = max(min_rows, 1, token_budget // max(longest, 1))
        batches.append(order[i : i + min(rows, max_rows)])
        i += len(batches[-1])
    return batches


def _sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    gen: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """HF's order: temperature, then top-p (keep the smallest set with mass >= top_p), then a draw: a multinomial
    one from `gen` (one stream for the batch), or, given `uniforms` (one value in [0, 1) per row, from the row's own
    stream: RowStreams), by inverse CDF, so a row's token depends on its own logits and draw only."""
    scores = logits / temperature if temperature not in (None, 1.0) else logits
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - top_p)
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
    probs = scores.softmax(dim=-1)
    if uniforms is None:
        return torch.multinomial(probs, 1, generator=gen).squeeze(1)
    cdf = probs.cumsum(dim=-1)
    # the first token whose cumulative mass exceeds u x total (right=True: a token of zero mass is never picked)
    nxt = torch.searchsorted(cdf, (uniforms.to(cdf.dtype)[:, None] * cdf[:, -1:]).contiguous(), right=True)
    return nxt.squeeze(1).clamp_(max=probs.shape[-1] - 1)


def row_seed(seed: int, sample: int) -> int:
    """The seed of sample `sample` of a prompt whose per-prompt seed is `seed` (a 63-bit hash of the two)."""
    h = hashlib.sha256(f"{seed}|{sample}".encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFFFFFFFFFFFFFF


class RowStreams:
    """One random stream per generated row, so a row's samples depend only on (its prompt's seed, its sample index)
    and never on the batch it runs in: row r's stream is a torch.Generator seeded with row_seed(seed, sample), from
    which it draws one uniform per step (all `steps` drawn up front: one call per row per batch)."""

    def __init__(self, seeds: list[int], n: int, steps: int):
        self.u = torch.empty((len(seeds) * n, max(steps, 1)), dtype=torch.float64)
        for i, s in enumerate(seeds):
            for j in range(n):
                g = torch.Generator().manual_seed(row_seed(int(s), j))
                self.u[i * n + j] = torch.rand(self.u.shape[1], generator=g, dtype=torch.float64)

    def draw(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        """The uniforms of the original rows `rows` (indices) at decode step `step`."""
        return self.u[rows, step]


@contextlib.contextmanager
def _gc_paused():
    """Python's cyclic garbage collector off for the block (a decode step makes thousands of short-lived objects, and
    a full collection walks the model's: ~2% of a decode run's samples); nothing in the decode loop makes cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@torch.no_grad()
@_gc_paused()
def decode_batch(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: list[int],
    n: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    gen: torch.Generator | None = None,
    stopper: StopWatch | None = None,
    attn_kernel: bool = False,
    streams: RowStreams | None = None,
) -> list[tuple[list[int], str]]:
    """Decode a left-padded batch; returns per row (prompt-major, n per prompt) its new tokens and finish reason
    (eos: ended by an end-of-turn token, included; stop: a stop string was completed; length). Runs with the
    garbage collector paused (`_gc_paused`). attn_kernel: decode steps attend through yfpo.engine.attn_kernel's
    compiled kernel (when it is built and serves this model; the prefill stays SDPA). streams: per-row random
    streams (RowStreams, rows prompt-major as returned) used instead of `gen` when sampling.
    Long: the decode hot loop: per-step work on tensors kept in locals (a call per step per helper costs measurable
    time at 256 rows)."""
    cache = reserved_cache(model.config, input_ids.shape[1] + max_new_tokens)
    pos = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    logits, attention_mask = _prefill(model, input_ids, attention_mask, pos, cache)
    if n > 1:  # one prefill per prompt, its cache repeated for the n samples
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        attention_mask = attention_mask.repeat_interleave(n, dim=0)
        pos = pos.repeat_interleave(n, dim=0)
    rows = logits.shape[0]
    alive = torch.arange(rows)  # original row index of each row still in the batch
    tokens: list[list[int]] = [[] for _ in range(rows)]
    finish = ["length"] * rows
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long) if eos_ids else None
    next_pos = pos[:, -1:] + 1
    head = _PackedHead.maybe(model, rows) if max_new_tokens > 2 else None
    kernel_ctx = contextlib.nullcontext()
    if attn_kernel:
        kernel_ctx = ak.decoding(model, cache)
    try:
        with kernel_ctx:
            for step in range(max_new_tokens):
                if not do_sample:
                    nxt = logits.argmax(dim=-1)
                else:
                    u = streams.draw(alive, step) if streams is not None else None
                    nxt = _sample_next(logits, temperature, top_p, gen, u)
                done = torch.isin(nxt, eos) if eos is not None else torch.zeros_like(nxt, dtype=torch.bool)
                ids = nxt.tolist()
                for j, r in enumerate(alive.tolist()):
                    tokens[r].append(ids[j])
                    if done[j]:
                        finish[r] = "eos"
                    elif stopper is not None and stopper.hit(tokens[r]):
                        finish[r] = "stop"
                        done[j] = True
                if step == max_new_tokens - 1:
                    break
                if bool(done.any()):
                    if bool(done.all()):
                        break
                    keep = torch.tensor(fill_order(done.tolist()), dtype=torch.long)
                    alive, nxt, next_pos, attention_mask = alive[keep], nxt[keep], next_pos[keep], attention_mask[keep]
                    cache.batch_select_indices(keep)
                attention_mask = torch.cat(
                    [attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1
                )
                step_in = dict(
                    input_ids=nxt.unsqueeze(1),
                    attention_mask=attention_mask,
                    position_ids=next_pos,
                    past_key_values=cache,
                    use_cache=True,
                )
                if head is not None and head.ready:
                    logits = head(head.decoder(**step_in).last_hidden_state[:, -1, :])
                else:
                    logits = model(**step_in).logits[:, -1, :].float()
                    if head is not None:  # the first step: keep the packed head only if it gives these logits exactly
                        head.check(logits)
                        if not head.ready:
                            head.close()
                            head = None
                next_pos = next_pos + 1
    finally:
        if head is not None:
            head.close()
    return list(zip(tokens, finish))


def shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading prompt tokens every row of a left-padded batch has in common (a chat template's system turn,
    a few-shot block), leaving each row at least one token of its own; 0 for one row or another padding layout."""
    rows, length = input_ids.shape
    if rows < 2:
        return 0
    real = attention_mask.long().sum(dim=1)
    if not bool((attention_mask.bool() == (torch.arange(length) >= (length - real)[:, None])).all()):
        return 0
    shortest = int(real.min())
    if shortest < 2:
        return 0
    heads = input_ids.gather(1, (length - real)[:, None] + torch.arange(shortest)[None])
    same = (heads == heads[:1]).all(dim=0)
    p = shortest if bool(same.all()) else int((~same).long().argmax())
    return min(p, shortest - 1)


def _prefill(model, input_ids, attention_mask, pos, cache) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts' forward pass; returns the last position's logits and the attention mask of the cache it leaves.

    With a reserved cache: the prompt prefix all rows share is run once (one row) and its cache expanded; the rest
    runs in slices of rows of at most PREFILL_POSITIONS positions each, every slice padded only to its own longest
    prompt (rows come sorted by length, so slices are nearly unpadded), their caches written into `cache` as
    [shared prefix | zeros | own tokens] (the zeros masked)."""
    rows, length = input_ids.shape
    layers = cache.layers
    if not all(isinstance(layer, _ReservedLayer) for layer in layers):
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float(), attention_mask
    p = shared_prefix(input_ids, attention_mask)
    real = attention_mask.long().sum(dim=1)
    own = real - p
    # own tokens only: the shared prefix comes from its cache, not from these columns
    mask = (torch.arange(length) >= (length - own)[:, None]).to(attention_mask.dtype)
    pre = None
    if p:
        pre = DynamicCache(config=model.config)
        first = length - int(real[0])
        model(
            input_ids=input_ids[:1, first : first + p],
            attention_mask=attention_mask.new_ones((1, p)),
            position_ids=torch.arange(p)[None],
            past_key_values=pre,
            use_cache=True,
            logits_to_keep=1,
        )
    own_l = own.tolist()
    parts, start = [], 0
    while start < rows:
        longest = max(int(own_l[start]), 1)
        stop = start + 1
        while stop < rows and (stop - start + 1) * max(longest, int(own_l[stop])) <= PREFILL_POSITIONS:
            longest = max(longest, int(own_l[stop]), 1)
            stop += 1
        cut = length - longest
        sl, n_rows = slice(start, stop), stop - start
        part = DynamicCache(config=model.config)
        slice_mask = mask[sl, cut:]
        if pre is not None:
            for idx, layer in enumerate(pre.layers):
                part.update(
                    layer.keys.expand(n_rows, -1, -1, -1).contiguous(),
                    layer.values.expand(n_rows, -1, -1, -1).contiguous(),
                    idx,
                )
            slice_mask = torch.cat([mask.new_ones((n_rows, p)), slice_mask], dim=1)
        out = model(
            input_ids=input_ids[sl, cut:],
            attention_mask=slice_mask,
            position_ids=pos[sl, cut:],
            past_key_values=part,
            use_cache=True,
            logits_to_keep=1,
        )
        parts.append(out.logits[:, -1, :].float())
        for mine, theirs in zip(layers, part.layers):
            k, v = theirs.keys, theirs.values
            if mine._k is None:
                mine.reserve(rows, k.shape[1], k.shape[-1], v.shape[-1], k.dtype, k.device)
            mine.write_rows(start, k, v, length, prefix=p)
        del part
        start = stop
    if p:
        mask[:, :p] = 1
    return torch.cat(parts), mask


@torch.no_grad()
def generate_fast(
    model,
    tokenizer,
    prompts,
    *,
    max_new_tokens,
    batch_size,
    stop,
    do_sample,
    temperature,
    top_p,
    num_return_sequences,
    seed,
    progress,
    desc,
    token_budget=None,
    attn_kernel=False,
    seeds=None,
    **_,
) -> list[Generation]:
    """The "fast" backend: the HF model driven by yfpo.engine.fast's decode loop (see there for what it changes);
    with attn_kernel ("fast-attn"), its decode steps attend through yfpo.engine.attn_kernel's compiled kernel."""
    n = num_return_sequences
    results: list[Generation | None] = [None] * (len(prompts) * n)
    eos = eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    budget = (token_budget or default_token_budget(model)) // n  # n samples share a prompt's prefill, not its cache
    batches = pack_batches(lengths, max_new_tokens, budget, min_rows=max(1, batch_size // n))
    stopper = StopWatch(tokenizer, stop) if stop else None
    was_training = model.training
    model.eval()
    total_new, t0 = 0, time.time()
    pbar = bar(total=len(prompts) * n, desc=desc, unit="seq", disable=None if progress else True)
    try:
        with PaddingSide(tokenizer):
            for idx in batches:
                texts = [prompts[i] for i in idx]
                enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                gen = streams = None
                if do_sample and seeds is not None:
                    streams = RowStreams([seeds[i] for i in idx], n, max_new_tokens)
                elif do_sample:
                    gen = torch.Generator(device=device).manual_seed(batch_seed(seed, texts))
                rows = decode_batch(
                    model,
                    enc.input_ids,
                    enc.attention_mask,
                    max_new_tokens=max_new_tokens,
                    eos_ids=eos,
                    n=n,
                    do_sample=do_sample,
                    temperature=temperature,
                    top_p=top_p,
                    gen=gen,
                    stopper=stopper,
                    attn_kernel=attn_kernel,
                    streams=streams,
                )
                for r, (toks, _finish) in enumerate(rows):
                    n_tok, text, finish = finish_row(toks, tokenizer, eos, None, stop)
                    results[idx[r // n] * n + (r % n)] = Generation(
                        text, n_tok, finish == "length", finish, toks[:n_tok]
                    )
                    total_new += n_tok
                pbar.update(len(rows))
                pbar.set_postfix(tok_s=f"{total_new / max(time.time() - t0, 1e-9):.0f}")
    finally:
        pbar.close()
        if was_training:
            model.train()
    return results  # type: ignore[return-value]


def generate_fast_attn(model, tokenizer, prompts, **kw) -> list[Generation]:
    """The "fast-attn" backend: the fast loop with the compiled decode-attention kernel."""
    return generate_fast(model, tokenizer, prompts, attn_kernel=True, **kw)


_BF16_COPIES: dict = {}


def generate_fast_bf16(model, tokenizer, prompts, **kw) -> list[Generation]:
    """The fast loop on a bfloat16 copy of the model (made once per model and weight version, kept for the process:
    a model updated in place since, as in training, gets a fresh copy)."""
    if model.dtype != torch.bfloat16:
        key = (id(model), sum(p._version for p in model.parameters()))
        if _BF16_COPIES.get("key") != key:
            _BF16_COPIES.clear()
            _BF16_COPIES.update(key=key, model=copy.deepcopy(model).to(torch.bfloat16).eval())
        model = _BF16_COPIES["model"]
    return generate_fast(model, tokenizer, prompts, **kw)
