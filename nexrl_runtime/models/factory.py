"""Build the policy (model + tokenizer) from ModelConfig, with no hub access. A model folder or a
device that cannot be used is a ConfigError naming `model.path` / `model.device`."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from nexrl_runtime.config.errors import ConfigError
from nexrl_runtime.config.schema import ModelConfig

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


def char_tokenizer(vocab: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer built in-process: one token per character of `vocab`."""
    chars = list(dict.fromkeys(vocab))
    ids = {tok: i for i, tok in enumerate([PAD, BOS, EOS, *chars])}
    core = Tokenizer(models.WordLevel(vocab=ids, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS)
    tok.padding_side = "left"
    return tok


def tiny_model(cfg: ModelConfig, vocab_size: int, tok: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A small causal LM from config (random init; torch's global seed decides the weights)."""
    special = dict(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    if cfg.arch == "gpt2":
        conf = GPT2Config(
            vocab_size=vocab_size,
            n_positions=cfg.max_positions,
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers,
            n_head=cfg.num_heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            **special,
        )
        return GPT2LMHeadModel(conf)
    conf = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        **special,
    )
    return LlamaForCausalLM(conf)


def build_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerFast:
    """The policy's tokenizer alone (rollout workers that talk to a remote engine need no model)."""
    if cfg.kind == "tiny":
        return char_tokenizer(cfg.vocab)
    tok = _from_folder(AutoTokenizer, cfg, "a tokenizer")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_policy(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Return (model, tokenizer) for the config; the model is in train mode, float32 unless asked."""
    device = resolve_device(cfg.device)  # before loading: a device torch lacks fails at once
    tok = build_tokenizer(cfg)
    if cfg.kind == "tiny":
        model = tiny_model(cfg, len(tok), tok)
    else:
        model = _from_folder(AutoModelForCausalLM, cfg, "a causal LM")
    if cfg.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return model.to(device), tok


def _from_folder(auto: type, cfg: ModelConfig, what: str):
    """`auto.from_pretrained(model.path)` from the local folder only; a ConfigError naming model.path
    when there is no such folder or it holds no loadable `what`."""
    folder = Path(str(cfg.path)).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"model.path: {cfg.path} is not a folder (model.kind=hf loads a local HF model "
                          "folder: config.json, tokenizer files, weights)")
    try:
        return auto.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"model.path: {cfg.path} holds no loadable {what}: {err}") from err


def resolve_device(device: str, field: str = "model.device") -> torch.device:
    """'auto' is the first GPU when torch sees one, else the CPU; a GPU torch does not see is a
    ConfigError naming `field`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            raise ConfigError(f"{field}: {device!r}, but torch sees {count} GPU(s) "
                              f"(valid: 'auto', 'cpu'{', cuda:0..' + str(count - 1) if count else ''})")
    return resolved
