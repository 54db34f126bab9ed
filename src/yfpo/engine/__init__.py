"""The shared generation and grading engine: every stage that generates (pairs, causal check, eval, online RL)
goes through here. `generate` (backends: the Hugging Face reference and faster paths behind the same interface),
`prompts` (chat prompt building), `answers` (answer extraction and grading)."""
