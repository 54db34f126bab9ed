"""Step-DPO tokenization (SPEC section 5): a step completion gets no end-of-sequence token; plain pairs keep TRL's."""

from __future__ import annotations

from test_train_common import cfg_for, make_yfpo, pair_rows, step_rows, write_jsonl


def _check_rows(tr, rows, step: bool):
    tok = tr.processing_class
    eos = tok.eos_token_id
    ds = tr.train_dataset
    assert len(ds) == len(rows)
    for ex in ds:
        for k in ("chosen_ids", "rejected_ids"):
            ids = ex[k]
            assert ids, k
            if step:
                assert eos not in ids, (k, tok.decode(ids))
            else:
                assert ids[-1] == eos and eos not in ids[:-1], (k, tok.decode(ids))
    return ds


def test_step_pairs_get_no_eos(tmp_path):
    rows = step_rows(4)
    pairs = write_jsonl(tmp_path / "step.jsonl", rows)
    tr = make_yfpo(cfg_for(tmp_path, pairs), perturb=False)
    assert tr.step_dpo
    ds = _check_rows(tr, rows, step=True)
    tok = tr.processing_class
    ex = ds[0]
    by_prompt = {r["prompt"]: r for r in rows}
    # the shared prefix steps are part of the prompt (after the chat template's assistant header) ...
    prompt_text = tok.decode(ex["prompt_ids"])
    row = next(r for p, r in by_prompt.items() if p in prompt_text)
    assert prompt_text.rstrip().endswith(row["initial_reason_steps"].rstrip())
    assert "<|im_start|>assistant" in prompt_text
    # ... and the completions are exactly the next steps
    assert tok.decode(ex["chosen_ids"]).strip() == row["chosen"]
    assert tok.decode(ex["rejected_ids"]).strip() == row["rejected"]
    # collated: the last completion token of each row is the step's own last token, never EOS
    batch = next(iter(tr.get_train_dataloader()))
    last = (batch["completion_mask"].cumsum(1) == batch["completion_mask"].sum(1, keepdim=True)) & (
        batch["completion_mask"] == 1
    )
    assert (batch["input_ids"][last] != tok.eos_token_id).all()


def test_plain_pairs_keep_trl_eos(tmp_path):
    rows = pair_rows(4)
    pairs = write_jsonl(tmp_path / "plain.jsonl", rows)
    tr = make_yfpo(cfg_for(tmp_path, pairs), perturb=False)
    assert not tr.step_dpo
    _check_rows(tr, rows, step=False)


def test_step_switch_forced_off(tmp_path):
    """step_dpo=false on a step file: the prefix is not used and TRL's EOS stays."""
    rows = step_rows(4)
    pairs = write_jsonl(tmp_path / "step.jsonl", rows)
    tr = make_yfpo(cfg_for(tmp_path, pairs, step_dpo=False), perturb=False)
    assert not tr.step_dpo
    _check_rows(tr, rows, step=False)
