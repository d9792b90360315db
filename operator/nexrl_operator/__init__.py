"""NexRL operator: admits NexRLJobs against GPU quotas, turns them into KubeRay, vLLM and trainer pods."""

__version__ = "0.1.0"
