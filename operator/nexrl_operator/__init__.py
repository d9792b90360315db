"""NexRL operator: turns a NexRLJob into KubeRay, vLLM and trainer children."""

__version__ = "0.1.0"
