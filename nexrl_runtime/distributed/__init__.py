"""`launch_mode: ray`: the runtime's modules as Ray actors (see docs/distributed.md)."""

from nexrl_runtime.distributed.controller import RayController
from nexrl_runtime.distributed.driver import connect, shutdown

__all__ = ["RayController", "connect", "shutdown"]
