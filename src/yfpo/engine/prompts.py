"""Prompts: the user-turn text shared by evaluation and training pairs, and the chat-template wrapper.

Zero-shot chain of thought by default: the question plus one instruction line asking for step-by-step
reasoning and a final line "The answer is N." (what the strict extractor reads). n-shot prompts put the
first K GSM8K *train* problems before the question as earlier chat turns (gold solution + answer line).
"""

from __future__ import annotations

INSTRUCTION = "Solve the problem step by step. End with a final line of the form: The answer is <number>."
TEMPLATE_NAME = "chat-zero-shot-cot-v1"


def format_user_message(question: str) -> str:
    """The user turn for a math question (used identically by eval and by the pairs/training data)."""
    return f"{question.strip()}\n{INSTRUCTION}"


def format_gold_response(solution: str, answer: str) -> str:
    """A gold worked solution rewritten into the format the prompt asks for."""
    sol = solution.strip()
    return f"{sol}\nThe answer is {answer}."


def fewshot_messages(shots: int, data_dir: str | None = None) -> list[dict]:
    if shots <= 0:
        return []
    from yfpo.data.problems import load_benchmark

    msgs: list[dict] = []
    for p in load_benchmark("gsm8k_train", data_dir=data_dir, limit=shots):
        msgs.append({"role": "user", "content": format_user_message(p.question)})
        msgs.append({"role": "assistant", "content": format_gold_response(p.solution or "", p.answer)})
    return msgs


def build_prompt(tokenizer, question: str, shots: int = 0, data_dir: str | None = None,
                 _fewshot_cache: dict = {}) -> str:  # noqa: B006 (cache of exemplar turns)
    """Chat-templated prompt text (generation prompt added) for a question, zero- or n-shot."""
    key = (shots, data_dir)
    if key not in _fewshot_cache:
        _fewshot_cache[key] = fewshot_messages(shots, data_dir)
    msgs = [*_fewshot_cache[key], {"role": "user", "content": format_user_message(question)}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    # base models without a chat template: plain Q/A text
    parts = []
    for m in msgs:
        parts.append(("Question: " if m["role"] == "user" else "Answer: ") + m["content"])
    return "\n\n".join(parts) + "\n\nAnswer:"
