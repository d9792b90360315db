"""FieldError: one invalid field of a NexRLJob, in API spelling and in the runtime's words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nexrl_runtime.config.errors import problem_text


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where (API spelling), what it holds, what is wrong in words."""

    field: str
    value: Any
    message: str
    """reads after the field: 'is required ...', or what follows `field: `"""

    def __str__(self) -> str:
        return problem_text(self.field, self.message)

