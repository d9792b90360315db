"""Policy models and tokenizers: a tiny LM built from config, or a local HF folder."""

from nexrl_runtime.models.factory import build_policy, build_tokenizer

__all__ = ["build_policy", "build_tokenizer"]
