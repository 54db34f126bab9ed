"""Prompts: the user-turn text shared by evaluation and training pairs, and the chat-template wrapper.

Zero-shot chain of thought by default: the question plus one instruction line asking for step-by-step
reasoning and a final line "The answer is N." (what the strict extractor reads). n-shot prompts put the
first K GSM8K *train* problems before the question as earlier chat turns (gold solution + answer line).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

INSTRUCTION = "Solve the problem step by step. End with a final line of the form: The answer is <number>."
TEMPLATE_NAME = "chat-zero-shot-cot-v1"


@dataclass(frozen=True)
class Protocol:
    """A named, versioned prompting protocol: the user-turn instruction (and an optional system turn).

    Its full text is saved in every eval result's protocol (`asdict`). Change the text -> bump the version."""

    name: str
    instruction: str
    system: str | None = None
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            TEMPLATE_NAME, INSTRUCTION, None, "chat zero-shot chain of thought; n-shot with --shots / --shots-file"
        ),
        Protocol(
            "boxed-v1",
            "Please reason step by step, and put your final answer within \\boxed{}.",
            "Please reason step by step, and put your final answer within \\boxed{}.",
            "Qwen2.5-Math style: system + user instruction, answer in \\boxed{}",
        ),
        Protocol(
            "self-doubt-v1",
            "First check whether the question is valid and answerable: does it give every quantity it needs, "
            "without contradictions? If it is not answerable, reply only: This question cannot be answered. "
            "Otherwise solve it concisely, without unnecessary steps, and end with a final line of the form: "
            "The answer is <number>.",
            None,
            "self-doubt prompting: judge validity/answerability first, then answer concisely",
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def format_user_message(question: str, instruction: str = INSTRUCTION) -> str:
    """The user turn for a math question (used identically by eval and by the pairs/training data)."""
    return f"{question.strip()}\n{instruction}"


def format_gold_response(solution: str, answer: str) -> str:
    """A gold worked solution rewritten into the format the prompt asks for."""
    sol = solution.strip()
    return f"{sol}\nThe answer is {answer}."


def fewshot_messages(
    shots: int, data_dir: str | None = None, shots_file: str | None = None, instruction: str = INSTRUCTION
) -> list[dict]:
    """The first `shots` problems of GSM8K train (or of `shots_file`, any JSONL with question/answer
    and optional solution) as earlier chat turns."""
    if shots <= 0:
        return []
    from yfpo.data.problems import load_benchmark

    probs = (
        load_benchmark("shots", path=shots_file, limit=shots)
        if shots_file
        else load_benchmark("gsm8k_train", data_dir=data_dir, limit=shots)
    )
    if len(probs) < shots:
        raise ValueError(f"{shots_file or 'gsm8k_train'}: {shots} shots asked, only {len(probs)} problems there")
    msgs: list[dict] = []
    for p in probs:
        msgs.append({"role": "user", "content": format_user_message(p.question, instruction)})
        msgs.append({"role": "assistant", "content": format_gold_response(p.solution or "", p.answer)})
    return msgs


def build_prompt(
    tokenizer,
    question: str,
    shots: int = 0,
    data_dir: str | None = None,
    _fewshot_cache: dict = {},
    *,
    protocol: str = TEMPLATE_NAME,  # noqa: B006 (cache of exemplar turns)
    shots_file: str | None = None,
) -> str:
    """Chat-templated prompt text (generation prompt added) for a question under a protocol, zero- or n-shot."""
    proto = get_protocol(protocol)
    key = (shots, data_dir, shots_file, proto.instruction)
    if key not in _fewshot_cache:
        _fewshot_cache[key] = fewshot_messages(shots, data_dir, shots_file, proto.instruction)
    system = [{"role": "system", "content": proto.system}] if proto.system else []
    msgs = [
        *system,
        *_fewshot_cache[key],
        {"role": "user", "content": format_user_message(question, proto.instruction)},
    ]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    # base models without a chat template: plain Q/A text
    parts = []
    for m in msgs:
        if m["role"] == "system":
            parts.append(m["content"])
            continue
        parts.append(("Question: " if m["role"] == "user" else "Answer: ") + m["content"])
    return "\n\n".join(parts) + "\n\nAnswer:"
