"""The operator imports without the runtime's heavy dependencies: its image has no torch or Hydra."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "hydra", "omegaconf", "ray", "vllm", "transformers", "tokenizers")

CHECK = f"""
import importlib, pkgutil, sys
for name in {HEAVY!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
import nexrl_operator
for module in pkgutil.walk_packages(nexrl_operator.__path__, "nexrl_operator."):
    importlib.import_module(module.name)
import nexrl_runtime.config.schema, nexrl_runtime.contract  # the schema the operator validates with
print(sorted(m for m in sys.modules if m.startswith("nexrl_runtime")))
"""


def test_every_operator_module_imports_without_torch_or_hydra() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "nexrl_runtime.config.loader" not in done.stdout
