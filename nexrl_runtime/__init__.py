"""NexRL runtime: the RL loop that runs inside the pods and on a laptop."""

__version__ = "0.1.0"
