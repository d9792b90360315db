"""Inference engines behind one interface: in-process torch engine now, HTTP/vLLM clients later."""

from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.inference.local import LocalEngine

__all__ = ["Completion", "InferenceEngine", "LocalEngine", "SamplingParams"]
