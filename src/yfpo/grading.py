"""Answer extraction and grading (the ground floor: no yfpo import). Pure functions: strings in, strings/bools out.

Four extractors, reported side by side (SPEC section 7):
  strict       the number after the last `#### ` or `The answer is` (the format the prompt asks for)
  flexible     the last number anywhere in the output (lm-eval-harness "flexible-extract")
  boxed        the content of the last `\\boxed{...}`
  math_verify  math-verify's parse + verify of the whole output against the gold answer (LaTeX/expr aware)
PRIMARY is the extractor used to decide correctness when one flag is needed (the pairs builder).
`grade_item` adds the "no answer" rule of task specs with answer_kind none-allowed.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

EXTRACTORS = ("strict", "flexible", "boxed", "math_verify")
PRIMARY = "flexible"

# a number: optional sign, optional $, digits with thousands commas, decimals, or a simple fraction a/b
_NUM = r"[-−]?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?|[-−]?\.\d+"
_NUM_RE = re.compile(_NUM)
# a LaTeX fraction \frac{a}{b} / \dfrac / \tfrac, or the short form \frac34
_FRAC = r"[-−]?\s?\\[dt]?frac\s*(?:\{[^{}]+\}\s*\{[^{}]+\}|\d\d)"
_FRAC_RE = re.compile(r"\\[dt]?frac\s*(?:\{([^{}]+)\}\s*\{([^{}]+)\}|(\d)(\d))")
_STRICT_RE = re.compile(
    r"(?:####|the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*[:=]?\s*\**\s*(?:\\\(|\\\[|\$)?\s*(?:\\boxed\{)?\s*\+?\s*("
    + _FRAC
    + "|"
    + _NUM
    + r")",
    re.IGNORECASE,
)


def _frac_to_slash(text: str) -> str:
    """'\\frac{3}{4}' -> '3/4' (also \\dfrac, \\tfrac, \\frac34); other text unchanged."""
    return _FRAC_RE.sub(lambda m: f"{m.group(1) or m.group(3)}/{m.group(2) or m.group(4)}", text)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in text, braces balanced; None if absent."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = text.find("{", idx)
    if i < 0:
        # "\boxed 5" form
        m = re.match(r"\\boxed\s+([^\s$]+)", text[idx:])
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def normalize_number(s: str | None) -> str | None:
    """'$1,234.50' -> '1234.5'; '-3/4' -> '-0.75'; '\\frac{1}{2}' -> '0.5'; non-numbers -> None."""
    if s is None:
        return None
    t = s.strip()
    t = re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}", "", t)
    t = re.sub(r"\^\s*\{?\\circ\}?|°", "", t)  # degrees: 90^\circ, 90^{\circ}, 90°
    t = _frac_to_slash(t)
    t = t.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").replace("−", "-")
    t = t.replace("\\!", "").replace("{,}", "").replace("\\,", "")
    t = t.strip().rstrip(".").strip()
    m = re.fullmatch(r"([-+]?)\s*((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:\s*/\s*((?:\d+)(?:\.\d+)?))?", t)
    if not m:
        # leading number followed by a unit word: "18 dollars", "5 hours."
        m2 = re.match(r"([-+]?)\s*((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*[a-zA-Z]", t)
        if not m2:
            return None
        sign, num, den = m2.group(1), m2.group(2), None
    else:
        sign, num, den = m.group(1), m.group(2), m.group(3)
    num = num.replace(",", "")
    try:
        val = Fraction(num)
        if den is not None:
            d = Fraction(den)
            if d == 0:
                return None
            val = val / d
    except (ValueError, ZeroDivisionError):
        return None
    if sign == "-":
        val = -val
    if val.denominator == 1:
        return str(val.numerator)
    f = float(val)
    return repr(round(f, 10)).rstrip("0").rstrip(".") if "e" not in repr(f) else repr(f)


def _clean_num_match(s: str) -> str:
    return s.replace(" ", "")


def extract_strict(text: str) -> str | None:
    ms = list(_STRICT_RE.finditer(text))
    if not ms:
        return None
    return normalize_number(_clean_num_match(ms[-1].group(1)))


def extract_flexible(text: str) -> str | None:
    # drop GSM8K-style calculator annotations <<a*b=c>> so their inner numbers are not picked twice
    t = re.sub(r"<<[^<>]*>>", "", text)
    t = _frac_to_slash(t)  # \\frac{3}{4} is one number (0.75), not 3 then 4
    ms = _NUM_RE.findall(t)
    for cand in reversed(ms):
        n = normalize_number(_clean_num_match(cand))
        if n is not None:
            return n
    return None


def extract_boxed(text: str) -> str | None:
    b = last_boxed(text)
    if not b:  # absent, or an empty \\boxed{}
        return None
    n = normalize_number(b)
    return n if n is not None else b.strip()


def numbers_equal(a: str | None, b: str | None, rel: float = 1e-6) -> bool:
    if a is None or b is None:
        return False
    na, nb = normalize_number(a), normalize_number(b)
    if na is None or nb is None:
        return a.strip() == b.strip() and a.strip() != ""
    fa, fb = float(Fraction(na)) if "/" in na else float(na), float(Fraction(nb)) if "/" in nb else float(nb)
    return math.isclose(fa, fb, rel_tol=rel, abs_tol=1e-9)


def _math_verify(text: str, gold: str, kind: str) -> tuple[str | None, bool]:
    """math-verify equivalence. Signal-based timeouts are off so it works in threads."""
    try:
        import logging

        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

        logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call without a timeout
    except ImportError:  # pragma: no cover - math-verify is a dependency
        return None, False
    if not text.strip():
        return None, False
    try:
        cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
        gold_parsed = parse(f"${gold}$" if kind == "math" else gold, extraction_config=cfg, parsing_timeout=None)
        pred = parse(text, extraction_config=cfg, parsing_timeout=None)
        if not pred:
            return None, False
        ok = bool(verify(gold_parsed, pred, timeout_seconds=None))
        return str(pred[-1]) if len(pred) else None, ok
    except Exception:  # math-verify raises on exotic input; count as not verified
        return None, False


def grade(output: str, gold: str, kind: str = "number") -> dict:
    """All extractors on one output: {"extracted": {ext: str|None}, "correct": {ext: bool}}.

    kind="number" (GSM8K, SVAMP, MAWPS, ASDiv): numeric comparison; kind="math" (MATH): the boxed
    answer is compared as a string after light normalisation, and math-verify decides equivalence.
    """
    output = output or ""
    ext = {
        "strict": extract_strict(output),
        "flexible": extract_flexible(output),
        "boxed": extract_boxed(output),
    }
    mv_pred, mv_ok = _math_verify(output, gold, kind)
    ext["math_verify"] = mv_pred
    correct = {}
    for name in ("strict", "flexible", "boxed"):
        if kind == "math":
            val = ext[name]
            correct[name] = val is not None and (_norm_tex(val) == _norm_tex(gold) or numbers_equal(val, gold))
        else:
            correct[name] = numbers_equal(ext[name], gold)
    correct["math_verify"] = mv_ok
    return {"extracted": ext, "correct": correct}


def _norm_tex(s: str) -> str:
    s = s.strip().strip("$").replace("\\left", "").replace("\\right", "").replace("\\!", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac").replace(" ", "").rstrip(".")
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    return s


def is_correct(output: str, gold: str, kind: str = "number") -> bool:
    """The PRIMARY grader (one flag), used by the pairs builder."""
    return grade(output, gold, kind)["correct"][PRIMARY]


# an output that declines to answer (graded as correct on a "no answer" gold under answer_kind none-allowed)
_ABSTAIN = re.compile(
    r"cannot be (?:answered|determined|solved)|can't be (?:answered|determined)|not answerable|"
    r"unanswerable|not enough information|insufficient information|missing information|"
    r"the answer is:?\s*none\b",
    re.IGNORECASE,
)
NO_ANSWER = "<no answer>"


def commits_to_answer(output: str) -> bool:
    """The output gives a final answer in a form the prompt asks for: an answer line ("The answer is 2", "#### 2",
    "Answer: 2") or a \\boxed{} answer. A number merely mentioned (flexible) does not count."""
    return extract_strict(output or "") is not None or extract_boxed(output or "") is not None


def grade_item(output: str, gold: str, kind: str, no_answer_allowed: bool, gold_is_none: bool) -> dict:
    """grade() plus the "no answer" rule: under none-allowed, an output that says the question cannot be
    answered (and gives no final answer) extracts as NO_ANSWER for every extractor; it is correct exactly when the
    gold is no-answer. An output that both commits to a final answer and abstains ("The answer is 2. The question is
    not answerable.") is `conflicted`: graded as neither a right answer nor a right (or wrong) abstention, every
    extractor's flag False whatever the gold, and counted apart (summary's `conflicted`)."""
    if not no_answer_allowed:
        return grade(output, gold, kind)
    abstains = bool(_ABSTAIN.search(output or ""))
    if abstains and commits_to_answer(output):
        g = grade(output, "0" if gold_is_none else gold, "number" if gold_is_none else kind)
        return {"extracted": g["extracted"], "correct": {e: False for e in EXTRACTORS}, "conflicted": True}
    if gold_is_none:
        return {
            "extracted": {
                e: NO_ANSWER if abstains else v for e, v in grade(output, "0", "number")["extracted"].items()
            },
            "correct": {e: abstains for e in EXTRACTORS},
            "conflicted": False,
        }
    g = grade(output, gold, kind)
    if abstains:
        g = {"extracted": {e: NO_ANSWER for e in EXTRACTORS}, "correct": {e: False for e in EXTRACTORS}}
    return {**g, "conflicted": False}
