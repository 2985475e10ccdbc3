"""A small built-in corpus for training the tiny test tokenizer offline.

It mixes English, accented European text, CJK, emoji and code on purpose: the tokenizer then learns merges that
span multi-byte UTF-8 characters, so the router's incremental detokenization is exercised on real splits.
"""
from __future__ import annotations

CORPUS_LINES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the tokens before it.",
    "Continuous batching lets new requests join a running batch between decode steps.",
    "The key and value cache is split into blocks of sixteen tokens each.",
    "Kubernetes restarts the pod when the launcher exits with a non-zero status.",
    "What is the capital of France? The capital of France is Paris.",
    "Once upon a time, there was a little robot who wanted to learn how to paint.",
    "Il était une fois une petite fille qui aimait les étoiles et le café crème.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Grüße aus München!",
    "El niño comió una manzana en la mañana; ¿quién pagó la cuenta?",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "我们的服务器使用分页注意力和连续批处理来生成文本。",
    "東京は日本の首都です。今日はいい天気ですね。",
    "한국어 문장도 토크나이저가 처리할 수 있어야 합니다.",
    "Emoji test: 🚀🔥😀👍🏽 and the family 👨‍👩‍👧 and flags 🇫🇷🇯🇵.",
    "def generate(prompt: str, max_new_tokens: int = 20) -> str:",
    "    return model.generate(prompt, do_sample=False)",
    "for i in range(10):\n    print(i * i)",
    '{"inputs": "Hello", "parameters": {"max_new_tokens": 16, "temperature": 0.7}}',
    "SELECT name, count(*) FROM requests WHERE status = 'done' GROUP BY name;",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828 -42 1e-5",
    "Mathematics: ∑ ∫ √ ∞ ≈ ≠ ≤ ≥ π θ λ μ σ Ω",
)


def build_corpus(num_repeats: int = 8) -> list[str]:
    """The corpus lines repeated, so BPE sees each pair often enough to merge it."""
    return [line for _ in range(num_repeats) for line in CORPUS_LINES]
