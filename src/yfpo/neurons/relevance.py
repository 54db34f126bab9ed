"""Neuron relevance over teacher-forced responses, batched: one backward gives every sample's relevance.

A neuron is one unit of the down-projection input ``u`` (models/arch.py). For a batch of
right-padded (prompt, response) sequences:

- target of sample b = sum over its *target positions* t of the logit of the gold next token
  ``ids[t+1]``; target positions are the last prompt token up to the second-to-last response token
  (exactly the positions whose next token is a response token);
- relevance of neuron (l, j) for sample b = sum over the same positions of ``u * grad(u)``,
  accumulated in float32, then normalised per sample by the sum of |relevance| over all neurons;
- activation statistics (mean, std, probability of a positive activation-function output) are taken over
  the *response positions*: the positions of the response tokens themselves (first response token up to
  the last, end-of-turn included). That is the convention of the neuron reward phi in stage 3 (the
  trainer's completion mask), so the NeuronSet's mu/sigma standardise exactly the activations phi averages.
  (The target positions are the same span shifted one to the left: a response token's logit is read at the
  position before it, so relevance belongs there.)

Samples never interact (causal attention, right padding), so the gradient of the summed target gives
each sample its own ``u * grad(u)``. ``method="attnlrp"`` runs the pass inside ``lrp.attnlrp(model)``;
``"actgrad"`` is the same pass with plain gradients (activation x gradient baseline). Passes over a corpus
write one small file per batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from yfpo.models import arch
from yfpo.neurons.lrp import attnlrp

METHODS_WITH_BACKWARD = ("attnlrp", "actgrad")
# where activation statistics are taken (recorded in every NeuronSet's provenance; stage 3's phi uses the same)
POSITIONS = "response_tokens"
POSITIONS_TEXT = (
    "activations at the positions of the response tokens themselves (first response token to the "
    "last, end-of-turn included), as phi in stage 3 averages them"
)


# ---------------------------------------------------------------- encoding
@dataclass
class Encoded:
    id: str
    input_ids: list[int]
    start: int  # first target position (last prompt token)
    end: int  # one past the last target position; response positions are start + 1 .. end (inclusive)


def encode_record(tokenizer, prompt: str, response: str, max_length: int = 256, rid: str = "") -> Encoded:
    """Chat-template a (user prompt, assistant response) pair; the response (with its end-of-turn
    token) is what is teacher-forced. Long prompts are cut from the left, long responses from the right."""
    user = [{"role": "user", "content": prompt}]
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
    head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    if not full.startswith(head):
        raise ValueError(
            f"record {rid!r}: the chat template's prompt part is not a prefix of the full chat; "
            "cannot find the response tokens"
        )
    p_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(full[len(head) :].rstrip("\n"), add_special_tokens=False)["input_ids"]
    if len(r_ids) < 1:
        raise ValueError(f"record {rid!r}: empty response")
    max_prompt = max(max_length // 2, max_length - len(r_ids))
    if len(p_ids) > max_prompt:
        p_ids = p_ids[-max_prompt:]
    ids = (p_ids + r_ids)[:max_length]
    start = len(p_ids) - 1
    end = len(ids) - 1
    if end <= start:
        raise ValueError(f"record {rid!r}: no response token fits in max_length={max_length}")
    return Encoded(rid, ids, start, end)


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask, target_mask (B, T) (positions whose next token is a response
    token), response_mask (B, T) (positions of the response tokens) and gold next tokens (B, T)."""
    T = max(len(e.input_ids) for e in batch)
    B = len(batch)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    att = torch.zeros((B, T), dtype=torch.long)
    tmask = torch.zeros((B, T), dtype=torch.bool)
    rmask = torch.zeros((B, T), dtype=torch.bool)
    for b, e in enumerate(batch):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
        att[b, : len(e.input_ids)] = 1
        tmask[b, e.start : e.end] = True
        rmask[b, e.start + 1 : e.end + 1] = True
    gold = torch.full((B, T), pad_id, dtype=torch.long)
    gold[:, :-1] = ids[:, 1:]
    return {"input_ids": ids, "attention_mask": att, "target_mask": tmask, "response_mask": rmask, "gold": gold}


# ---------------------------------------------------------------- target
def gold_logit_target(
    model: nn.Module,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    gold: torch.Tensor,
    inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample target (B,): sum over target positions of the gold next-token logit.

    Only the gold rows of the LM head are evaluated (same value as ``model(...).logits`` gathered)."""
    m = arch.unwrap(model)
    base = m.base_model
    h = base(
        input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state
    head = arch.lm_head(m)
    rows, cols = target_mask.nonzero(as_tuple=True)
    g = gold[rows, cols].to(h.device)
    hs = h[rows.to(h.device), cols.to(h.device)]
    logit = (hs * head.weight[g].to(hs.dtype)).sum(-1)
    if getattr(head, "bias", None) is not None:
        logit = logit + head.bias[g]
    cap = getattr(m.config, "final_logit_softcapping", None)
    if cap:
        logit = torch.tanh(logit / cap) * cap
    out = torch.zeros(target_mask.shape[0], dtype=logit.dtype, device=logit.device)
    return out.index_add(0, rows.to(logit.device), logit)


# ---------------------------------------------------------------- recording
class NeuronRecorder:
    """Hooks on every layer's down-projection input (and activation) that accumulate, for a batch:
    per-sample relevance sums (B, L, W) over target positions (when a backward runs), and activation sum /
    sum of squares / count of positive activation function outputs (L, W) over `stats_mask` (the response
    positions; default: the target positions)."""

    def __init__(
        self,
        model: nn.Module,
        target_mask: torch.Tensor,
        want_relevance: bool = True,
        stats_mask: torch.Tensor | None = None,
    ):
        self.model = arch.unwrap(model)
        self.L, self.W = arch.neuron_shape(self.model)
        self.mask = target_mask
        self.stats_mask = target_mask if stats_mask is None else stats_mask
        self.want_relevance = want_relevance
        B = target_mask.shape[0]
        self.relevance = torch.zeros(B, self.L, self.W, dtype=torch.float32)
        self.act_sum = torch.zeros(self.L, self.W, dtype=torch.float64)
        self.act_sq = torch.zeros(self.L, self.W, dtype=torch.float64)
        self.act_pos = torch.zeros(self.L, self.W, dtype=torch.float64)
        self.n_tokens = int(self.stats_mask.sum())  # tokens the activation statistics cover
        self._handles: list = []

    def _pre_hook(self, layer: int):
        def hook(module, args):
            u = args[0]
            mask = self.mask.to(u.device)
            uf = u.detach().float()[self.stats_mask.to(u.device)]  # (N, W)
            self.act_sum[layer] += uf.sum(0).double().cpu()
            self.act_sq[layer] += (uf * uf).sum(0).double().cpu()
            if self.want_relevance and u.requires_grad:
                ud = u.detach()  # not `u`: a hook holding its own tensor is a reference cycle (leaks the graph)

                def grad_hook(g, ud=ud, layer=layer, mask=mask):
                    r = (ud.float() * g.float()) * mask.unsqueeze(-1)
                    self.relevance[:, layer] += r.sum(1).cpu()

                u.register_hook(grad_hook)

        return hook

    def _act_hook(self, layer: int):
        def hook(module, args, out):
            smask = self.stats_mask.to(out.device)
            self.act_pos[layer] += (out.detach()[smask] > 0).sum(0).double().cpu()

        return hook

    def __enter__(self) -> "NeuronRecorder":
        a = arch.get_arch(self.model)
        for l in range(self.L):
            self._handles.append(arch.down_proj(self.model, l).register_forward_pre_hook(self._pre_hook(l)))
            act = getattr(arch.mlp(self.model, l), a.act)
            if isinstance(act, nn.Module):
                self._handles.append(act.register_forward_hook(self._act_hook(l)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def normalise(rel: torch.Tensor) -> torch.Tensor:
    """Divide each sample's (L, W) relevance by its sum of absolute values (zero stays zero)."""
    denom = rel.abs().flatten(1).sum(1).clamp_min(1e-30)
    return rel / denom.view(-1, *([1] * (rel.dim() - 1)))


def batch_relevance(
    model: nn.Module, batch: dict[str, torch.Tensor], method: str = "attnlrp", device: str | torch.device = "cpu"
) -> tuple[NeuronRecorder, torch.Tensor]:
    """Run one batch: returns the recorder (raw relevance (B,L,W), activation sums) and the targets (B,)."""
    if method not in METHODS_WITH_BACKWARD and method != "forward":
        raise ValueError(
            f"batch_relevance: method must be one of {METHODS_WITH_BACKWARD + ('forward',)}, got {method!r}"
        )
    ids = batch["input_ids"].to(device)
    att = batch["attention_mask"].to(device)
    tm = batch["target_mask"]
    rec = NeuronRecorder(model, tm, want_relevance=method != "forward", stats_mask=batch.get("response_mask"))
    ctx = attnlrp(model) if method == "attnlrp" else contextlib.nullcontext()
    grad_ctx = torch.enable_grad() if method != "forward" else torch.no_grad()
    with ctx, rec, grad_ctx, no_param_grads(model):
        # Gradients are needed for activations only: the graph starts at the embeddings, no weight grads.
        emb = arch.embed_tokens(model)(ids).detach()
        if method != "forward":
            emb.requires_grad_(True)
        target = gold_logit_target(model, None, att, tm.to(device), batch["gold"].to(device), inputs_embeds=emb)
        if method != "forward":
            target.sum().backward()
    return rec, target.detach().float().cpu()


# ---------------------------------------------------------------- corpus passes
@dataclass
class CorpusStats:
    """Per-neuron statistics of one corpus pass (all (L, W) float32 tensors)."""

    relevance_mean: torch.Tensor | None  # mean over samples of normalised relevance
    relevance_sq_mean: torch.Tensor | None
    act_mean: torch.Tensor
    act_std: torch.Tensor
    act_prob: torch.Tensor  # fraction of response tokens with activation-function output > 0
    n_samples: int
    n_tokens: int
    method: str


def _batches(encoded: list[Encoded], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i].input_ids), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def corpus_relevance(
    model: nn.Module,
    tokenizer,
    records: Sequence,
    *,
    method: str = "attnlrp",
    batch_size: int = 4,
    max_length: int = 256,
    work_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "",
) -> CorpusStats:
    """Relevance (and activation statistics) of every neuron over `records` (objects with id, prompt,
    response). With `work_dir`, each finished batch is saved there and skipped on a rerun.
    Long: the batch loop keeps the running sums of every statistic it returns in locals, with its resume per batch."""
    from yfpo.utils import atomic_write_json, stable_hash
    from yfpo.utils import progress as pbar

    model.eval()
    encoded = [encode_record(tokenizer, r.prompt, r.response, max_length, r.id) for r in records]
    plan = _batches(encoded, batch_size)
    L, W = arch.neuron_shape(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    wd = Path(work_dir) if work_dir is not None else None
    if wd is not None:
        wd.mkdir(parents=True, exist_ok=True)
        key = {
            "ids": [e.id for e in encoded],
            "lens": [len(e.input_ids) for e in encoded],
            "batch_size": batch_size,
            "method": method,
            "shape": [L, W],
            "max_length": max_length,
            "positions": POSITIONS,
        }
        meta = wd / "plan.json"
        h = stable_hash(key)
        if meta.exists() and json.loads(meta.read_text()).get("hash") != h:
            stale = sorted(wd.glob("batch_*.pt"))
            for f in stale:
                f.unlink()
        atomic_write_json(meta, {"hash": h, "n": len(encoded), "batches": len(plan)})
    rel_sum = torch.zeros(L, W, dtype=torch.float64)
    rel_sq = torch.zeros(L, W, dtype=torch.float64)
    act_sum = torch.zeros(L, W, dtype=torch.float64)
    act_sq = torch.zeros(L, W, dtype=torch.float64)
    act_pos = torch.zeros(L, W, dtype=torch.float64)
    n_tok = 0
    it = pbar(
        range(len(plan)),
        total=len(plan),
        desc=desc or f"{method} relevance",
        unit="batch",
        disable=None if progress else True,
    )
    for bi in it:
        f = wd / f"batch_{bi:05d}.pt" if wd is not None else None
        if f is not None and f.exists():
            part = torch.load(f)
        else:
            batch = collate([encoded[i] for i in plan[bi]], pad)
            rec, _ = batch_relevance(model, batch, method, device)
            part = {"act_sum": rec.act_sum, "act_sq": rec.act_sq, "act_pos": rec.act_pos, "n_tokens": rec.n_tokens}
            if method != "forward":
                nr = normalise(rec.relevance).double()
                part["rel_sum"] = nr.sum(0)
                part["rel_sq"] = (nr * nr).sum(0)
            if f is not None:
                tmp = f.with_suffix(".tmp")
                torch.save(part, tmp)
                tmp.replace(f)
        act_sum += part["act_sum"]
        act_sq += part["act_sq"]
        act_pos += part["act_pos"]
        n_tok += int(part["n_tokens"])
        if "rel_sum" in part:
            rel_sum += part["rel_sum"]
            rel_sq += part["rel_sq"]
    n = len(encoded)
    mean = act_sum / max(n_tok, 1)
    var = (act_sq / max(n_tok, 1) - mean * mean).clamp_min(0)
    has_rel = method != "forward"
    return CorpusStats(
        relevance_mean=(rel_sum / n).float() if has_rel else None,
        relevance_sq_mean=(rel_sq / n).float() if has_rel else None,
        act_mean=mean.float(),
        act_std=var.sqrt().float(),
        act_prob=(act_pos / max(n_tok, 1)).float(),
        n_samples=n,
        n_tokens=n_tok,
        method=method,
    )


def input_relevance(
    model: nn.Module, batch: dict[str, torch.Tensor], method: str = "attnlrp"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample input-embedding relevance sum (B,), per-sample target (B,)): for conservation checks."""
    m = arch.unwrap(model)
    emb = arch.embed_tokens(m)(batch["input_ids"]).detach().requires_grad_(True)
    ctx = attnlrp(model) if method == "attnlrp" else contextlib.nullcontext()
    with ctx, torch.enable_grad():
        target = gold_logit_target(
            model, None, batch["attention_mask"], batch["target_mask"], batch["gold"], inputs_embeds=emb
        )
        target.sum().backward()
    rel = (emb * emb.grad).sum((1, 2))
    return rel.detach(), target.detach()


@contextlib.contextmanager
def no_param_grads(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the block (relevance needs activation grads only)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
