"""Which controller runs a recipe: the local loop (`launch_mode: local`) or its Ray subclass
(`launch_mode: ray`). The choice lives here so that `nexrl_runtime.controller` never imports
`nexrl_runtime.distributed` (which subclasses it), and Ray is imported only for Ray runs."""

from __future__ import annotations

import sys
from typing import TextIO

from nexrl_runtime.config.schema import NexRLConfig
from nexrl_runtime.controller import Controller, RunSummary


def controller_class(config: NexRLConfig) -> type[Controller]:
    """The controller class of `config.launch_mode`."""
    if config.launch_mode == "ray":
        from nexrl_runtime.distributed import RayController  # Ray is imported only for Ray runs

        return RayController
    return Controller


def build_controller(config: NexRLConfig, echo: TextIO | None = sys.stdout) -> Controller:
    """The controller for `config`, with every module built (config errors surface here)."""
    return controller_class(config)(config, echo)


def run_recipe(config: NexRLConfig, echo: TextIO | None = sys.stdout) -> RunSummary:
    """Build the controller `config.launch_mode` asks for and run it."""
    return build_controller(config, echo).run()


__all__ = ["build_controller", "controller_class", "run_recipe"]
