"""`launch_mode: ray`: the runtime's modules as Ray actors (see docs/distributed.md)."""

from nexrl_runtime.distributed.driver import connect, shutdown
from nexrl_runtime.distributed.ray_controller import RayController

__all__ = ["RayController", "connect", "shutdown"]
