"""The glue between NeuronGRPOTrainer's hooks and the methods of this package: the loss types pacs / oreal, MERCI's
intrinsic reward, RLPT's dataset and judge reward, the frozen-feature forward they share, and the state they keep
across checkpoints (`online_state.pt` in every checkpoint folder, read back on resume).

Composition (checked by GRPORunConfig.validate): the neuron loss term (b) adds to every loss type; PACS and OREAL
learn from the binary outcome label (accuracy, or RLPT's judge verdict), so reward shaping on top of it (the neuron
reward (a), MERCI) does not enter them and is refused with them; OREAL's token weights can come from the NeuronSet.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from yfpo.engine.generate import generate
from yfpo.models import load_model
from yfpo.train.online import merci, oreal, pacs, rlpt

STATE_FILE = "online_state.pt"


def chat(tokenizer, text: str) -> str:
    """One user turn, chat-templated with the generation prompt (plain text for a model without a template)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text + "\n\n"


def pad_batch(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad: int):
    """TRL's layout: prompts left-padded, completions right-padded -> (input_ids, attention_mask, completion_mask)."""
    P = max(len(p) for p in prompt_ids)
    C = max(1, max(len(c) for c in completion_ids))
    ids = torch.full((len(prompt_ids), P + C), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    cmask = torch.zeros((len(prompt_ids), C), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        att[i, P - len(p) : P] = 1
        if c:
            ids[i, P : P + len(c)] = torch.tensor(c, dtype=torch.long)
            att[i, P : P + len(c)] = 1
            cmask[i, : len(c)] = 1
    return ids, att, cmask


def neuron_token_scores(margin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """OREAL token scores from the NeuronSet's per-token activation margin (B, T), standardised over the batch's
    completion tokens: the raw margin is a mean of signed z-scores over hundreds of neurons, so it sits near 0 and
    sigmoid(cumulative mean) would stay at ~0.5, i.e. every token weight at ~0 after threshold_rescale."""
    v = margin[mask.bool()]
    if v.numel() < 2:
        return torch.zeros_like(margin)
    return (margin - v.mean()) / (v.std() + 1e-6)


class OnlineMethods:
    """Method state and logic for one NeuronGRPOTrainer (built by it; `trainer` is read for model, metrics, step)."""

    def __init__(self, trainer, cfg, neuron_set=None):
        self.tr, self.cfg = trainer, cfg
        self.neurons = neuron_set
        model = trainer.accelerator.unwrap_model(trainer.model)
        width = model.config.hidden_size
        self.cfn = None
        if cfg.intrinsic == "merci":
            dim = len(neuron_set.indices) if cfg.merci_features == "neurons" else width
            self.cfn = merci.CoinFlippingNetwork(
                dim,
                coins=cfg.merci_coins,
                hidden=cfg.merci_hidden,
                lr=cfg.merci_lr,
                buffer=cfg.merci_buffer,
                batch=cfg.merci_batch,
                updates=cfg.merci_updates,
                seed=cfg.seed,
            )
        self.probe = None
        if cfg.loss_type == "oreal" and cfg.oreal_token_weights == "probe":
            torch.manual_seed(cfg.seed)  # (the probe starts at zero; its Adam has no randomness)
            self.probe = oreal.TokenProbe(width, lr=cfg.oreal_probe_lr)

    # ------------------------------------------------------------ frozen features

    def _metric(self, name: str, value: float) -> None:
        mode = "train" if self.tr.model.training else "eval"
        self.tr._metrics[mode][name].append(float(value))

    @torch.no_grad()
    def states(self, input_ids, attention_mask, keep: int, neurons: bool = False) -> torch.Tensor:
        """Per-position state features for the last keep + 1 positions (the last prompt token, then each completion
        token) from the frozen base model: LoRA adapters off (a PeftModel), TRL's reference model (full fine-tuning
        with beta > 0), else the policy itself. neurons: the NeuronSet's standardised, signed activations (B, L, K)
        instead of the last hidden state (B, L, H)."""
        tr = self.tr
        model = tr.accelerator.unwrap_model(tr.model)
        ctx = contextlib.nullcontext()
        if hasattr(model, "disable_adapter"):
            ctx = model.disable_adapter()
        elif getattr(tr, "ref_model", None) is not None:
            model = tr.ref_model
        dev = next(model.parameters()).device
        cap = tr.capture if neurons else None
        win = cap.window("state") if cap is not None else contextlib.nullcontext()
        body = model.get_decoder() if hasattr(model, "get_decoder") else None
        with ctx, win:
            if body is not None:
                h = body(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False)[0]
            else:
                kw = dict(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False)
                h = model(**kw, output_hidden_states=True).hidden_states[-1]
        if neurons:
            a = cap.acts("state").float()
            cap.clear("state")  # (a 'policy' capture of the same step stays)
            h = (a - cap.mean.to(a.device)) / cap.std.to(a.device) * cap.signs.to(a.device)
        return h[:, -(keep + 1) :].float()

    # ------------------------------------------------------------ MERCI

    def merci_reward(self, prompt_ids, completion_ids) -> list[float]:
        ids, att, cmask = pad_batch(prompt_ids, completion_ids, self.tr._tokenizer.pad_token_id)
        feats = self.states(ids, att, cmask.shape[1], neurons=self.cfg.merci_features == "neurons")[:, 1:]
        bonus = self.cfn.bonus(feats)  # novelty against the states seen before this batch
        r = merci.trajectory_reward(bonus, cmask, self.cfg.merci_aggregate)
        self.cfn.add(feats[cmask.bool()])
        loss = self.cfn.train_steps()
        self._metric("merci/bonus", (bonus * cmask).sum().item() / max(1, int(cmask.sum())))
        self._metric("merci/cfn_loss", loss)
        self._metric("merci/buffer", len(self.cfn.feats))
        return r.tolist()

    # ------------------------------------------------------------ PACS / OREAL

    def loss(self, model, inputs) -> torch.Tensor:
        tr, cfg = self.tr, self.cfg
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        ids = torch.cat([prompt_ids, completion_ids], dim=1)
        att = torch.cat([prompt_mask, completion_mask], dim=1)
        keep = completion_ids.size(1)
        logps, _, _ = tr._get_per_token_logps_and_entropies(model, ids, att, keep)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        labels, groups = inputs["outcome"], inputs["group_ids"]
        if cfg.loss_type == "pacs":
            loss, parts = pacs.pacs_loss(
                logps, old, mask, labels, groups, beta=cfg.pacs_beta, adv=cfg.pacs_adv, weight=cfg.pacs_weight
            )
            self._metric("pacs/psi", parts["psi"].mean().item())
            self._metric("pacs/psi_abs", parts["psi"].abs().mean().item())
            self._metric("pacs/critic_accuracy", ((parts["psi"] > 0) == (labels > 0.5)).float().mean().item())
            return loss
        wp = wn = None
        if cfg.oreal_token_weights != "none":
            neurons = cfg.oreal_token_weights == "neuron"
            s = self.states(ids, att, keep, neurons=neurons)[:, :-1]  # the state before each completion token
            scores = neuron_token_scores(s.mean(-1), mask) if neurons else self.probe(s).detach()
            wp, wn = oreal.token_weights(scores, mask, cfg.oreal_threshold)
            if self.probe is not None and tr.model.training:
                self._metric("oreal/probe_loss", self.probe.update(s, mask, labels))
            self._metric("oreal/pos_weight", ((wp * mask).sum() / mask.sum().clamp(min=1)).item())
        loss, parts = oreal.oreal_loss(
            logps,
            old,
            mask,
            labels,
            groups,
            ref_logps=inputs.get("ref_per_token_logps"),
            pos_weights=wp,
            neg_weights=wn,
            pos_factor=cfg.oreal_pos_factor,
            neg_factor=cfg.oreal_neg_factor,
            pos_mult_adv=cfg.oreal_pos_mult_adv,
            kl_coef=tr.beta,
            filter_groups=cfg.oreal_filter,
        )
        for k in ("pos", "neg", "kl"):
            self._metric(f"oreal/{k}_loss", parts[k].item())
        return loss

    # ------------------------------------------------------------ checkpoints

    def state(self) -> dict:
        out = {}
        if self.cfn is not None:
            out["cfn"] = self.cfn.state()
        if self.probe is not None:
            out["probe"] = self.probe.state()
        return out

    def save(self, folder: str | Path) -> None:
        st = self.state()
        if st:
            torch.save(st, Path(folder) / STATE_FILE)

    def load(self, folder: str | Path) -> None:
        path = Path(folder) / STATE_FILE
        if not (self.cfn or self.probe):
            return
        if not path.exists():
            raise FileNotFoundError(f"{path}: resuming needs the method state saved with the checkpoint (not found)")
        st = torch.load(path, weights_only=True)
        if self.cfn is not None:
            self.cfn.load(st["cfn"])
        if self.probe is not None:
            self.probe.load(st["probe"])


# ------------------------------------------------------------ TRL reward functions


class MerciReward:
    """TRL reward function: MERCI's intrinsic reward of each completion (see merci.py), weight merci_weight."""

    __name__ = "merci"

    def __init__(self):
        self.trainer = None  # set by the trainer once built

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        tr = self.trainer
        if tr is None or tr._last_prompt_ids is None:
            raise RuntimeError("MerciReward needs its NeuronGRPOTrainer (it reads the prompt ids of the batch)")
        return tr.online.merci_reward(tr._last_prompt_ids, completion_ids)


class RLPTReward:
    """TRL reward function of mode: rlpt: the judge's verdict on each completion's predicted segment (rlpt.py)."""

    __name__ = "rlpt"

    def __init__(self, judge: str, judge_tokens: int, backend: str = "auto", dtype: str = "float32", device="cpu"):
        self.judge, self.judge_tokens, self.backend = judge, judge_tokens, backend
        self.dtype, self.device = dtype, device
        self.trainer = None
        self._judge_model = None

    def judge_model(self):
        if self.judge == "policy":
            tr = self.trainer
            return tr.accelerator.unwrap_model(tr.model), tr.processing_class
        if self._judge_model is None:
            model, tok = load_model(self.judge, dtype=self.dtype, device=self.device)
            model.eval()
            self._judge_model = (model, tok)
        return self._judge_model

    def __call__(self, prompts, completions, reference, log_metric=None, **kwargs):
        model, tok = self.judge_model()
        preds = [rlpt.extract_prediction(c) for c in completions]
        asks = [chat(tok, rlpt.judge_prompt(p, r)) for p, r in zip(preds, reference)]
        outs = generate(
            model,
            tok,
            asks,
            max_new_tokens=self.judge_tokens,
            batch_size=len(asks),
            backend=self.backend,
            progress=False,
            desc="judge",
        )
        verdicts = [rlpt.parse_verdict(o.text) for o in outs]
        if log_metric is not None:
            log_metric("rlpt/judge_yes", sum(v == 1.0 for v in verdicts) / len(verdicts))
            log_metric("rlpt/judge_unparsed", sum(v is None for v in verdicts) / len(verdicts))
            log_metric("rlpt/empty_prediction", sum(not p.strip() for p in preds) / len(preds))
        return rlpt.rlpt_reward(verdicts, preds)


def rlpt_dataset(cfg, tokenizer):
    """mode: rlpt: datasets.Dataset of (chat-templated policy prompt, reference, task) from the text corpus."""
    from datasets import Dataset  # (heavy import, as in grpo.build_question_dataset)

    texts, sources = rlpt.corpus_texts(cfg.rlpt_corpus, cfg.rlpt_texts, cfg.seed, cfg.data_dir)
    exs = rlpt.make_examples(texts, cfg.rlpt_task, cfg.rlpt_context, cfg.seed, sources)
    if not exs:
        raise ValueError(f"rlpt_corpus {cfg.rlpt_corpus}: no text with enough segments for rlpt_task {cfg.rlpt_task}")
    rows = [
        {"prompt": chat(tokenizer, rlpt.policy_prompt(e)), "reference": e.reference, "task": e.task, "source": e.source}
        for e in exs
    ]
    return Dataset.from_list(rows)
