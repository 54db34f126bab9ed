"""RLPT: reinforcement learning on pre-training data by next-segment reasoning (Li et al. 2025, arXiv 2509.19249,
Sec. 2; no public code was found here, so this follows the paper's description).

A text is cut into segments s_1..s_n (sentences; lines for line-structured text such as GSM8K solutions). Two tasks:
  - ASR (autoregressive segment reasoning): given s_<i, predict s_i.
  - MSR (middle segment reasoning): given s_<i and s_{i+1}, predict the missing s_i.
The policy reasons, then writes its prediction; a generative judge decides whether the prediction is semantically
consistent with the real text. Because a prediction may stop early or run past the segment boundary, the judge sees
the true segment together with the segment after it and is asked whether the prediction matches a prefix of that
reference (the paper's "prefix reward"): r = 1 if the judge says yes, else 0. The rewards go through GRPO like the
accuracy reward (`rlpt_task: mix` alternates ASR and MSR examples, the paper's mixed objective with lambda = 1).

The judge is configurable: `rlpt_judge: policy` (default) asks the model being trained itself (adapters on, no grad,
greedy, through yfpo.engine); any other value is a model name/path loaded once with yfpo.models.load_model. The
prompts below are this module's wording of the paper's task descriptions, not the paper's templates.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from itertools import zip_longest

from yfpo.data.corpora import contrast_corpus, math_corpus

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
VERDICT_RE = re.compile(r"\b(yes|no)\b", re.I)
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass
class SegmentExample:
    task: str  # asr | msr
    context: list[str]  # the preceding segments
    target: str  # s_i, the segment to predict
    following: str  # s_{i+1} ("" when s_i is the last segment)
    source: str = ""

    @property
    def reference(self) -> str:
        """What the judge compares against: the true segment followed by the next one (prefix reward)."""
        return (self.target + " " + self.following).strip()


def segment(text: str) -> list[str]:
    """Split a text into segments: lines first, then sentences within a line (a sentence ends with . ! or ? followed
    by whitespace and an upper-case letter, digit, quote or bracket; abbreviations such as "Dr." also end one)."""
    out: list[str] = []
    for line in text.splitlines():
        out += [s.strip() for s in _SENT_END.split(line.strip()) if s.strip()]
    return out


def make_examples(texts: list[str], task: str, context: int, seed: int, sources: list[str] | None = None):
    """One example per text with enough segments (ASR: 2, MSR: 3): position i >= 1 drawn with Random(seed); `mix`
    alternates ASR and MSR over the texts. Texts too short for their task are skipped."""
    rng = random.Random(seed)
    out: list[SegmentExample] = []
    for k, text in enumerate(texts):
        segs = segment(text)
        t = task if task != "mix" else ("asr", "msr")[k % 2]
        last = len(segs) - (2 if t == "msr" else 1)  # the last index i that can be the target
        if last < 1:
            continue
        i = rng.randint(1, last)
        out.append(
            SegmentExample(
                t,
                segs[max(0, i - context) : i],
                segs[i],
                segs[i + 1] if i + 1 < len(segs) else "",
                (sources or [""] * len(texts))[k],
            )
        )
    return out


def policy_prompt(ex: SegmentExample) -> str:
    """The user turn the policy answers."""
    before = " ".join(ex.context)
    if ex.task == "asr":
        return (
            f"Here is the beginning of a text:\n\n{before}\n\nThink briefly about what the text says next, then "
            "write its next sentence inside <answer></answer>."
        )
    return (
        f"A sentence is missing from this text:\n\n{before} [MISSING] {ex.following}\n\nThink briefly about what "
        "the missing sentence says, then write it inside <answer></answer>."
    )


def extract_prediction(completion: str) -> str:
    """The text inside the last <answer>...</answer>; without the tags, the completion's first segment."""
    found = ANSWER_RE.findall(completion)
    if found:
        return found[-1].strip()
    segs = segment(completion)
    return segs[0] if segs else ""


def judge_prompt(prediction: str, reference: str) -> str:
    """The user turn the judge answers (the prefix reward: is the prediction consistent with the reference's start)."""
    return (
        "You compare a predicted text with a reference text.\n\n"
        f"Reference text: {reference}\n\nPredicted text: {prediction}\n\n"
        "Does the predicted text say the same thing as the beginning of the reference text (the wording may differ, "
        "the meaning may not)? Answer with Yes or No."
    )


def parse_verdict(text: str) -> float | None:
    """1.0 for a yes, 0.0 for a no (the first of the two words in the judge's output), None when neither appears."""
    m = VERDICT_RE.search(text)
    if m is None:
        return None
    return 1.0 if m.group(1).lower() == "yes" else 0.0


def rlpt_reward(verdicts: list[float | None], predictions: list[str]) -> list[float]:
    """r = 1 for a judged-consistent, non-empty prediction; 0 otherwise (an unparseable verdict counts as no)."""
    return [1.0 if (v == 1.0 and p.strip()) else 0.0 for v, p in zip(verdicts, predictions)]


def corpus_texts(corpus: str, n: int, seed: int, data_dir=None) -> tuple[list[str], list[str]]:
    """(texts, sources) from ../shared/data: gsm8k = GSM8K train question + gold solution (annotations removed),
    dolly = Dolly-15k Wikipedia context passages (non-math), mix = both interleaved."""
    pools: list[list[tuple[str, str]]] = []
    if corpus in ("gsm8k", "mix"):
        recs = math_corpus(n if corpus == "gsm8k" else (n + 1) // 2, seed=seed, data_dir=data_dir)
        pools.append([(r.prompt + "\n" + r.response, r.id) for r in recs])
    if corpus in ("dolly", "mix"):
        recs = contrast_corpus(n if corpus == "dolly" else n // 2, seed=seed, data_dir=data_dir, sources=("dolly",))
        pools.append([(r.response, r.id) for r in recs])
    if not pools:
        raise ValueError(f"rlpt_corpus {corpus!r}: expected gsm8k, dolly or mix")
    rows = [x for group in zip_longest(*pools) for x in group if x is not None]  # interleaved: any prefix mixes
    return [t for t, _ in rows], [s for _, s in rows]
