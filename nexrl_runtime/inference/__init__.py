"""Inference engines behind one interface: the in-process torch engine, or OpenAI-compatible servers
(vLLM) over HTTP; `build_engine` picks from `inference.engine`."""

from nexrl_runtime.inference.base import Completion, InferenceEngine, SamplingParams
from nexrl_runtime.inference.factory import build_engine
from nexrl_runtime.inference.local import LocalEngine
from nexrl_runtime.inference.openai_client import OpenAIEngine

__all__ = ["Completion", "InferenceEngine", "LocalEngine", "OpenAIEngine", "SamplingParams", "build_engine"]
