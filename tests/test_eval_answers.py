"""Answer extraction and grading (yfpo.grading) against a table of known outputs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from yfpo.grading import (
    EXTRACTORS,
    PRIMARY,
    extract_boxed,
    extract_flexible,
    extract_strict,
    grade,
    is_correct,
    last_boxed,
    normalize_number,
    numbers_equal,
)

# (model output, strict, flexible, boxed): the value each extractor must return (None = nothing found)
EXTRACT_TABLE = [
    # answer lines the prompt asks for
    ("The answer is 42.", "42", "42", None),
    ("The answer is 42", "42", "42", None),
    ("the answer is 42.", "42", "42", None),
    ("The final answer is 42", "42", "42", None),
    ("The answer is: 42", "42", "42", None),
    ("Answer: 42", "42", "42", None),
    ("The answer is **42**.", "42", "42", None),
    ("#### 72", "72", "72", None),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", "72", None),
    ("The answer is 4.\n#### 5", "5", "5", None),  # strict: the last answer marker wins
    ("The answer is 8. Wait, 5", "8", "5", None),  # strict reads the marker, flexible the last number
    # thousands separators, currency, units
    ("The answer is 1,234.", "1234", "1234", None),
    ("#### 1,234", "1234", "1234", None),
    ("The answer is 1,000,000", "1000000", "1000000", None),
    ("She pays $1,234.50 in total.", None, "1234.5", None),
    ("The answer is $18.", "18", "18", None),
    ("It costs 5 dollars.", None, "5", None),
    ("The answer is 12 cm.", "12", "12", None),
    ("the answer is 12.5%", "12.5", "12.5", None),
    ("50%", None, "50", None),
    # signs, decimals, trailing periods
    ("The answer is -7.", "-7", "-7", None),
    ("The answer is \u22127.", "-7", "-7", None),  # unicode minus
    ("The answer is +5", "5", "5", None),
    ("The answer is - 5", "-5", "-5", None),
    ("The answer is 3.50", "3.5", "3.5", None),
    ("The answer is 7.0.", "7", "7", None),
    ("The answer is .5", "0.5", "0.5", None),
    ("2.0", None, "2", None),
    ("So 5.5.", None, "5.5", None),
    # fractions
    ("The answer is 3/4.", "0.75", "0.75", None),
    ("value -3/4", None, "-0.75", None),
    ("The answer is \\frac{3}{4}.", "0.75", "0.75", None),
    ("The answer is $\\frac{3}{4}$", "0.75", "0.75", None),
    ("The answer is $-\\dfrac{1}{4}$", "-0.25", "-0.25", None),
    ("So \\boxed{\\frac{1}{2}}", None, "0.5", "0.5"),
    # several numbers: flexible takes the last; calculator annotations do not count twice
    ("First 3 then 5 then 8.", None, "8", None),
    ("x = 3, y = 4, so 7", None, "7", None),
    ("He had 2 apples. 3.", None, "3", None),
    ("48 / 2 = <<48/2=24>>24 clips", None, "24", None),
    ("The answer is 5 - 3 = 2", "5", "2", None),
    # \boxed{}
    ("The answer is $\\boxed{42}$", "42", "42", "42"),
    ("\\boxed{1,234}", None, "1234", "1234"),
    ("\\boxed{\\$18}", None, "18", "18"),
    ("\\boxed{18 \\text{ dollars}}", None, "18", "18"),
    ("\\boxed{90^\\circ}", None, "90", "90"),
    ("\\boxed 5", None, "5", "5"),
    ("\\fbox{7}", None, "7", "7"),
    ("first \\boxed{3} then \\boxed{4}", None, "4", "4"),
    ("\\boxed{\\frac{a}{b}}", None, None, "\\frac{a}{b}"),  # not a number: the boxed text itself
    ("\\boxed{x^{2}+\\{1\\}}", None, "1", "x^{2}+\\{1\\}"),  # nested braces
    ("\\boxed{}", None, None, None),
    ("\\boxed{12", None, "12", None),  # unbalanced: no boxed answer
    # nothing to extract
    ("", None, None, None),
    ("no number here", None, None, None),
    ("The answer is six.", None, None, None),
]


@pytest.mark.parametrize("text,strict,flexible,boxed", EXTRACT_TABLE, ids=[repr(r[0])[:40] for r in EXTRACT_TABLE])
def test_extractor_table(text, strict, flexible, boxed):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible
    assert extract_boxed(text) == boxed


def test_table_is_large():
    assert len(EXTRACT_TABLE) >= 40


@pytest.mark.parametrize("text,strict,flexible,boxed", EXTRACT_TABLE, ids=[repr(r[0])[:40] for r in EXTRACT_TABLE])
def test_grade_agrees_with_extraction(text, strict, flexible, boxed):
    """Graded against a gold answer equal to each extraction, that extractor is correct (numbers compared
    as numbers: '3.50' == '3.5' == '7/2'-style equivalences), and a wrong gold is never correct."""
    g = grade(text, "123456789")
    assert set(g["extracted"]) == set(EXTRACTORS) and set(g["correct"]) == set(EXTRACTORS)
    assert not any(g["correct"].values())
    for name, val in (("strict", strict), ("flexible", flexible), ("boxed", boxed)):
        assert g["extracted"][name] == val
        if val is not None and normalize_number(val) is not None:
            assert grade(text, val)["correct"][name] is True


# (output, gold, kind, expected correctness per extractor)
GRADE_TABLE = [
    ("The answer is 18.", "18", "number", dict(strict=True, flexible=True, boxed=False, math_verify=True)),
    ("The answer is 3.50", "3.5", "number", dict(strict=True, flexible=True, boxed=False, math_verify=True)),
    ("The answer is $1,234.", "1234", "number", dict(strict=True, flexible=True, boxed=False, math_verify=True)),
    ("The answer is 17.", "18", "number", dict(strict=False, flexible=False, boxed=False, math_verify=False)),
    ("The answer is 8. Wait, 5", "8", "number", dict(strict=True, flexible=False, boxed=False, math_verify=True)),
    ("So 3/4 of them.", "0.75", "number", dict(strict=False, flexible=True, boxed=False, math_verify=True)),
    (
        "The answer is $\\frac{3}{4}$.",
        "0.75",
        "number",
        dict(strict=True, flexible=True, boxed=False, math_verify=True),
    ),
    ("We get \\boxed{72}.", "72", "number", dict(strict=False, flexible=True, boxed=True, math_verify=True)),
    ("", "1", "number", dict(strict=False, flexible=False, boxed=False, math_verify=False)),
    ("no number here", "1", "number", dict(strict=False, flexible=False, boxed=False, math_verify=False)),
    # MATH-style answers: math-verify decides symbolic equivalence
    (
        "So \\boxed{\\frac{1}{2}}",
        "\\frac{1}{2}",
        "math",
        dict(strict=False, flexible=True, boxed=True, math_verify=True),
    ),
    ("\\boxed{0.5}", "\\frac{1}{2}", "math", dict(strict=False, flexible=True, boxed=True, math_verify=True)),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", "math", dict(strict=False, flexible=True, boxed=True, math_verify=True)),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", "math", dict(strict=False, flexible=False, boxed=False, math_verify=True)),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", "math", dict(strict=False, flexible=False, boxed=False, math_verify=True)),
    ("\\boxed{(1,2)}", "(1,2)", "math", dict(strict=False, flexible=False, boxed=True, math_verify=True)),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", "math", dict(strict=False, flexible=False, boxed=True, math_verify=True)),
    ("\\boxed{90^\\circ}", "90", "math", dict(strict=False, flexible=True, boxed=True, math_verify=True)),
    (
        "\\boxed{\\frac{1}{3}}",
        "\\frac{2}{3}",
        "math",
        dict(strict=False, flexible=False, boxed=False, math_verify=False),
    ),
]


@pytest.mark.parametrize("text,gold,kind,expected", GRADE_TABLE, ids=[f"{r[0][:30]!r}|{r[1]}" for r in GRADE_TABLE])
def test_grade_table(text, gold, kind, expected):
    g = grade(text, gold, kind)
    assert g["correct"] == expected
    assert is_correct(text, gold, kind) is expected[PRIMARY]


def test_math_verify_works_in_threads():
    """math-verify's default timeouts use SIGALRM (main thread only); answers.py turns them off, so grading
    in worker threads gives the same verdicts instead of silently failing."""
    cases = [(r[0], r[1], r[2]) for r in GRADE_TABLE]
    main = [grade(*c)["correct"]["math_verify"] for c in cases]
    with ThreadPoolExecutor(max_workers=2) as ex:
        threaded = list(ex.map(lambda c: grade(*c)["correct"]["math_verify"], cases))
    assert threaded == main
    assert sum(main) >= 12


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("$1,234.50", "1234.5"),
        ("-3/4", "-0.75"),
        ("\\frac{1}{2}", "0.5"),
        ("\\tfrac{3}{2}", "1.5"),
        ("\\frac34", "0.75"),
        ("18 dollars", "18"),
        ("5 hours.", "5"),
        ("7.", "7"),
        ("1/3", "0.3333333333"),
        ("3/0", None),
        ("abc", None),
        (None, None),
        ("12\\%", "12"),
        ("1{,}000", "1000"),
        ("\\text{ }42\\text{ cm}", "42"),
    ],
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_numbers_equal():
    assert numbers_equal("3.50", "3.5")
    assert numbers_equal("1,234", "1234")
    assert numbers_equal("0.75", "3/4")
    assert numbers_equal("\\frac{1}{3}", "0.3333333333")
    assert not numbers_equal("0.33", "\\frac{1}{3}")
    assert not numbers_equal(None, "1") and not numbers_equal("1", None)
    assert numbers_equal("x+1", " x+1") and not numbers_equal("", "")


def test_last_boxed_nested():
    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{\\{1, \\{2\\}\\}}") == "\\{1, \\{2\\}\\}"
    assert last_boxed("nothing") is None
