"""The online-RL methods as pure functions (yfpo.train.online): each against a direct computation on small tensors —
PACS (ritzz-ai/PACS compute_pacs_loss), OREAL (InternLM/OREAL train_oreal.py), MERCI's Coin Flipping Network
(Lobel et al. 2023: the bonus approaches 1/sqrt(n)), RLPT's segmenting, prompts and verdict parsing."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from yfpo.train.online import merci, oreal, pacs, rlpt
from yfpo.train.online.groups import grpo_advantage, mixed_groups, rloo_advantage

# two groups of 4, shuffled the way TRL shuffles a generation batch (groups are not contiguous)
GROUPS = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
LABELS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0])  # group 0: 2 of 4 right; group 1: 1 of 4


def batch(seed=0, B=8, T=5):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(B, T, generator=g) * 3
    old = logps + 0.1 * torch.randn(B, T, generator=g)
    ref = logps + 0.2 * torch.randn(B, T, generator=g)
    lens = torch.tensor([5, 3, 4, 1, 5, 2, 4, 3])[:B]
    mask = (torch.arange(T)[None] < lens[:, None]).float()
    return logps, old, ref, mask


# ---------------------------------------------------------------- groups


def test_rloo_and_grpo_advantages_per_group():
    v = torch.tensor([1.0, 5.0, 2.0, 6.0, 8.0, 4.0, 3.0, 0.0])
    a = rloo_advantage(v, GROUPS)
    z = grpo_advantage(v, GROUPS)
    for i in range(8):
        mates = [j for j in range(8) if GROUPS[j] == GROUPS[i] and j != i]
        assert a[i].item() == pytest.approx(v[i].item() - sum(v[j].item() for j in mates) / len(mates))
        grp = v[GROUPS == GROUPS[i]]
        assert z[i].item() == pytest.approx(((v[i] - grp.mean()) / (grp.std() + 1e-6)).item(), rel=1e-5)
    assert mixed_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1])).tolist() == [
        False,
        False,
        True,
        True,
    ]


# ---------------------------------------------------------------- PACS


def pacs_direct(logps, old, mask, labels, groups, beta):
    """PACS's own arithmetic, element by element: reward method "1", RLOO, sklearn-balanced weights, BCEWithLogits."""
    n = len(labels)
    r = [beta * sum((logps[i, t] - old[i, t]).item() for t in range(logps.shape[1]) if mask[i, t]) for i in range(n)]
    psi, w = [], []
    for i in range(n):
        mates = [j for j in range(n) if groups[j] == groups[i]]
        psi.append(r[i] - sum(r[j] for j in mates if j != i) / (len(mates) - 1))
        ys = [labels[j].item() for j in mates]
        if len(set(ys)) > 1:
            w.append(len(ys) / (2 * ys.count(labels[i].item())))
        else:
            w.append(1.0)
    bce = [
        -(
            w[i]
            * (
                labels[i].item() * math.log(1 / (1 + math.exp(-psi[i])))
                + (1 - labels[i].item()) * math.log(1 - 1 / (1 + math.exp(-psi[i])))
            )
        )
        for i in range(n)
    ]
    return sum(bce) / n, psi, w


def test_pacs_loss_equals_direct_computation():
    logps, old, _, mask = batch()
    loss, parts = pacs.pacs_loss(logps, old, mask, LABELS, GROUPS, beta=2.0)
    want, psi, w = pacs_direct(logps, old, mask, LABELS, GROUPS, 2.0)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(parts["psi"], torch.tensor(psi))
    torch.testing.assert_close(parts["weight"], torch.tensor(w))
    # group 1 holds one right answer of four: balanced weights 4/(2*1) = 2 and 4/(2*3)
    assert parts["weight"][4].item() == pytest.approx(2.0) and parts["weight"][1].item() == pytest.approx(2 / 3)


def test_pacs_gradient_is_the_weighted_policy_gradient():
    """Sec. 3 of the paper: dL/dlogp_it = -(1/N) sum_k w_k (y_k - sigmoid(psi_k)) dpsi_k/dr_i * beta * mask_it, with
    dpsi_k/dr_i = 1 (k = i), -1/(G-1) (k a group mate)."""
    logps, old, _, mask = batch(1)
    logps = logps.clone().requires_grad_(True)
    beta = 0.5
    loss, parts = pacs.pacs_loss(logps, old, mask, LABELS, GROUPS, beta=beta)
    loss.backward()
    err = parts["weight"] * (LABELS - torch.sigmoid(parts["psi"]))
    n = len(LABELS)
    for i in range(n):
        mates = [k for k in range(n) if GROUPS[k] == GROUPS[i] and k != i]
        d = -(err[i] - sum(err[k] for k in mates) / len(mates)) / n
        torch.testing.assert_close(logps.grad[i], beta * d * mask[i])


def test_pacs_at_the_first_update_scores_are_zero():
    """On-policy (old = current, TRL's detached log-probs), psi = 0, so the loss is mean w * log 2 and only the
    gradient carries the signal."""
    logps, _, _, mask = batch(2)
    loss, parts = pacs.pacs_loss(logps, logps.detach(), mask, LABELS, GROUPS, weight="none")
    assert parts["psi"].abs().max().item() == 0.0
    assert loss.item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------- OREAL


def oreal_direct(logps, old, ref, mask, r, groups, wp, wn, pf, nf, kl):
    """train_oreal.py lines 753-845, one sequence at a time (sums over its action tokens, global token counts)."""
    n = len(r)
    adv = []
    for i in range(n):
        mates = [j for j in range(n) if groups[j] == groups[i] and j != i]
        adv.append(r[i].item() - sum(r[j].item() for j in mates) / len(mates))
    n_pos = sum(mask[i].sum().item() for i in range(n) if r[i] > 0)
    n_neg = sum(mask[i].sum().item() for i in range(n) if r[i] <= 0)
    n_all = mask.sum().item()
    total = 0.0
    for i in range(n):
        T = int(mask[i].sum().item())
        lp, olp, rlp = logps[i, :T], old[i, :T], ref[i, :T]
        if r[i] > 0:
            total += (-lp * wp[i, :T]).sum().item() * adv[i] / n_pos * pf
        else:
            total += -(torch.exp(lp - olp) * adv[i] * wn[i, :T]).sum().item() / n_neg * nf
        d = rlp - lp
        total += (kl * (torch.exp(d) - d - 1)).sum().item() / n_all
    return total


def test_oreal_loss_equals_direct_computation():
    logps, old, ref, mask = batch(3)
    g = torch.Generator().manual_seed(9)
    wp, wn = torch.rand(8, 5, generator=g), torch.rand(8, 5, generator=g)
    loss, parts = oreal.oreal_loss(
        logps, old, mask, LABELS, GROUPS, ref_logps=ref, pos_weights=wp, neg_weights=wn, kl_coef=0.01
    )
    want = oreal_direct(logps, old, ref, mask, LABELS, GROUPS, wp, wn, 1.0, 0.5, 0.01)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert parts["adv"][0].item() == pytest.approx(1 - 1 / 3)  # a right answer among 1 right / 2 wrong mates


def test_oreal_filter_drops_uniform_groups():
    logps, old, _, mask = batch(4)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])  # group 0 all right, group 1 all wrong
    loss, _ = oreal.oreal_loss(logps, old, mask, labels, GROUPS, filter_groups=True)
    assert loss.item() == 0.0  # every group uniform: nothing left
    loss, _ = oreal.oreal_loss(logps, old, mask, LABELS, GROUPS, filter_groups=True)
    loss_all, _ = oreal.oreal_loss(logps, old, mask, LABELS, GROUPS)
    assert loss.item() == pytest.approx(loss_all.item())  # both groups mixed: filter changes nothing


def test_oreal_token_weights_threshold_rescale_of_cumulative_mean():
    s = torch.tensor([[2.0, -4.0, 1.0, 9.0], [0.5, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).float()
    wp, wn = oreal.token_weights(s, mask)
    cm = [[2.0, -1.0, -1 / 3, 2.0], [0.5, 0.5, 0.0, 0.0]]
    for i in range(2):
        for t in range(4):
            p = 1 / (1 + math.exp(-cm[i][t])) if mask[i, t] else 0.5
            if mask[i, t]:
                assert wp[i, t].item() == pytest.approx(max(0.0, (p - 0.5) / 0.5), abs=1e-6)
                assert wn[i, t].item() == pytest.approx(max(0.0, (0.5 - p) / 0.5), abs=1e-6)


def test_oreal_token_rm_loss_and_probe_learns_the_outcome():
    torch.manual_seed(0)
    h = torch.randn(8, 5, 6)
    h[:, :, 0] = LABELS[:, None] * 2 - 1  # one feature carries the outcome
    _, _, _, mask = batch()
    probe = oreal.TokenProbe(6, lr=0.1)
    want = F.binary_cross_entropy_with_logits(torch.zeros(8), LABELS)
    assert oreal.token_rm_loss(probe(h), mask, LABELS).item() == pytest.approx(want.item())
    first = probe.update(h, mask, LABELS)
    for _ in range(50):
        last = probe.update(h, mask, LABELS)
    assert last < first / 4


# ---------------------------------------------------------------- MERCI


def test_cfn_bonus_and_loss_formulas():
    f = torch.tensor([[0.5, -0.5, 0.5, -0.5], [1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(merci.cfn_bonus(f), torch.tensor([0.5, 0.5]))
    c = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 1.0]])
    assert merci.cfn_loss(f, c).item() == pytest.approx(((f - c) ** 2).mean().item())
    b = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert merci.trajectory_reward(b, m).tolist() == [3.0, 4.0]
    assert merci.trajectory_reward(b, m, "mean").tolist() == [1.5, 4.0]


def test_cfn_bonus_estimates_inverse_sqrt_count():
    """Lobel et al.: trained to convergence on states seen n times, bonus(s) ~ 1/sqrt(n). States visited 1, 4 and 16
    times (one-hot features, so the network can separate them)."""
    counts = [1, 4, 16]
    x = torch.cat([torch.eye(3)[k].repeat(n, 1) for k, n in enumerate(counts)])
    ests = []
    for seed in range(3):
        cfn = merci.CoinFlippingNetwork(3, coins=64, hidden=32, lr=1e-2, buffer=100, batch=21, updates=300, seed=seed)
        cfn.add(x)
        cfn.train_steps()
        ests.append(cfn.bonus(torch.eye(3)))
    est = torch.stack(ests).mean(0)
    for k, n in enumerate(counts):
        assert est[k].item() == pytest.approx(1 / math.sqrt(n), rel=0.15), (n, est.tolist())


def test_cfn_state_round_trip_continues_identically():
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    a = merci.CoinFlippingNetwork(5, coins=8, hidden=16, buffer=32, batch=8, updates=3, seed=7)
    a.add(x[:20])
    a.train_steps()
    saved = copy.deepcopy(a.state())
    a.add(x[20:])  # wraps the ring buffer (capacity 32)
    a.train_steps()
    b = merci.CoinFlippingNetwork(5, coins=8, hidden=16, buffer=32, batch=8, updates=3, seed=999)
    b.load(saved)
    b.add(x[20:])
    b.train_steps()
    torch.testing.assert_close(a.bonus(x), b.bonus(x), rtol=0, atol=0)
    assert torch.equal(a.feats, b.feats) and torch.equal(a.flips, b.flips) and a.ptr == b.ptr == 8


# ---------------------------------------------------------------- RLPT


def test_rlpt_segments_examples_and_prompts():
    text = "Natalia sold 48 clips. In May she sold half as many!\nShe sold 72 in total. Is that all? Yes.\n\nThe answer is 72."
    segs = rlpt.segment(text)
    assert segs == [
        "Natalia sold 48 clips.",
        "In May she sold half as many!",
        "She sold 72 in total.",
        "Is that all?",
        "Yes.",
        "The answer is 72.",
    ]
    exs = rlpt.make_examples([text, text, "One sentence only."], "mix", context=2, seed=0)
    assert [e.task for e in exs] == ["asr", "msr"]  # the one-segment text is skipped
    for e in exs:
        i = segs.index(e.target)
        assert i >= 1 and e.context == segs[max(0, i - 2) : i]
        assert e.following == (segs[i + 1] if i + 1 < len(segs) else "")
        assert e.reference == (e.target + " " + e.following).strip()
    assert exs == rlpt.make_examples([text, text, "One sentence only."], "mix", context=2, seed=0)  # seeded
    asr = rlpt.policy_prompt(rlpt.SegmentExample("asr", ["A b.", "C d."], "E f.", "G h."))
    assert "A b. C d." in asr and "E f." not in asr and "<answer></answer>" in asr
    msr = rlpt.policy_prompt(rlpt.SegmentExample("msr", ["A b."], "E f.", "G h."))
    assert "A b. [MISSING] G h." in msr and "E f." not in msr
    jp = rlpt.judge_prompt("pred", "ref one. ref two.")
    assert "Reference text: ref one. ref two." in jp and "Predicted text: pred" in jp and "Yes or No" in jp


def test_rlpt_prediction_and_verdict_parsing():
    assert rlpt.extract_prediction("I think... <answer> She sold 72. </answer>") == "She sold 72."
    assert rlpt.extract_prediction("<answer>a</answer> then <ANSWER>b</ANSWER>") == "b"
    assert rlpt.extract_prediction("She sold 72. Then more text.") == "She sold 72."
    assert rlpt.extract_prediction("") == ""
    assert rlpt.parse_verdict("Yes, they match.") == 1.0
    assert rlpt.parse_verdict(" no.") == 0.0
    assert rlpt.parse_verdict("The answer: NO, not yes") == 0.0  # the first of the two words
    assert rlpt.parse_verdict("Yesterday it was noon") is None  # whole words only
    assert rlpt.parse_verdict("") is None
    assert rlpt.rlpt_reward([1.0, 1.0, 0.0, None], ["x", " ", "x", "x"]) == [1.0, 0.0, 0.0, 0.0]


def test_rlpt_corpus_texts_mix_interleaves(tmp_path):
    texts, sources = rlpt.corpus_texts("mix", 4, seed=0)
    assert len(texts) == 4 and sources[0].startswith("gsm8k") and sources[1].startswith("dolly")
    assert "The answer is" in texts[0] and "<<" not in texts[0]
